"""The loop after deployment: the prediction log and feedback, the model registry, safe retraining.

Owns: `feedback` (PredictionLog: the SQLite prediction log and the rules every log keeps),
`feedback_postgres` (PostgresPredictionLog: one log several service replicas share),
`prediction_logs` (open_prediction_log: a path or a postgresql:// URL -> the log), `registry`
(ModelRegistry: versions, champion, promote, rollback), `retrain` (challenger from feedback + the promotion gate), `selection` (active learning:
which unlabelled texts to label next).
May import: every wing up to core.classify. A sibling of export, serving and plan.
"""
