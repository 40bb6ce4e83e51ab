"""ONNX export of a trained classifier and an ONNX Runtime twin with the same predict interface.

The exported graph is encoder -> the backbone's pooling (+ L2 norm) -> head, with two outputs:
`logits` and `sentence_embedding` (the latter feeds the out-of-scope scorers). LoRA adapters are
merged first, so the graph is plain BERT. Exported with torch's dynamo exporter: the older
TorchScript tracer bakes the example's padding into transformers 5's attention-mask code and gives
wrong logits for other shapes (measured here: max |diff| 0.05 vs 1e-7).

`quantize_int8` writes a dynamically quantised twin (ONNX Runtime's `quantize_dynamic`: int8
weights, activations quantised per batch at run time) beside it. On BANKING77 (2 CPU cores) it
cut single-query latency from 7-8 ms to under 3 ms for about half a point of accuracy; the
support benchmark measures both, so check the cost on your own data before serving it.
ONNX Runtime runs single queries fastest on one intra-op thread (the second core's wake-up
costs more than it saves on 20-token inputs) and batches faster on two: `threads` chooses.
Leaves out: static (calibrated) quantisation, fp16, graph pre-processing.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from core.models.classifier import load_classifier
from core.models.onnx_runtime import INT8_FILE, ONNX_FILE
from core.models.predictor import model_dir


class _Graph(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        emb = self.model.embed(input_ids, attention_mask)
        return self.model.head(emb), emb


def export_onnx(model, path: Path) -> Path:
    """Write `model` (a core.models.classifier.TextClassifier, LoRA merged) to an ONNX file."""
    if hasattr(model.encoder, "merge_and_unload"):
        model.encoder = model.encoder.merge_and_unload()
    model.eval()
    sample = model.tokenize(["an example sentence for export", "hi"])
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length")
    torch.onnx.export(_Graph(model).eval(), (sample["input_ids"], sample["attention_mask"]), str(path),
                      input_names=["input_ids", "attention_mask"],
                      output_names=["logits", "sentence_embedding"],
                      dynamic_shapes={"input_ids": {0: batch, 1: length},
                                      "attention_mask": {0: batch, 1: length}},
                      dynamo=True)
    return Path(path)


def onnx_size(path: Path) -> int:
    """Bytes of an exported model on disk: the graph file plus every external-data file it
    references (the dynamo exporter writes the weights to `model.onnx.data` beside the graph, so
    the graph's own size can be a small fraction of the model)."""
    import onnx  # lazy: an optional extra ([serve])
    from onnx.external_data_helper import uses_external_data  # lazy: an optional extra ([serve])

    path = Path(path)
    graph = onnx.load(str(path), load_external_data=False).graph  # weights are initializers
    locations = {entry.value for tensor in graph.initializer if uses_external_data(tensor)
                 for entry in tensor.external_data if entry.key == "location"}
    return path.stat().st_size + sum((path.parent / name).stat().st_size for name in sorted(locations))


def quantize_int8(onnx_path: Path, out_path: Path) -> Path:
    """Dynamic int8 quantisation of an exported model (weights int8, activations per batch)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # lazy: an optional extra ([serve])

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its pre-processing hint goes to the root logger; restored below
    try:
        quantize_dynamic(str(onnx_path), str(out_path), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return Path(out_path)


def export_run_onnx(path: Path, *, int8: bool = False) -> list[Path]:
    """Export the classifier of a run (or its model/ folder) beside its weights: model.onnx, and
    with `int8` also model.int8.onnx; returns the files written, fp32 first."""
    directory = model_dir(path)
    written = [export_onnx(load_classifier(directory), directory / ONNX_FILE)]
    if int8:
        written.append(quantize_int8(written[0], directory / INT8_FILE))
    return written
