"""Question: does sentiment per company (solutions.finance.targeted) beat giving every company the document's
label, and does reading a long article whole beat reading its first 64 tokens?

Data (constructed at run time from Financial PhraseBank's *test* split only, 50%-agree, our catalog split;
seeded; nothing is written to the data root). Every sentence is attributed to an invented company
("Varnel Oyj: <sentence>"); the company's gold label is the sentence's.
- Multi-company texts: 2-4 test sentences, each with its own invented company, joined into one text.
  "Mixed" texts are those whose companies carry different gold labels.
- Long articles: 10-40 test sentences; one invented company is named in 3-8 of them (the others stay as
  they are); its gold label is the most common gold label of the sentences naming it (ties: the more
  negative), the label an analyst reading those sentences would give.
Systems: the baseline is today's monitor: the whole text scored once (the run's `max_length`, 64 tokens for
the finance recipes: the rest is cut) and that label given to every company; targeted: each sentence scored
and aggregated per company (the confidence-weighted mean; solutions.finance.targeted).
Metrics: accuracy and macro-F1 over all (text, company) pairs and over the pairs of mixed texts; for long
articles, agreement with the gold label. Target (issue 25): on the mixed texts, >= 20 points above the
baseline.

    python -m benchmarks.finance_entities --run runs/finance-sentiment --data-dir ../shared/datasets
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

import verticals.registry  # noqa: F401 - installs the finance readers the catalog needs
from benchmarks.record import write_record
from core.data.catalog import load_classification
from core.models.predictor import load_run, model_dir
from solutions.finance.sentiment import SENTIMENT_LABELS, score_texts
from solutions.finance.targeted import predict_entities

SEEDS = (0, 1, 2)
SYLLABLES = ("var", "nel", "kes", "tro", "lum", "ora", "den", "vik", "sol", "mar", "tan", "quo", "bri", "zel")
SUFFIXES = ("Oyj", "AG", "plc", "Corp", "Group", "ASA")
SEVERITY = {"negative": 0, "neutral": 1, "positive": 2}


def company_names(n: int, rng: np.random.Generator) -> list[str]:
    """`n` distinct invented company names (two syllables + a legal suffix)."""
    names: set[str] = set()
    while len(names) < n:
        a, b = rng.choice(SYLLABLES, 2, replace=False)
        names.add(f"{(a + b).capitalize()} {rng.choice(SUFFIXES)}")
    return sorted(names)


def multi_company_texts(sentences, labels, rng, n_texts: int = 400) -> list[dict]:
    names = company_names(60, rng)
    out = []
    for _ in range(n_texts):
        k = int(rng.integers(2, 5))
        rows, companies = rng.choice(len(sentences), k, replace=False), rng.choice(names, k, replace=False)
        parts = [f"{c}: {sentences[r]}" for c, r in zip(companies, rows)]
        out.append({"text": " ".join(parts), "gold": {str(c): labels[r] for c, r in zip(companies, rows)}})
    return out


def long_articles(sentences, labels, rng, n_texts: int = 100) -> list[dict]:
    names = company_names(60, rng)
    out = []
    for _ in range(n_texts):
        rows = rng.choice(len(sentences), int(rng.integers(10, 41)), replace=False)
        company = str(rng.choice(names))
        named = set(rng.choice(len(rows), int(rng.integers(3, 9)), replace=False).tolist())
        parts = [f"{company}: {sentences[r]}" if i in named else sentences[r] for i, r in enumerate(rows)]
        votes = Counter(labels[rows[i]] for i in named)
        gold = max(votes, key=lambda label: (votes[label], -SEVERITY[label]))
        out.append({"text": " ".join(parts), "gold": {company: gold}})
    return out


def evaluate(model, texts: list[dict]) -> dict:
    """Both systems' (text, company) predictions against gold, over all texts and over mixed ones."""
    base_labels = score_texts(model, [t["text"] for t in texts]).label
    targeted = predict_entities(model, [t["text"] for t in texts], [c for t in texts for c in t["gold"]])
    pairs = {"all": ([], [], []), "mixed": ([], [], [])}
    for t, base, doc in zip(texts, base_labels, targeted):
        mixed = len(set(t["gold"].values())) > 1
        for company, gold in t["gold"].items():
            ours = doc.entities[company].label if company in doc.entities else doc.document.label
            for key in ("all", "mixed") if mixed else ("all",):
                pairs[key][0].append(gold)
                pairs[key][1].append(base)
                pairs[key][2].append(ours)
    out = {}
    for key, (gold, base, ours) in pairs.items():
        if not gold:
            continue
        out[key] = {"pairs": len(gold),
                    "baseline": {"accuracy": accuracy_score(gold, base),
                                 "macro_f1": f1_score(gold, base, labels=list(SENTIMENT_LABELS), average="macro")},
                    "targeted": {"accuracy": accuracy_score(gold, ours),
                                 "macro_f1": f1_score(gold, ours, labels=list(SENTIMENT_LABELS), average="macro")}}
    return out


def _stat(values: list[float]) -> str:
    return f"{100 * np.mean(values):.1f}% ± {100 * np.std(values):.1f}"


def table(runs: list[dict], load: tuple) -> str:
    lines = [f"Constructed from the Financial PhraseBank test split (seeds {', '.join(map(str, SEEDS))}: mean ± std); "
             f"load average {load[0]:.2f} at the end.", "",
             "| set | pairs | baseline accuracy (document label, 64 tokens) | targeted accuracy | "
             "baseline macro-F1 | targeted macro-F1 |", "|---|---|---|---|---|---|"]
    for name, key in (("multi-company, all", ("multi", "all")), ("multi-company, mixed labels", ("multi", "mixed")),
                      ("long articles (10-40 sentences)", ("long", "all"))):
        rows = [r[key[0]][key[1]] for r in runs if key[1] in r[key[0]]]
        lines.append(f"| {name} | {rows[0]['pairs']} | {_stat([r['baseline']['accuracy'] for r in rows])} | "
                     f"{_stat([r['targeted']['accuracy'] for r in rows])} | "
                     f"{_stat([r['baseline']['macro_f1'] for r in rows])} | "
                     f"{_stat([r['targeted']['macro_f1'] for r in rows])} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a finance sentiment run directory")
    parser.add_argument("--data-dir")
    args = parser.parse_args(argv)
    data = load_classification("financial_phrasebank", root=args.data_dir)
    model = load_run(model_dir(Path(args.run)), "torch")
    runs, started = [], time.time()
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        runs.append({"seed": seed, "multi": evaluate(model, multi_company_texts(data.test.texts, data.test.labels, rng)),
                     "long": evaluate(model, long_articles(data.test.texts, data.test.labels, rng))})
        print(runs[-1], flush=True)
    load = os.getloadavg()
    md = table(runs, load)
    write_record("finance_entities", {"question": __doc__.split("\n\n")[0], "protocol": __doc__,
                                      "run": Path(args.run).name, "seeds": list(SEEDS), "runs": runs,
                                      "wall_seconds": round(time.time() - started, 1), "load_average_end": load}, md)
    print(md)


if __name__ == "__main__":
    main()
