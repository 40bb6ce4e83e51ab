"""The static-embedding tier's training steps: distil a static model, then fit its linear head.

`distill_static(settings, backbone, device)` distils a model2vec StaticModel (model2vec.distill:
every vocabulary token is passed through the encoder once, the table is reduced with PCA and
SIF-weighted) from the recipe's backbone, or from a fine-tuned run (`static.source`: its encoder
with LoRA/IA3 merged, as the ONNX export takes it), so the table carries what fine-tuning
taught the encoder about each token. `fit_static_head` fits the head as the probe recipe fits
its own (core.models.classifier.probe_head, C chosen on validation with probe_c_search). The
recipe that runs both is core.classify.recipes.train_static.
Leaves out: the model and its saved layout (core.models.static) and the report (core.classify.finish).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np

from core.classify.run_data import RunData
from core.data.splits import LabelMap
from core.models.backbones import load_backbone
from core.models.classifier import choose_probe_c, load_classifier, probe_head
from core.models.predictor import model_dir
from core.models.static import StaticClassifier, require_model2vec

# our pooling -> model2vec's (it has no max pooling; mean is its default and what MiniLM uses)
POOLING = {"mean": "mean", "cls": "first", "max": "mean"}


@contextmanager
def local_name(encoder, path: str):
    """model2vec names the static model after `encoder.name_or_path` and, when that is not an
    existing directory, looks the name up on the Hugging Face Hub for its language; the local
    directory the weights came from avoids a network call (offline it would only warn)."""
    before = encoder.name_or_path
    encoder.name_or_path = path
    try:
        yield
    finally:
        encoder.name_or_path = before


def distill_source(settings, backbone: str) -> tuple[object, object, str, str, str]:
    """(encoder, tokenizer, pooling, local path, description) of what the table is distilled from:
    the backbone `backbone`, or the fine-tuned run at `settings.source` (LoRA/IA3 merged)."""
    if not settings.source:
        b = load_backbone(backbone)
        return b.encoder, b.tokenizer, b.pooling, b.path if Path(b.path).is_dir() else "", f"backbone {backbone}"
    directory = model_dir(settings.source)
    run = load_classifier(directory)  # merges LoRA/IA3; a static run is refused there with a UserError
    return run.encoder, run.tokenizer, run.pooling, str(directory), f"fine-tuned run {Path(settings.source).name}"


def distill_static(settings, backbone: str, device: str):
    """(model2vec StaticModel, description of its source) distilled as the module docstring says."""
    require_model2vec()
    from model2vec.distill import distill_from_model  # lazy: an optional extra ([static]); loads torch

    encoder, tokenizer, pooling, path, source = distill_source(settings, backbone)
    # a table cannot be wider than the encoder: pca_dims past its width keeps them all (the report's embedding_dim)
    dims = min(settings.pca_dims, encoder.config.hidden_size) if settings.pca_dims else None
    with local_name(encoder, path or encoder.name_or_path):
        static_model = distill_from_model(model=encoder, tokenizer=tokenizer, device=device, pca_dims=dims,
                                          sif_coefficient=settings.sif_coefficient, quantize_to="float32",
                                          pooling=POOLING[pooling])
    static_model.max_length = settings.max_length
    return static_model, source


def fit_static_head(model: StaticClassifier, data: RunData, model_cfg) -> dict:
    """Fit the head on the static embeddings of the training split (C from model_cfg.probe_c, or
    chosen on validation when probe_c_search); returns the report's `probe` section."""
    label_map, validation = LabelMap(model.labels), data.data.validation
    x, y = model.encode(data.train.texts), label_map.encode(data.train.labels)
    c, section = model_cfg.probe_c, {}
    if model_cfg.probe_c_search and len(validation):
        c, by_c = choose_probe_c(x, y, model.encode(validation.texts), label_map.encode(validation.labels))
        section = {"c": c, "validation_accuracy_by_c": {str(k): v for k, v in by_c.items()}}
    weight, bias, train_accuracy = probe_head(x, y, len(model.labels), c=c)
    model.set_head(weight, bias)
    return section | {"c": c, "train_accuracy": train_accuracy, "embedding_dim": int(np.shape(x)[1])}
