"""Checks on user text that every entry point shares (HTTP services, CLI, the monitor's stream).

`encodable`: no lone UTF-16 surrogates (JSON "\\ud800", or argv/stdin bytes that were not
UTF-8), which no tokenizer or UTF-8 writer accepts. `has_visible_text`: at least one character
that would show; text of zero-width spaces, BOMs, soft hyphens or controls is empty to a model.
`check_text` raises a UserError that names the text and what is wrong; `texts_from_args` and
`texts_from_jsonl` read the texts a command line is given (arguments, or JSONL on stdin).
"""

from __future__ import annotations

import json
import unicodedata

from core.foundation.errors import UserError

_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u180e")  # letters/symbols that render as nothing
_INVISIBLE = ("Cc", "Cf", "Cs", "Zs", "Zl", "Zp")


def has_visible_text(text: str) -> bool:
    """True if some character would show: not whitespace, control, format (zero-width space,
    BOM, soft hyphen, bidi marks), separator, surrogate, or a known blank letter."""
    for ch in text:
        if ch.isspace() or ch in _BLANK_LETTERS:
            continue
        if unicodedata.category(ch) in _INVISIBLE:
            continue
        return True
    return False


def encodable(text: str) -> bool:
    """False for strings holding lone UTF-16 surrogates, which UTF-8 cannot carry."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text_problem(text: str) -> str | None:
    """What makes `text` unusable as model input, or None."""
    if not encodable(text):
        return "holds a lone UTF-16 surrogate (not valid Unicode); send valid UTF-8 text"
    if not text.strip():
        return "empty or whitespace-only text"
    if not has_visible_text(text):
        return "no visible characters (only zero-width, format or control characters)"
    return None


def check_text(text: str, where: str) -> str:
    problem = text_problem(text)
    if problem:
        raise UserError(f"{where}: {problem}")
    return text


def texts_from_jsonl(lines, source: str) -> list[str]:
    """Texts from JSONL lines ({"text": ...} objects or bare JSON strings); blank lines skipped."""
    texts = []
    n = 0
    try:
        for n, line in enumerate(lines, 1):
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                raise UserError(f"{source} line {n} is not JSON; send one {{\"text\": ...}} object per line") from None
            except ValueError as exc:  # e.g. an integer past Python's int-string conversion limit
                raise UserError(f"{source} line {n} is not usable JSON: {str(exc)[:200]}") from None
            text = obj.get("text") if isinstance(obj, dict) else obj
            if not isinstance(text, str) or not text.strip():
                raise UserError(f"{source} line {n}: needs a non-empty string field 'text'")
            texts.append(check_text(text, f"{source} line {n}"))
    except UnicodeDecodeError:
        raise UserError(f"{source} is not valid UTF-8 (after {n} readable lines); send UTF-8 JSONL") from None
    return texts


def texts_from_args(texts: list[str]) -> list[str]:
    """Texts given as arguments, each checked (argv bytes that are not UTF-8 arrive as surrogates)."""
    return [check_text(t, f"text argument {i + 1}") for i, t in enumerate(texts)]
