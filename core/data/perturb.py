"""Seeded character/word-level noise for robustness evaluation of text classifiers.

`perturb_texts(texts, kind, rate, rng)` returns noisy copies of `texts`: a classifier's accuracy on
them, beside its accuracy on the clean texts, says how much typing noise costs it. Kinds
(`PERTURBATIONS`): `typo` (a letter becomes a QWERTY neighbour, case kept), `drop` (a character
is deleted), `swap` (two adjacent, different characters of a word trade places), `case` (a letter
flips case), `whitespace` (a space is inserted inside a word, the gap after a word is doubled or
removed) and `mixed` (each edited word gets one of the others at random).

`rate` is the fraction of words edited, one edit per word: words of length >= 3 for the character
edits (short words like "a", "is" carry little), any word for `whitespace`; rounded half up, and
at least one edit per non-empty text when rate > 0 (a shorter word is used if no long one can take
the edit). Each edit is a function `(word, gap, rng) -> (word, gap)`, `gap` being the whitespace
after the word, or None when it cannot change that word. Randomness comes only from the `rng`
passed in; inputs are never mutated. Leaves out: semantic attacks (synonyms, paraphrases,
adversarial search), Unicode homoglyphs, and scoring (core.evaluation.metrics's metrics do that).
"""

from __future__ import annotations

import re
import string

import numpy as np

from core.foundation.errors import UserError

_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _keyboard_neighbours() -> dict[str, str]:
    """Letter -> its QWERTY neighbours: left/right, and the two touching keys in the rows above/below.

    Each row sits about half a key right of the one above, so key (r, c) touches (r-1, c), (r-1, c+1)
    above and (r+1, c-1), (r+1, c) below: 's' -> 'adwezx'.
    """
    neighbours = {}
    for r, row in enumerate(_ROWS):
        for c, key in enumerate(row):
            spots = [(r, c - 1), (r, c + 1), (r - 1, c), (r - 1, c + 1), (r + 1, c - 1), (r + 1, c)]
            neighbours[key] = "".join(_ROWS[i][j] for i, j in spots if 0 <= i < 3 and 0 <= j < len(_ROWS[i]))
    return neighbours


QWERTY_NEIGHBOURS = _keyboard_neighbours()


def _letters(word: str) -> list[int]:
    return [i for i, ch in enumerate(word) if ch in string.ascii_letters]


def typo(word: str, gap: str, rng: np.random.Generator):
    spots = _letters(word)
    if not spots:
        return None
    i = int(rng.choice(spots))
    new = str(rng.choice(list(QWERTY_NEIGHBOURS[word[i].lower()])))
    return word[:i] + (new.upper() if word[i].isupper() else new) + word[i + 1:], gap


def drop(word: str, gap: str, rng: np.random.Generator):
    if len(word) < 2:  # never delete a whole word
        return None
    i = int(rng.integers(len(word)))
    return word[:i] + word[i + 1:], gap


def swap(word: str, gap: str, rng: np.random.Generator):
    spots = [i for i in range(len(word) - 1) if word[i] != word[i + 1]]  # swapping "ll" changes nothing
    if not spots:
        return None
    i = int(rng.choice(spots))
    return word[:i] + word[i + 1] + word[i] + word[i + 2:], gap


def flip_case(word: str, gap: str, rng: np.random.Generator):
    spots = _letters(word)
    if not spots:
        return None
    i = int(rng.choice(spots))
    return word[:i] + word[i].swapcase() + word[i + 1:], gap


def whitespace(word: str, gap: str, rng: np.random.Generator):
    edits = ["split"] if len(word) >= 2 else []
    edits += ["double", "remove"] if gap else []  # the last word has no gap after it
    if not edits:
        return None
    edit = edits[int(rng.integers(len(edits)))]
    if edit == "split":
        i = int(rng.integers(1, len(word)))
        return word[:i] + " " + word[i:], gap
    return (word, gap + gap) if edit == "double" else (word, "")


def mixed(word: str, gap: str, rng: np.random.Generator):
    for name in rng.permutation(sorted(_SINGLE)):  # a random kind; the next one if it cannot apply
        out = _SINGLE[str(name)](word, gap, rng)
        if out is not None:
            return out
    return None


_SINGLE = {"typo": typo, "drop": drop, "swap": swap, "case": flip_case, "whitespace": whitespace}
PERTURBATIONS = {**_SINGLE, "mixed": mixed}


def _check(kind: str, rate: float) -> None:
    if kind not in PERTURBATIONS:
        raise UserError(f"unknown perturbation '{kind}'; valid kinds: {', '.join(PERTURBATIONS)}")
    if not 0.0 <= rate <= 1.0:
        raise UserError(f"perturbation rate must be in [0, 1] (the fraction of words edited); got {rate}")


def perturb(text: str, kind: str, rate: float, rng: np.random.Generator) -> str:
    """`text` with a `rate` fraction of its words edited by `kind` (see the module docstring)."""
    _check(kind, rate)
    if rate == 0 or not text.strip():
        return text
    parts = re.split(r"(\s+)", text)  # words at even positions, the whitespace after each at odd ones
    words, gaps = parts[0::2], parts[1::2] + [""]
    min_len = 1 if kind == "whitespace" else 3
    long = [i for i, w in enumerate(words) if len(w) >= min_len]
    short = [i for i, w in enumerate(words) if 0 < len(w) < min_len]
    wanted = max(1, int(rate * len(long) + 0.5))
    done = 0
    for i in [*rng.permutation(long), *rng.permutation(short)]:
        if done == wanted:
            break
        out = PERTURBATIONS[kind](words[i], gaps[i], rng)
        if out is not None:
            words[i], gaps[i] = out
            done += 1
    return "".join(w + g for w, g in zip(words, gaps))


def perturb_texts(texts: list[str], kind: str, rate: float, rng: np.random.Generator) -> list[str]:
    """A new list: each text perturbed by `perturb`, drawing from one `rng` in order."""
    _check(kind, rate)
    return [perturb(text, kind, rate, rng) for text in texts]
