"""Text classification: the recipe schema, the training step, few-shot, the modes, and the
evaluations a classification run directory holds.

Owns: `config` (RecipeConfig and its sections), `train` (fit: the classification step on the
engine), `fewshot` (the contrastive phase), `recipes` (probe / finetune / fewshot / zeroshot),
`scoring` (evaluate_trained, evaluate_run, predict_texts).
May import: every wing below it (foundation up to runs). Never export, serving, mlops or plan.
"""
