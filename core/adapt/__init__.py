"""Self-supervised domain adaptation of a backbone: masked-language-model and SimCSE.

Owns: `mlm` (adapt_backbone) and `simcse` (simcse_adapt); both write a backbone directory any
recipe takes as `backbone=<dir>`.
May import: every wing below core.runs, and core.runs.
"""
