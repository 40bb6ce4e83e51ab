"""Benchmarks: one script per question; each writes a JSON record to benchmarks/results/.
Run from the repository root, e.g. `python -m benchmarks.banking77`."""
