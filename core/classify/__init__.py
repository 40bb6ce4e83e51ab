"""Text classification: the recipe schema, the training step, few-shot, the modes, and the
evaluations a classification run directory holds.

Owns: `config` (RecipeConfig and its sections), `run_data` (the splits a run learns from),
`train` (fit: the classification step on the engine), `fewshot` (the contrastive phase),
`recipes` (probe / finetune / fewshot / zeroshot), `finish` (confidence, the saved model, the
report), `scoring` (evaluate_trained, evaluate_run, predict_texts), `report` and `card` (the
classification sections of report.md and the model card: CLASSIFICATION_REPORT).
May import: every wing below it (foundation up to runs). Never export, serving, mlops or plan.
"""
