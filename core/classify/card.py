"""A classification run's model card: what core.runs.card renders around a text classifier.

`model_card(report, exported=False)`: front matter for `transformers` / `text-classification` with
the test metrics in a model-index; a summary (labels, mode, PEFT method, backbone, architecture);
how to load it (an export loads in plain transformers with trust_remote_code, a run directory
through verticals); the labels with their test F1; the training data and metrics; calibration and
the out-of-scope scorer (which `pipeline()` does NOT apply); the precision it computed in; cost,
reproduction and limitations (core.runs.card). Leaves out: the export itself (core.export.hub) and
report.md (core.classify.report).
"""

from __future__ import annotations

from core.runs.card import HubKind, card_text, data_and_metrics, fmt, precision_section, table

CLASSIFIER = HubKind(library_name="transformers", pipeline_tag="text-classification", tags=("text-classification",),
                     index_task={"type": "text-classification", "name": "Text Classification"})
METHODS = {"none": "full fine-tune", "lora": "LoRA adapters", "ia3": "IA3 adapters",
           "frozen": "frozen encoder + linear probe"}


def _pct(value) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def summary(report: dict, exported: bool) -> list[str]:
    """What the classifier is: labels, recipe, mode and method, backbone, and its architecture."""
    cfg = report.get("config", {})
    model_cfg = cfg.get("model", {})
    peft = model_cfg.get("peft", "none")
    merged = " (merged into the encoder weights here)" if exported and peft in ("lora", "ia3") else ""
    if cfg.get("mode") == "static":
        source = (report.get("static") or {}).get("source") or f"backbone {model_cfg.get('backbone')}"
        return [f"A {len(report.get('labels') or [])}-label text classifier of the static-embedding tier, trained "
                f"with the verticals recipe `{cfg.get('name') or 'verticals model'}` (mode static) from {source}.",
                cfg.get("description") or "", "",
                "Architecture: a model2vec static table (every token's vector, distilled once from the encoder, "
                "PCA-reduced and SIF-weighted); a text's embedding is the normalised mean of its tokens' vectors, "
                "then one linear layer; probabilities are softmax over the calibrated logits. It runs in NumPy "
                "and has no transformers or ONNX export."]
    return [f"A {len(report.get('labels') or [])}-label text classifier trained with the verticals recipe "
            f"`{cfg.get('name') or 'verticals model'}` (mode {cfg.get('mode', 'finetune')}, "
            f"{METHODS.get(peft, peft)}{merged}) on the backbone `{model_cfg.get('backbone')}`.",
            cfg.get("description") or "", "",
            "Architecture: the backbone encoder, its own sentence pooling (as its sentence-transformers "
            "config says, e.g. mean pooling for MiniLM), optional L2 normalisation, then one linear layer; "
            "probabilities are softmax over the calibrated logits."]


def loading_section(exported: bool) -> list[str]:
    lines = []
    if exported:
        lines += ["This directory loads in plain `transformers`. Its model class (encoder, the backbone's own "
                  "pooling, a linear head with the calibration temperature folded in) ships as "
                  "`modeling_verticals.py`, so loading needs `trust_remote_code=True`; without it loading fails "
                  "with an error rather than guessing a head.", "",
                  "```python", "from transformers import pipeline", "",
                  "classify = pipeline(\"text-classification\", model=\"OUT\", trust_remote_code=True)",
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


STATIC_LOADING = ["With verticals and its `static` extra installed (`pip install 'verticals[static]'`), on the run "
                  "directory:", "", "```bash", "verticals predict RUN_DIR \"where is my order?\"", "```", "",
                  "or in Python: `import verticals; verticals.load(\"RUN_DIR\").predict([\"where is my order?\"])`. "
                  "`model/static/` is model2vec's own directory (`model2vec.StaticModel.from_pretrained`); the head is "
                  "`model/head.safetensors` (weight, bias) and the labels are in `model/classifier.json`."]


def labels_table(report: dict) -> list[str]:
    """Label ids in head order with their test F1 and support."""
    per_class = report.get("per_class_test") or {}
    rows = [[i, label, per_class.get(label, {}).get("f1", "-"), per_class.get(label, {}).get("support", "-")]
            for i, label in enumerate(report.get("labels") or [])]
    return table(["id", "label", "test F1", "test support"], rows)


def confidence_section(report: dict, exported: bool) -> list[str]:
    conf = report.get("confidence") or {}
    lines = []
    if "temperature" in conf:
        lines.append(f"- probabilities are calibrated by temperature scaling: T = {conf['temperature']:.3f} "
                     f"(softmax(logits / T){', folded into the exported head' if exported else ''}); test ECE "
                     f"{_pct(conf.get('test_ece_before'))} before, {_pct(conf.get('test_ece_after'))} after")
    if "ood_scorer" in conf:
        lines.append(f"- out-of-scope detection: scorer `{conf['ood_scorer']}`, threshold "
                     f"{fmt(conf.get('ood_threshold'))} (keeps {100 * conf.get('ood_target_in_scope_recall', 0):.0f}% "
                     f"of in-scope validation queries)")
        for key, value in conf.items():
            if key.startswith("out_of_scope_") and isinstance(value, dict):
                lines.append(f"  - `{key[len('out_of_scope_'):]}` set: AUROC {fmt(value.get('auroc'))}, "
                             f"{100 * value.get('out_of_scope_recall', 0):.1f}% of out-of-scope queries caught at "
                             f"{100 * value.get('in_scope_recall', 0):.1f}% in-scope recall")
        lines.append("- `pipeline()` and `AutoModelForSequenceClassification` do NOT apply the out-of-scope "
                     "threshold: they always answer one of the labels. The verticals router (`verticals support "
                     "route RUN_DIR`, `verticals serve RUN_DIR`) applies it and hands such queries over"
                     + ("; config.json records the scorer and threshold under `verticals`." if exported else "."))
    return lines or ["No calibration or out-of-scope scorer in this run."]


def limitations(report: dict) -> list[str]:
    max_length = report.get("config", {}).get("model", {}).get("max_length")
    return ["- it predicts only the labels listed above, on text like its training data; anything else "
            "gets one of those labels unless the out-of-scope scorer is applied.",
            f"- texts are truncated at {max_length or 'the backbone max length'} "
            f"tokens (an export's tokenizer has it as model_max_length)."]


def model_card(report: dict, *, exported: bool = False) -> str:
    """README.md text for a classification run (or, `exported`, for its `verticals export hf` directory)."""
    static = (report.get("config") or {}).get("mode") == "static"
    loading = STATIC_LOADING if static else loading_section(exported)
    sections = ["", "## How to load", "", *loading,
                "", "## Labels", "", *labels_table(report),
                *data_and_metrics(report),
                "", "## Calibration and out-of-scope", "", *confidence_section(report, exported),
                *precision_section(report, exported)]
    return card_text(report, CLASSIFIER, summary(report, exported), sections, limitations(report))
