"""Export: a run directory -> ONNX (fp32 / int8) or a transformers / sentence-transformers directory.

Owns: `onnx` (export_onnx, quantize_int8, export_run_onnx) and `hub` (export_hf, push_to_hub).
May import: every wing up to core.classify. A sibling of serving, mlops and plan: none imports another.
"""
