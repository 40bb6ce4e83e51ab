"""The one rule for label names: what an intent, class or queue label may be, wherever it comes in.

Label names are identifiers (they key routing tables, metrics, prediction logs and exported
config.json files), so the same rule holds for training data (a `label` cell, each name of a
multi-label `labels` list), feedback (`/v1/feedback` "intent" / "intents") and anything else
that names a label: `label_name_problem(name)` says what is wrong (or None) and
`check_label_name(name, where)` raises a UserError naming `where`. Refused: non-strings, empty or
whitespace-only names, names with leading/trailing whitespace, names over MAX_LABEL_NAME_CHARS,
NUL and every other control character (C0, DEL, C1: line breaks and tabs included), bidi
embedding/override/isolate controls and marks (U+202A-202E, U+2066-2069, U+200E/F, U+061C), line
and paragraph separators (U+2028/2029), lone UTF-16 surrogates, and names with no visible character.
Leaves out: whether a name is one a model knows (core.data.splits.LabelMap) and multi-label lists
(core.data.multilabel).
"""

from __future__ import annotations

import unicodedata

from core.foundation.errors import UserError
from core.foundation.text import encodable, has_visible_text

MAX_LABEL_NAME_CHARS = 256  # the prediction log's limit too (core.mlops.feedback.MAX_LABEL_CHARS is this)
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
SEPARATORS = frozenset("\u2028\u2029")


def label_name_problem(name) -> str | None:
    """What makes `name` unusable as a label name, or None (see the module docstring)."""
    if not isinstance(name, str):
        return f"must be a string, got {type(name).__name__}"
    if not name.strip():
        return "is empty or whitespace-only; give a label name"
    if len(name) > MAX_LABEL_NAME_CHARS:
        return f"has {len(name)} characters; at most {MAX_LABEL_NAME_CHARS}"
    if not encodable(name):
        return "holds a lone UTF-16 surrogate (not valid Unicode)"
    for ch in name:
        if ch == "\x00":
            return "holds a NUL character"
        if ch in BIDI_CONTROLS:
            return f"holds the bidi control U+{ord(ch):04X} (it reorders how text displays)"
        if ch in SEPARATORS:
            return f"holds the line/paragraph separator U+{ord(ch):04X}"
        if unicodedata.category(ch) == "Cc":
            return f"holds the control character U+{ord(ch):04X} (line breaks and tabs included)"
    if name != name.strip():
        return "has leading or trailing whitespace"
    if not has_visible_text(name):
        return "has no visible characters"
    return None


def check_label_name(name, where: str = "label") -> str:
    """`name` if it is a usable label name, else a UserError that says `where` and what is wrong."""
    problem = label_name_problem(name)
    if problem:
        raise UserError(f"{where}: label name {repr(name)[:80]} {problem}")
    return name
