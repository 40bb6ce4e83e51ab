"""Text classifier = backbone encoder + the backbone's own pooling + a linear head; LoRA via peft.

The head must match the backbone: all-MiniLM-L6-v2 was trained with mean pooling and L2
normalisation (its modules.json says so), so the classifier pools the same way instead of using
BERT's CLS pooler. Embedding and batched inference go through core.models.encoder.SentenceEncoder, like
every other text model here. The head can start from a linear probe fitted on frozen embeddings
(see `init_head_from_probe`), which is where a well-pooled frozen encoder already stands.

Saved layout (`model/`, safetensors only):
  classifier.json      pooling, normalize, labels, peft, the backbone's name + weights_sha256,
                       mixed_precision (the setting; resolved again wherever the model predicts)
  head.safetensors     the linear head (weight, bias)
  encoder/             full fine-tune: a standard transformers + sentence-transformers directory
  adapter/             LoRA/IA3: the peft adapter only (the base encoder is the named backbone)
  tokenizer/           LoRA/IA3/frozen: the tokenizer (full fine-tune keeps it in encoder/)
  backbone/            LoRA/IA3/frozen on a local backbone directory (not a name): a copy of its encoder
The head is saved on its own, so a LoRA model never loses it on reload or merge (peft #577, #2289).
A run names its backbone (`minilm`, `tiny`, a hub id) and never records where it sat on the
training machine, so a run directory loads wherever the package is installed; the weights'
checksum is verified on load (core.models.backbones.verify_weights).
Precision: inference runs the encoder under `mixed_precision` as core.foundation.precision resolves
it on the device it predicts on (bf16 autocast on a CPU with native bf16 under `auto`); the pooled
embeddings are cast back to float32 before the head, the softmax and NumPy. A run saved before the
setting was recorded predicts in float32, as it did then.
Leaves out: the training loop (core.classify.train) and metrics (core.evaluation.metrics).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.confidence.ood import OutOfScopeDetector
from core.foundation.errors import UserError
from core.foundation.precision import autocast, resolve_precision
from core.models.backbones import (
    Backbone,
    load_backbone,
    verify_weights,
    weights_sha256,
    write_sentence_transformers_files,
)
from core.models.encoder import SentenceEncoder
from core.models.static import is_static

FORMAT_VERSION = 2  # 2: the backbone by name + weights_sha256 (1 recorded its absolute path)
BASE_COPY = "backbone"  # model/backbone/: the base encoder of a run built on a local directory
ADAPTERS = ("lora", "ia3")  # peft methods: only adapters + head train and are saved
# IA3 (Liu et al. 2022) rescales keys, values and the feed-forward output of every block
IA3_TARGETS, IA3_FEEDFORWARD = ("key", "value", "output.dense"), ("output.dense",)


@dataclass(frozen=True)
class BackboneRef:
    """The backbone a classifier is built on: `name` is what a saved run records (an alias, `tiny`,
    a hub id, or a local directory's folder name), `path` where its weights are on this machine,
    `local`: a directory rather than a name, so a saved adapter/probe run keeps a copy of it."""

    name: str
    path: str
    local: bool = False


@dataclass(frozen=True)
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    # every linear layer of a BERT block: attention q/k/v/out and both feed-forward layers
    target_modules: tuple[str, ...] = ("query", "key", "value", "dense")


class TextClassifier(nn.Module):
    def __init__(self, encoder: nn.Module, tokenizer, labels: list[str], *, pooling: str,
                 normalize: bool, max_length: int, dropout: float = 0.1,
                 backbone: BackboneRef = BackboneRef("", ""), peft: str = "none"):
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.pooling, self.normalize, self.max_length = pooling, normalize, max_length
        self.sentence_encoder  # noqa: B018 - checks pooling and max_length now, not at the first batch
        self.backbone, self.peft = backbone, peft
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, len(labels))
        self.temperature = 1.0  # set by calibration (core.confidence.calibrate); divides logits in predict_proba
        self.ood = None  # a core.confidence.ood.OutOfScopeDetector, set by core.classify.recipes.fit_confidence
        self.mixed_precision = "auto"  # the recipe's train.mixed_precision: how inference computes (see precision_on)

    @property
    def sentence_encoder(self) -> SentenceEncoder:
        """The encoder as it is now (export swaps in a merged one), pooled the way the backbone says."""
        return SentenceEncoder(self.encoder, self.tokenizer, pooling=self.pooling, normalize=self.normalize,
                               max_length=self.max_length)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Dynamic padding: pad to the longest text in this batch, truncate at max_length."""
        return self.sentence_encoder.tokenize(texts)

    def embed(self, input_ids, attention_mask, **extra) -> torch.Tensor:
        return self.sentence_encoder.embed(input_ids, attention_mask, **extra)

    def forward(self, input_ids, attention_mask, **extra) -> torch.Tensor:
        return self.head(self.dropout(self.embed(input_ids, attention_mask, **extra)))

    # Inference runs through SentenceEncoder.map_batches: length-bucketed, eval mode, no gradients.
    # The head is applied without self.dropout, so the classifier's own train/eval mode is irrelevant.

    def precision_on(self, device: str) -> str:
        """What inference on `device` computes in: `mixed_precision` resolved on this machine."""
        return resolve_precision(self.mixed_precision, device)

    def encode(self, texts: list[str], batch_size: int = 64, device: str = "cpu") -> np.ndarray:
        """Pooled embeddings, in input order (batches are length-bucketed for speed)."""
        return self._batched(texts, batch_size, device, lambda emb: emb, self.encoder.config.hidden_size)

    def predict_logits(self, texts: list[str], batch_size: int = 64, device: str = "cpu") -> np.ndarray:
        return self._batched(texts, batch_size, device, self.head, len(self.labels))

    def predict_proba(self, texts: list[str], batch_size: int = 64, device: str = "cpu") -> np.ndarray:
        """Calibrated class probabilities: softmax(logits / temperature)."""
        t = self.temperature
        return self._batched(texts, batch_size, device, lambda emb: torch.softmax(self.head(emb) / t, dim=-1),
                             len(self.labels))

    def predict_all(self, texts: list[str], batch_size: int = 64, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
        """(logits, pooled embeddings) in one pass, for out-of-scope scoring."""
        width = len(self.labels) + self.encoder.config.hidden_size
        out = self._batched(texts, batch_size, device, lambda emb: torch.cat([self.head(emb), emb], dim=-1), width)
        return out[:, :len(self.labels)], out[:, len(self.labels):]

    def _batched(self, texts, batch_size, device, from_embeddings, width: int) -> np.ndarray:
        """[len(texts), width]: `from_embeddings` applied to float32 pooled embeddings of each batch,
        the encoder run under the precision this device resolves to (`precision_on`)."""
        precision = self.precision_on(device)

        def batch_out(batch):
            with autocast(precision, device):
                emb = self.embed(**batch)
            return from_embeddings(emb.float())

        return self.sentence_encoder.map_batches(texts, batch_out, width, batch_size=batch_size, device=device)

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def save(self, directory: Path) -> Path:
        """The saved layout of the module docstring (save_classifier); every trained model has a `save`."""
        return save_classifier(self, directory)

    def total_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_classifier(backbone: Backbone, labels: list[str], *, peft: str = "none",
                     lora: LoraSettings = LoraSettings(), dropout: float = 0.1) -> TextClassifier:
    encoder = backbone.encoder
    if peft == "lora":
        from peft import LoraConfig, get_peft_model  # lazy: peft pulls in torch and transformers

        cfg = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                         target_modules=list(lora.target_modules), bias="none")
        encoder = get_peft_model(encoder, cfg)  # freezes the base weights
    elif peft == "ia3":
        from peft import IA3Config, get_peft_model  # lazy: peft pulls in torch and transformers

        cfg = IA3Config(target_modules=list(IA3_TARGETS), feedforward_modules=list(IA3_FEEDFORWARD))
        encoder = get_peft_model(encoder, cfg)
    elif peft == "frozen":  # a linear probe: only the head trains
        for p in encoder.parameters():
            p.requires_grad_(False)
    elif peft != "none":
        raise UserError(f"unknown peft '{peft}'; choose none, lora, ia3 or frozen")
    return TextClassifier(encoder, backbone.tokenizer, labels, pooling=backbone.pooling,
                          normalize=backbone.normalize, max_length=backbone.max_length,
                          dropout=dropout, peft=peft,
                          backbone=BackboneRef(backbone.portable_name, backbone.path, backbone.is_local))


PROBE_C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def choose_probe_c(x: np.ndarray, label_ids: list[int], x_val: np.ndarray, val_ids: list[int], *,
                   grid: tuple[float, ...] = PROBE_C_GRID) -> tuple[float, dict[float, float]]:
    """The probe's C with the best validation accuracy on frozen embeddings `x` / `x_val` (the
    smallest C, i.e. the strongest regularisation, among ties), and the accuracy of every C tried."""
    from sklearn.linear_model import LogisticRegression  # lazy: scikit-learn costs start-up; only when used

    scores = {c: float(LogisticRegression(C=c, max_iter=2000).fit(x, label_ids).score(x_val, val_ids)) for c in sorted(grid)}
    best = max(scores.values())
    return next(c for c, acc in scores.items() if acc == best), scores


def init_head_from_probe(model: TextClassifier, texts: list[str], label_ids: list[int], *,
                         c: float = 10.0, device: str = "cpu", batch_size: int = 64,
                         embeddings: np.ndarray | None = None) -> float:
    """Fit a multinomial logistic regression on frozen embeddings; copy it into the head.
    `embeddings`: the texts' embeddings if the caller already has them (else they are encoded).

    Returns the probe's training accuracy. Starting from the probe means fine-tuning begins where a
    frozen encoder already is, instead of from a random head that first drags the encoder around.
    """
    x = model.encode(texts, batch_size=batch_size, device=device) if embeddings is None else embeddings
    weight, bias, accuracy = probe_head(x, label_ids, len(model.labels), c=c)
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(weight))
        model.head.bias.copy_(torch.from_numpy(bias))
    return accuracy


def probe_head(x: np.ndarray, label_ids: list[int], num_labels: int, *, c: float = 10.0) -> tuple[np.ndarray, np.ndarray, float]:
    """(weight [num_labels, dim], bias [num_labels], training accuracy) of a multinomial logistic
    regression on embeddings `x`: a linear head for any model that embeds (the transformer
    classifier's, the static tier's). Labels absent from `label_ids` get bias -1e4 (never predicted);
    a binary fit's single row is split into two opposite halves, so softmax gives its probabilities."""
    from sklearn.linear_model import LogisticRegression  # lazy: scikit-learn costs start-up; only when used

    y = np.asarray(label_ids)
    probe = LogisticRegression(C=c, max_iter=2000)
    probe.fit(x, y)
    weight = np.zeros((num_labels, x.shape[1]), dtype=np.float32)
    bias = np.full(num_labels, -1e4 if len(probe.classes_) < num_labels else 0.0, dtype=np.float32)
    coef = probe.coef_ if len(probe.classes_) > 2 else np.vstack([-probe.coef_[0] / 2, probe.coef_[0] / 2])
    inter = probe.intercept_ if len(probe.classes_) > 2 else np.array([-probe.intercept_[0] / 2, probe.intercept_[0] / 2])
    weight[probe.classes_] = coef
    bias[probe.classes_] = inter
    return weight, bias, float(probe.score(x, y))


# ---------------------------------------------------------------- save / load

def save_classifier(model: TextClassifier, directory: Path) -> Path:
    from safetensors.torch import save_file  # lazy: safetensors.torch pulls in torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({"weight": model.head.weight.detach().contiguous().cpu(),
               "bias": model.head.bias.detach().contiguous().cpu()}, directory / "head.safetensors")
    meta = {"format_version": FORMAT_VERSION, "labels": model.labels, "pooling": model.pooling,
            "normalize": model.normalize, "max_length": model.max_length, "peft": model.peft,
            "backbone": model.backbone.name, "hidden_size": model.encoder.config.hidden_size,
            "temperature": model.temperature, "mixed_precision": model.mixed_precision}
    if model.peft in ADAPTERS or model.peft == "frozen":  # the saved files need the base encoder
        meta |= save_backbone_record(model.backbone, directory)
    if model.ood is not None:
        meta["ood"] = model.ood.save(directory)
    if model.peft in ADAPTERS:
        # adapter weights only; the vocabulary is never resized, so no embedding layers (peft's "auto"
        # would look the backbone's name up on the Hub to compare vocabularies)
        model.encoder.save_pretrained(directory / "adapter", save_embedding_layers=False)
        model.tokenizer.save_pretrained(directory / "tokenizer")
    elif model.peft == "frozen":  # the encoder is the named backbone, unchanged
        model.tokenizer.save_pretrained(directory / "tokenizer")
    else:
        encoder_dir = directory / "encoder"
        model.encoder.save_pretrained(encoder_dir, safe_serialization=True)
        model.tokenizer.save_pretrained(encoder_dir)
        write_sentence_transformers_files(encoder_dir, pooling=model.pooling,
                                          normalize=model.normalize, max_length=model.max_length)
    (directory / "classifier.json").write_text(json.dumps(meta, indent=2))
    return directory


def load_classifier(directory: Path, *, merge: bool = True) -> TextClassifier:
    """Reload a saved classifier with its head. LoRA adapters are merged into the base weights
    by default (plain BERT at inference, no adapter overhead); `merge=False` keeps them separate."""
    from safetensors.torch import load_file  # lazy: safetensors.torch pulls in torch
    from transformers import AutoModel, AutoTokenizer  # lazy: transformers costs seconds of start-up

    directory = Path(directory)
    meta_file = directory / "classifier.json"
    if not meta_file.is_file():
        raise UserError(f"{directory} is not a saved verticals model (no classifier.json). Give a run "
                        f"directory made by `verticals train` or its model/ folder.")
    meta = json.loads(meta_file.read_text())
    if is_static(meta):
        raise UserError(f"{directory} is a static-embedding run (a distilled static model, no transformer "
                        f"encoder): it predicts through core.models.predictor.load_run, and has nothing to "
                        f"export to ONNX or transformers or to warm-start a fine-tune from")
    if meta["peft"] in ADAPTERS:
        from peft import PeftModel  # lazy: peft pulls in torch and transformers

        base, ref = load_base_encoder(directory, meta)
        encoder = PeftModel.from_pretrained(base, directory / "adapter")
        tokenizer = AutoTokenizer.from_pretrained(directory / "tokenizer")
        if merge:
            encoder = encoder.merge_and_unload()
    elif meta["peft"] == "frozen":
        encoder, ref = load_base_encoder(directory, meta)
        tokenizer = AutoTokenizer.from_pretrained(directory / "tokenizer")
    else:
        encoder = AutoModel.from_pretrained(directory / "encoder")
        tokenizer = AutoTokenizer.from_pretrained(directory / "encoder")
        ref = BackboneRef(meta["backbone"], str(directory / "encoder"))
    model = TextClassifier(encoder, tokenizer, meta["labels"], pooling=meta["pooling"],
                           normalize=meta["normalize"], max_length=meta["max_length"],
                           backbone=ref, peft=meta["peft"])
    head = load_file(directory / "head.safetensors")
    model.head.load_state_dict(head)
    model.temperature = float(meta.get("temperature", 1.0))
    model.mixed_precision = meta.get("mixed_precision", "no")  # older runs predicted in float32
    model.ood = load_ood(directory, meta)
    model.eval()
    return model


def save_backbone_record(ref: BackboneRef, directory: Path) -> dict:
    """classifier.json fields that let an adapter/probe run find its base encoder anywhere: the
    backbone's name and weights checksum; a local directory (no name to resolve elsewhere) is
    copied into `directory/backbone/` (safetensors) and the checksum is that copy's."""
    if not ref.local:
        return {"backbone_sha256": weights_sha256(ref.path)}
    from transformers import AutoModel  # lazy: transformers costs seconds of start-up

    copy = Path(directory) / BASE_COPY
    if Path(ref.path).resolve() != copy.resolve():
        AutoModel.from_pretrained(ref.path).save_pretrained(copy, safe_serialization=True)
    return {"backbone_in_run": BASE_COPY, "backbone_sha256": weights_sha256(str(copy))}


def load_base_encoder(directory: Path, meta: dict) -> tuple[nn.Module, BackboneRef]:
    """The base encoder an adapter/probe run was trained on: its copy inside the run, or the
    named backbone resolved on this machine with its weights checked against the run's checksum.
    A format-1 run recorded an absolute path instead: it still loads while that path exists."""
    directory = Path(directory)
    if meta.get("backbone_in_run"):
        from transformers import AutoModel  # lazy: transformers costs seconds of start-up

        path = directory / meta["backbone_in_run"]
        if not path.is_dir() or weights_sha256(str(path)) != meta.get("backbone_sha256"):
            raise UserError(f"{directory}: the copy of its backbone in {path} is missing or corrupt "
                            f"(checksum differs); copy the whole run directory again, or retrain it.")
        return AutoModel.from_pretrained(path), BackboneRef(meta["backbone"], str(path), local=True)
    name = meta["backbone"]
    try:
        backbone = load_backbone(name)
    except UserError as exc:
        if meta.get("format_version", 1) < 2 and Path(name).is_absolute():
            raise UserError(f"{directory} was saved by an older verticals that recorded its backbone by the "
                            f"path {name}, which does not exist here (a moved or recreated environment, or "
                            f"another machine). Retrain the run to make it portable, or restore that "
                            f"directory.") from None
        raise UserError(f"{directory} needs its backbone '{name}', which does not load here: {exc}") from None
    verify_weights(backbone, meta.get("backbone_sha256"), str(directory))
    return backbone.encoder, BackboneRef(backbone.portable_name, backbone.path, backbone.is_local)


def load_ood(directory: Path, meta: dict):
    """The core.confidence.ood.OutOfScopeDetector saved beside a model, or None."""
    return OutOfScopeDetector.load(directory, meta.get("ood"))


def save_merged_encoder(model: TextClassifier, directory: Path) -> Path:
    """Write the (LoRA-merged) encoder as a standard transformers + sentence-transformers dir."""
    encoder = model.encoder.merge_and_unload() if hasattr(model.encoder, "merge_and_unload") else model.encoder
    directory = Path(directory)
    encoder.save_pretrained(directory, safe_serialization=True)
    model.tokenizer.save_pretrained(directory)
    write_sentence_transformers_files(directory, pooling=model.pooling, normalize=model.normalize,
                                      max_length=model.max_length)
    return directory
