"""Finance data readers: the Financial PhraseBank card format (`format.type: phrasebank`).

PhraseBank ships four nested files by annotator agreement, one `sentence@label` per line and no
official split. Our split, applied to the chosen agreement file (the spec's config, e.g.
`financial_phrasebank:allagree`; the card's `default_config` when none is given): exact
duplicate lines removed, sentences that carry two different labels dropped, then the card's
stratified train/validation/test `split:` (80/10/10, seed 0). Test sentences that also appear
in the all-agree file form the extra evaluation set `test_allagree`.

READERS maps the card format type to its reader; `import verticals` adds it to core.data.catalog.READERS
so that `load_classification("financial_phrasebank")` finds it.
Leaves out: catalog cards, checksums, CSV/JSONL files and stratified splitting (core.data.catalog).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from core.data.catalog import Reader, read_text, verified_file
from core.data.splits import ClassificationData, Split, classification_data, stratified_split
from core.foundation.errors import UserError

ALL_AGREE = "allagree"  # the config whose sentences define `test_allagree`


def parse_phrasebank(text: str) -> tuple[list[tuple[str, str]], dict]:
    """`sentence@label` lines -> unique (sentence, label) pairs, dropping exact duplicates and
    sentences that carry two different labels. The label follows the last `@`. Returns the pairs
    (in file order) and counts of what was dropped."""
    pairs, seen = [], set()
    duplicates = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        sentence, _, label = line.rpartition("@")
        pair = (sentence.strip(), label.strip())
        if pair in seen:
            duplicates += 1
            continue
        seen.add(pair)
        pairs.append(pair)
    per_sentence = Counter(s for s, _ in pairs)
    conflicting = {s for s, c in per_sentence.items() if c > 1}
    kept = [p for p in pairs if p[0] not in conflicting]
    return kept, {"duplicates_removed": duplicates, "conflicting_sentences_dropped": len(conflicting)}


def _config_pairs(card: dict, config: str, root: Path) -> list[tuple[str, str]]:
    path = verified_file(card, card["configs"][config], root)
    pairs, _ = parse_phrasebank(read_text(path, card["format"]["encoding"]))
    return pairs


def load_phrasebank(card: dict, config: str, root: Path) -> ClassificationData:
    """Format `phrasebank`: the agreement file `config` (card `configs:`), deduplicated and split
    by the card's `split:` rule; `test_allagree` = test sentences also in the all-agree file."""
    config = config or card["default_config"]
    if config not in card["configs"]:
        raise UserError(f"{card['name']} has no config '{config}'; choose one of "
                        f"{', '.join(card['configs'])} (e.g. data={card['name']}:{ALL_AGREE})")
    pairs = _config_pairs(card, config, root)
    every = Split([s for s, _ in pairs], [lab for _, lab in pairs])
    rule = card["split"]
    rng = np.random.default_rng(rule["seed"])
    rest, test = stratified_split(every, rule["test"], rng)
    train, validation = stratified_split(rest, rule["validation"] / (1 - rule["test"]), rng)
    all_agree = {s for s, _ in _config_pairs(card, ALL_AGREE, root)}
    keep = [i for i, s in enumerate(test.texts) if s in all_agree]
    extra = {"test_allagree": Split([test.texts[i] for i in keep], [test.labels[i] for i in keep])}
    return classification_data(f"{card['name']}:{config}", train, validation, test, extra, card)


READERS: dict[str, Reader] = {"phrasebank": load_phrasebank}
