"""Models: backbones, the one sentence encoder, the text classifier, zero-shot, the runtimes and the
Predictor contract that every consumer takes.

Owns: `backbones` (name -> tokenizer + encoder + pooling; the tiny test backbone), `encoder`
(texts -> pooled embeddings), `classifier` (TextClassifier, LoRA, save/load with safetensors),
`zeroshot`, `hf_modeling` (the transformers class copied into HF exports; imports nothing of
ours), `onnx_runtime` (the ONNX Runtime twin), `predictor` (Predictor, model_dir, load_run).
May import: core.foundation, core.data, core.confidence. Never the engine: models do not train.
"""
