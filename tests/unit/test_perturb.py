import numpy as np
import pytest

from core.foundation.errors import UserError
from core.data.perturb import PERTURBATIONS, QWERTY_NEIGHBOURS, perturb, perturb_texts

TEXT = "the card was declined"  # four words of length >= 3


def rng(seed=0):
    return np.random.default_rng(seed)


def test_keyboard_neighbours_follow_the_qwerty_layout():
    assert set(QWERTY_NEIGHBOURS["s"]) == set("adwezx")
    assert set(QWERTY_NEIGHBOURS["q"]) == set("wa")
    assert set(QWERTY_NEIGHBOURS["m"]) == set("njk")


@pytest.mark.parametrize("kind", sorted(PERTURBATIONS))
def test_rate_zero_returns_texts_unchanged(kind):
    texts = [TEXT, "Hello  world", ""]
    assert perturb_texts(texts, kind, 0.0, rng()) == texts


@pytest.mark.parametrize("kind", sorted(PERTURBATIONS))
def test_same_seed_gives_same_output_and_inputs_are_not_mutated(kind):
    texts = [TEXT, "where is my order", "reset my password please"]
    before = list(texts)
    a = perturb_texts(texts, kind, 0.5, rng(7))
    assert a == perturb_texts(texts, kind, 0.5, rng(7))
    assert texts == before
    assert all(x != y for x, y in zip(a, texts))  # at least one edit per non-empty text


def test_drop_shortens_by_exactly_the_number_of_edits():
    assert len(perturb(TEXT, "drop", 1.0, rng())) == len(TEXT) - 4
    assert len(perturb(TEXT, "drop", 0.5, rng())) == len(TEXT) - 2  # 0.5 * 4 words
    assert len(perturb(TEXT, "drop", 0.01, rng())) == len(TEXT) - 1  # at least one edit


def test_rate_counts_only_words_of_length_three_for_character_edits():
    out = perturb("a card is declined", "drop", 1.0, rng())
    assert len(out) == len("a card is declined") - 2  # card, declined; not a, is
    assert out.startswith("a ") and " is " in out


def test_short_words_take_the_edit_when_no_long_word_exists():
    assert len(perturb("hi ok", "drop", 0.3, rng())) == len("hi ok") - 1


def test_swap_keeps_the_multiset_of_characters():
    out = perturb(TEXT, "swap", 1.0, rng())
    assert out != TEXT and sorted(out) == sorted(TEXT)
    assert [len(w) for w in out.split(" ")] == [3, 4, 3, 8]  # swaps stay inside words


def test_swap_never_picks_a_pair_of_equal_letters():
    assert perturb("aab", "swap", 1.0, rng()) == "aba"


def test_case_keeps_the_lowercased_text():
    out = perturb(TEXT, "case", 1.0, rng())
    assert out.lower() == TEXT and sum(a != b for a, b in zip(out, TEXT)) == 4


def test_typo_replaces_letters_by_keyboard_neighbours_keeping_case():
    text = "The Card"
    out = perturb(text, "typo", 1.0, rng(3))
    diffs = [(a, b) for a, b in zip(text, out) if a != b]
    assert len(out) == len(text) and len(diffs) == 2
    assert all(b.lower() in QWERTY_NEIGHBOURS[a.lower()] and a.isupper() == b.isupper() for a, b in diffs)


def test_whitespace_keeps_the_non_space_characters_in_order():
    for seed in range(5):
        out = perturb(TEXT, "whitespace", 1.0, rng(seed))
        assert out != TEXT and out.replace(" ", "") == TEXT.replace(" ", "")


def test_whitespace_on_a_single_word_splits_it():
    out = perturb("ab", "whitespace", 1.0, rng())
    assert out == "a b"


def test_mixed_uses_several_kinds():
    outs = {perturb("declined", "mixed", 1.0, rng(seed)) for seed in range(20)}
    assert any(len(o) == 7 for o in outs)  # a drop
    assert any(o.lower() == "declined" for o in outs)  # a case flip
    assert any(" " in o for o in outs)  # a split


def test_empty_text_stays_empty():
    assert perturb_texts(["", "   "], "typo", 1.0, rng()) == ["", "   "]


def test_unknown_kind_is_a_user_error_naming_the_valid_kinds():
    with pytest.raises(UserError, match="valid kinds: typo, drop, swap, case, whitespace, mixed"):
        perturb_texts([TEXT], "noise", 0.5, rng())


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_rate_outside_unit_interval_is_a_user_error(rate):
    with pytest.raises(UserError, match=r"rate must be in \[0, 1\]"):
        perturb(TEXT, "drop", rate, rng())
