"""A `transformers` model class for exported verticals classifiers: encoder -> pooling -> linear head.

`verticals export hf` copies this file into the export as `modeling_verticals.py` and names its
classes in config.json's `auto_map`, so `transformers.pipeline("text-classification", model=DIR,
trust_remote_code=True)` and `AutoModelForSequenceClassification.from_pretrained(DIR,
trust_remote_code=True)` build exactly the classifier verticals trained. Hand-written because no
transformers class does this: BertForSequenceClassification classifies BERT's CLS pooler output,
while all-MiniLM-L6-v2 and all-mpnet-base-v2 were trained with mean pooling and L2 normalisation,
so loading our encoder into a standard class silently classifies with a random head on the wrong
pooling. The encoder itself is generic (`AutoModel.from_config` of the backbone's own config: BERT,
MPNet, ...), only pooling, normalisation and the head are ours.

Self-contained on purpose: transformers loads it as remote code from the model directory, so it
imports only torch and transformers (nothing from verticals). The pooling below is the same
arithmetic as core.models.encoder.pool; tests/cli/test_export_hf.py holds the two to 1e-5 on real runs.
The calibration temperature is folded into the head at export (W/T, b/T), so softmax(logits) is
the calibrated probability.
Leaves out: the out-of-scope scorer (recorded in config.json under `verticals`, applied by the
verticals router, not here), LoRA (merged before export), pair-input training recipes.
"""

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

POOLING_MODES = ("cls", "mean", "max")


class VerticalsConfig(PretrainedConfig):
    """`encoder_config`: the backbone's own config as a dict (with its `model_type`); `pooling`:
    cls | mean | max over real tokens; `normalize`: L2-normalise the pooled embedding."""

    model_type = "verticals"

    def __init__(self, encoder_config=None, pooling="mean", normalize=False, **kwargs):
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {', '.join(POOLING_MODES)}; got {pooling!r}")
        encoder_config = dict(encoder_config or {"model_type": "bert"})
        if "model_type" not in encoder_config:
            raise ValueError("encoder_config needs the encoder's model_type (e.g. 'bert', 'mpnet')")
        # a plain dict, not a nested config object: it serialises the same way on every transformers version
        self.encoder_config = encoder_config
        self.pooling = pooling
        self.normalize = bool(normalize)
        super().__init__(**kwargs)

    def build_encoder_config(self):
        settings = {k: v for k, v in self.encoder_config.items() if k not in ("transformers_version", "architectures")}
        return AutoConfig.for_model(settings.pop("model_type"), **settings)


def pool(hidden, mask, mode):
    """[B, H] sentence embedding from token states [B, T, H] and attention mask [B, T]."""
    if mode == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "max":
        return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


class VerticalsPreTrainedModel(PreTrainedModel):
    config_class = VerticalsConfig
    base_model_prefix = "encoder"
    supports_gradient_checkpointing = True


class VerticalsForSequenceClassification(VerticalsPreTrainedModel):
    """Logits = classifier(pool(encoder(input_ids).last_hidden_state)) (+ L2 norm before the head)."""

    def __init__(self, config):
        super().__init__(config)
        encoder_config = config.build_encoder_config()
        self.num_labels = config.num_labels
        self.encoder = AutoModel.from_config(encoder_config)
        self.classifier = nn.Linear(encoder_config.hidden_size, config.num_labels)
        self.post_init()

    def embed(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs):
        """[B, H] pooled (and, if configured, L2-normalised) sentence embeddings."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is not None:  # BERT takes them; MPNet's tokenizer never returns them
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        emb = pool(hidden, attention_mask, self.config.pooling)
        return nn.functional.normalize(emb, dim=-1) if self.config.normalize else emb

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        kwargs.pop("return_dict", None)  # always a SequenceClassifierOutput
        logits = self.classifier(self.embed(input_ids, attention_mask, token_type_ids, **kwargs))
        loss = None
        if labels is not None:
            if self.config.problem_type == "multi_label_classification":
                loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
            else:
                loss = nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits)


__all__ = ["VerticalsConfig", "VerticalsForSequenceClassification", "VerticalsPreTrainedModel"]
