"""The loop after deployment: the prediction log and feedback, the model registry, safe retraining.

Owns: `feedback` (PredictionLog), `registry` (ModelRegistry: versions, champion, promote,
rollback), `retrain` (challenger from feedback + the promotion gate), `selection` (active learning:
which unlabelled texts to label next).
May import: every wing up to core.classify. A sibling of export, serving and plan.
"""
