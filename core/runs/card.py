"""Model cards: a run's report.json -> README.md with the YAML front matter a model hub reads.

Every run directory gets one (core.runs.rundir.write_report), and so does every `verticals export hf`
directory (with that export's loading instructions). Two report shapes are rendered:
- classification runs (core.classify.recipes): labels, metrics per split, calibration, out-of-scope;
  front matter `library_name: transformers`, `pipeline_tag: text-classification`, a model-index
  with the test metrics;
- recsys item-encoder runs (solutions.recsys.recipe): no labels, ranking metrics when the report
  has any; `library_name: sentence-transformers`, `pipeline_tag: sentence-similarity`.
Hand-written instead of huggingface_hub's ModelCard templates: those are Jinja templates for
generic Trainer runs; ours come from our own report keys (data card, cost ledger, confidence), and
`model_card` must stay a pure function of the report so a card renders offline, in tests, for
either shape. `license` in the front matter is the training data's, as its data card states it
(the backbone's own license applies to the weights too; the card says so).
Leaves out: hub upload (core.export.hub), dataset cards, evaluation results other than the report's.
"""

from __future__ import annotations

import re

import yaml

from core.data.catalog import list_cards, load_card
from core.models.backbones import TINY, is_local_backbone
from core.runs.markdown import markdown_table

# our backbone aliases -> the hub ids they are copies of (core.models.backbones ships them as packages)
BASE_MODELS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2", "mpnet": "sentence-transformers/all-mpnet-base-v2"}
# license identifiers a hub's `license` field accepts, matched against the start of a data card's text
HUB_LICENSES = ("cc0-1.0", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0", "cc-by-3.0", "mit",
                "apache-2.0", "odc-by", "odbl", "pddl", "openrail", "gpl-3.0", "bsd-3-clause")
RECSYS_TASK = "recsys-item-encoder"


def is_classification(report: dict) -> bool:
    return bool(report.get("labels")) and report.get("config", {}).get("task") != RECSYS_TASK


def base_model(backbone: str | None) -> str | None:
    """The hub id a run's backbone is, or None (tiny, a local directory, nothing recorded)."""
    if not backbone or backbone == TINY:
        return None
    if backbone in BASE_MODELS:
        return BASE_MODELS[backbone]
    looks_like_hub_id = re.fullmatch(r"[\w.-]+/[\w.-]+", backbone) is not None
    return backbone if looks_like_hub_id and not is_local_backbone(backbone) else None


def hub_license(text: str | None) -> dict:
    """Front-matter license fields from a data card's license text: a hub identifier when the text
    starts with one (`CC0-1.0 (written by ...)` -> cc0-1.0), else `other` with the text as its name."""
    if not text:
        return {}
    head = text.strip().split()[0].lower().rstrip(",;:")
    if head in HUB_LICENSES:
        return {"license": head}
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "unknown"
    return {"license": "other", "license_name": slug}


def data_card(report: dict) -> dict:
    """The report's data card (name, license, citation, url); for a report without one (recsys runs)
    the catalog's card of the dataset it names, if it is one of ours."""
    if report.get("data_card"):
        return report["data_card"]

    name = (report.get("data") or {}).get("name")
    if name not in list_cards():
        return {}
    card = load_card(name)
    return {k: card.get(k) for k in ("name", "license", "citation", "url")}


def front_matter(report: dict) -> dict:
    cfg, card = report.get("config", {}), data_card(report)
    backbone = cfg.get("model", {}).get("backbone")
    dataset = card.get("name") or report.get("data", {}).get("name")
    classification = is_classification(report)
    meta = {"library_name": "transformers" if classification else "sentence-transformers",
            "pipeline_tag": "text-classification" if classification else "sentence-similarity"}
    if base_model(backbone):
        meta["base_model"] = base_model(backbone)
    if dataset:
        meta["datasets"] = [dataset]
    meta |= hub_license(card.get("license"))
    peft = cfg.get("model", {}).get("peft")
    meta["tags"] = ["verticals", *([f"peft-{peft}"] if peft in ("lora", "ia3") else []),
                    *(["text-classification"] if classification else
                      ["sentence-transformers", "feature-extraction", "recommendation"])]
    index = model_index(report, dataset, classification)
    if index:
        meta["model-index"] = index
    return meta


def model_index(report: dict, dataset: str | None, classification: bool) -> list:
    """The test split's numeric metrics in the hub's model-index layout (empty without any)."""
    metrics = report.get("metrics", {}).get("test") or {}
    rows = []
    for key, value in metrics.items():
        if key == "n" or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        kind = {"macro_f1": "f1"}.get(key, key)
        rows.append({"type": kind, "value": round(float(value), 4), "name": key.replace("_", " "),
                     **({"args": {"average": "macro"}} if key == "macro_f1" else {})})
    if not rows:
        return []
    task = {"type": "text-classification", "name": "Text Classification"} if classification else \
        {"type": "sentence-similarity", "name": "Item retrieval"}
    return [{"name": report.get("config", {}).get("name") or "verticals-model",
             "results": [{"task": task, "dataset": {"name": dataset or "own data", "type": dataset or "own",
                                                      "split": "test"}, "metrics": rows}]}]


def _fmt(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


def _pct(value) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _table(header: list[str], rows: list[list]) -> list[str]:
    return markdown_table(header, [[_fmt(v) for v in row] for row in rows])


def metrics_section(report: dict) -> list[str]:
    metrics = report.get("metrics") or {}
    if not metrics:
        return ["No held-out metrics in this run's report."]
    keys = [k for k in dict.fromkeys(k for m in metrics.values() for k, v in m.items()
                                     if isinstance(v, (int, float)) and not isinstance(v, bool))]
    return _table(["split", *keys], [[split, *(m.get(k, "-") for k in keys)] for split, m in metrics.items()])


def data_section(report: dict) -> list[str]:
    card, data = data_card(report), report.get("data") or {}
    source = report.get("config", {}).get("data", {}).get("source")
    lines = [f"- dataset: `{card.get('name') or data.get('name') or source}`"
             + (f" (source `{source}`)" if source and source != card.get("name") else "")]
    lines.append(f"- license: {card.get('license') or 'not recorded: check the data owner terms before sharing'}")
    if card.get("citation"):
        lines.append(f"- citation: {' '.join(str(card['citation']).split())}")
    if card.get("url"):
        lines.append(f"- url: {card['url']}")
    sizes = {k: v for k, v in data.items() if isinstance(v, int) and not isinstance(v, bool)}
    if sizes:
        lines.append("- sizes: " + ", ".join(f"{k} {v:,}" for k, v in sizes.items()))
    return lines


def loading_section(report: dict, exported: bool, classification: bool) -> list[str]:
    name = "OUT" if exported else "RUN_DIR"
    if not classification:
        where = "this directory" if exported else "`RUN_DIR/encoder`"
        return [f"The encoder in {where} is a sentence-transformers model (pooling and normalisation included):", "",
                "```python", "from sentence_transformers import SentenceTransformer", "",
                f"model = SentenceTransformer(\"{'OUT' if exported else 'RUN_DIR/encoder'}\")",
                "embeddings = model.encode([\"an item title\"])", "```", "",
                "With verticals: `verticals recsys index DATA --model RUN_DIR --out INDEX_DIR`."]
    lines = []
    if exported:
        lines += ["This directory loads in plain `transformers`. Its model class (encoder, the backbone's own "
                  "pooling, a linear head with the calibration temperature folded in) ships as "
                  "`modeling_verticals.py`, so loading needs `trust_remote_code=True`; without it loading fails "
                  "with an error rather than guessing a head.", "",
                  "```python", "from transformers import pipeline", "",
                  f"classify = pipeline(\"text-classification\", model=\"{name}\", trust_remote_code=True)",
                  "classify(\"where is my order?\", truncation=True)  # [{'label': ..., 'score': calibrated probability}]",
                  "```", "",
                  "Pass `truncation=True` so long texts are cut at the model's max length, as verticals does. "
                  "`AutoModelForSequenceClassification.from_pretrained(OUT, trust_remote_code=True)` gives the "
                  "model with `config.id2label` set to the labels below (load the tokenizer with "
                  "`AutoTokenizer.from_pretrained(OUT, trust_remote_code=True)`: it reads config.json too).", ""]
    else:
        lines += ["Export it for plain `transformers` with `verticals export hf RUN_DIR OUT` (then "
                  "`pipeline(\"text-classification\", model=OUT, trust_remote_code=True)`). Do not point "
                  "`pipeline()` at `RUN_DIR/model/encoder`: that is the bare encoder, and transformers would add a "
                  "random head on CLS pooling.", ""]
    lines += ["With verticals installed, on the run directory:", "", "```bash",
              "verticals predict RUN_DIR \"where is my order?\"",
              "verticals export hf RUN_DIR OUT   # a directory plain transformers loads", "```", "",
              "or in Python: `import verticals; verticals.load(\"RUN_DIR\").predict([\"where is my order?\"])`."]
    return lines


def confidence_section(report: dict, exported: bool) -> list[str]:
    conf = report.get("confidence") or {}
    lines = []
    if "temperature" in conf:
        lines.append(f"- probabilities are calibrated by temperature scaling: T = {conf['temperature']:.3f} "
                     f"(softmax(logits / T){', folded into the exported head' if exported else ''}); test ECE "
                     f"{_pct(conf.get('test_ece_before'))} before, {_pct(conf.get('test_ece_after'))} after")
    if "ood_scorer" in conf:
        lines.append(f"- out-of-scope detection: scorer `{conf['ood_scorer']}`, threshold "
                     f"{_fmt(conf.get('ood_threshold'))} (keeps {100 * conf.get('ood_target_in_scope_recall', 0):.0f}% "
                     f"of in-scope validation queries)")
        for key, value in conf.items():
            if key.startswith("out_of_scope_") and isinstance(value, dict):
                lines.append(f"  - `{key[len('out_of_scope_'):]}` set: AUROC {_fmt(value.get('auroc'))}, "
                             f"{100 * value.get('out_of_scope_recall', 0):.1f}% of out-of-scope queries caught at "
                             f"{100 * value.get('in_scope_recall', 0):.1f}% in-scope recall")
        lines.append("- `pipeline()` and `AutoModelForSequenceClassification` do NOT apply the out-of-scope "
                     "threshold: they always answer one of the labels. The verticals router (`verticals support "
                     "route RUN_DIR`, `verticals serve RUN_DIR`) applies it and hands such queries over"
                     + ("; config.json records the scorer and threshold under `verticals`." if exported else "."))
    return lines or ["No calibration or out-of-scope scorer in this run."]


def limitations(report: dict, classification: bool) -> list[str]:
    cfg = report.get("config", {})
    backbone = cfg.get("model", {}).get("backbone")
    lines = []
    if backbone == "tiny":
        lines.append("- built on `tiny`, a random 2-layer test backbone: its predictions are meaningless "
                     "outside tests. No base_model is named for it.")
    elif base_model(backbone) is None and backbone:
        lines.append(f"- the backbone `{backbone}` is a local directory, not a hub id: no base_model is named.")
    steps = (report.get("fit") or {}).get("steps")
    if isinstance(steps, int) and 0 < steps < 50:
        lines.append(f"- trained for only {steps} steps: a smoke run, not a tuned model.")
    if classification:
        lines += ["- it predicts only the labels listed above, on text like its training data; anything else "
                  "gets one of those labels unless the out-of-scope scorer is applied.",
                  f"- texts are truncated at {cfg.get('model', {}).get('max_length') or 'the backbone max length'} "
                  f"tokens (an export's tokenizer has it as model_max_length)."]
    else:
        lines.append("- item embeddings reflect co-consumption in its training interactions; new domains, "
                     "languages and item types need their own fine-tune.")
    lines.append("- license: the `license` field states the training data's terms; the backbone's license also "
                 "applies to the weights.")
    return lines


def model_card(report: dict, *, exported: bool = False) -> str:
    """README.md text for a run (or, `exported`, for its `verticals export hf` directory)."""
    cfg = report.get("config", {})
    model_cfg = cfg.get("model", {})
    classification = is_classification(report)
    name = cfg.get("name") or "verticals model"
    head = yaml.safe_dump(front_matter(report), sort_keys=False, allow_unicode=True)
    lines = ["---", head.rstrip(), "---", "", f"# {name}", ""]
    if classification:
        peft = model_cfg.get("peft", "none")
        method = {"none": "full fine-tune", "lora": "LoRA adapters", "ia3": "IA3 adapters",
                  "frozen": "frozen encoder + linear probe"}.get(peft, peft)
        merged = " (merged into the encoder weights here)" if exported and peft in ("lora", "ia3") else ""
        lines += [f"A {len(report['labels'])}-label text classifier trained with the verticals recipe `{name}`"
                  f" (mode {cfg.get('mode', 'finetune')}, {method}{merged}) on the backbone "
                  f"`{model_cfg.get('backbone')}`.",
                  cfg.get("description") or "", "",
                  "Architecture: the backbone encoder, its own sentence pooling (as its sentence-transformers "
                  "config says, e.g. mean pooling for MiniLM), optional L2 normalisation, then one linear layer; "
                  "probabilities are softmax over the calibrated logits."]
    else:
        lines += [f"An item text encoder fine-tuned with the verticals recipe `{name}` on the backbone "
                  f"`{model_cfg.get('backbone')}`: items that users consume close in time embed close together "
                  f"(in-batch contrastive loss on co-consumption pairs).", cfg.get("description") or ""]
    lines += ["", "## How to load", "", *loading_section(report, exported, classification)]
    if classification:
        per_class = report.get("per_class_test") or {}
        rows = [[i, label, per_class.get(label, {}).get("f1", "-"), per_class.get(label, {}).get("support", "-")]
                for i, label in enumerate(report["labels"])]
        lines += ["", "## Labels", "", *_table(["id", "label", "test F1", "test support"], rows)]
    lines += ["", "## Training data", "", *data_section(report), "", "## Metrics", "", *metrics_section(report)]
    if not classification and not report.get("metrics"):
        lines += ["", "Ranking quality (recall@k, nDCG@k under a temporal split) is measured by "
                  "`verticals recsys evaluate`, not during training."]
    if classification:
        lines += ["", "## Calibration and out-of-scope", "", *confidence_section(report, exported)]
    cost = report.get("cost") or {}
    if cost:
        lines += ["", "## Cost", "", *_table(["item", "value"], [[k, v] for k, v in cost.items()])]
        device = (report.get("environment") or {}).get("device")
        if device:
            lines.append(f"\nMeasured on `{device}` ({(report.get('environment') or {}).get('cpus', '?')} CPUs).")
    lines += ["", "## How to reproduce", "", "The run's resolved config (its `config.yaml`); train it again with "
              "`verticals train config.yaml --out NEW_RUN_DIR`:", "", "```yaml",
              yaml.safe_dump(cfg, sort_keys=False).rstrip(), "```",
              "", "## Limitations", "", *limitations(report, classification), ""]
    return "\n".join(lines)
