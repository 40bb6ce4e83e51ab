"""core.foundation.text: the checks every entry point applies to user text, and the CLI's readers of it."""

import io

import pytest

from verticals.commands import texts_from_args, texts_from_jsonl
from core.foundation.errors import UserError
from core.foundation.text import check_text, encodable, has_visible_text, text_problem


@pytest.mark.parametrize("text,visible", [
    ("hello", True), ("\u200b\u200b", False), ("\ufeff", False), ("\u00ad", False), (" \t\n", False),
    ("\u200bx", True), ("\u3164", False), ("\u2060\u200d", False), ("ü", True), ("日本", True), ("\ud800", False),
])
def test_has_visible_text(text, visible):
    assert has_visible_text(text) is visible


def test_encodable_rejects_lone_surrogates_only():
    assert encodable("plain") and encodable("naïve 日本 🙂") and not encodable("a\ud800b") and not encodable("\udcff")


@pytest.mark.parametrize("text,problem", [
    ("card declined", None), ("", "empty"), ("  ", "empty"), ("\u200b\ufeff", "no visible"), ("x\ud800", "surrogate"),
])
def test_text_problem_names_it(text, problem):
    found = text_problem(text)
    assert (found is None) if problem is None else (problem in found)


def test_check_text_says_where():
    with pytest.raises(UserError, match="text argument 2: holds a lone UTF-16 surrogate"):
        texts_from_args(["fine", "bad \udcff"])  # argv bytes that were not UTF-8 arrive like this
    assert check_text("ok", "x") == "ok"


def test_stdin_that_is_not_utf8_is_a_user_error():
    stdin = io.TextIOWrapper(io.BytesIO(b'{"text": "ok"}\n{"text": "\xff"}\n'), encoding="utf-8")
    with pytest.raises(UserError, match="stdin is not valid UTF-8"):
        texts_from_jsonl(stdin, "stdin")


@pytest.mark.parametrize("line,message", [
    ('{"text": "\\u200b"}', "no visible"), ('{"text": "\\ud800"}', "surrogate"),
    ('[' * 100_000, "not JSON"), ('{"text": ' + "1" * 5000 + '}', "not usable JSON"),
])
def test_hostile_jsonl_lines_are_user_errors(line, message):
    with pytest.raises(UserError, match=message):
        texts_from_jsonl([line], "stdin")
