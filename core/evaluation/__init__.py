"""Evaluation: classification metrics and plots, and drift of live traffic against a run's baseline.

Owns: `metrics` (pure metric functions, ClassificationEvaluator, loss-curve and confusion plots),
`drift` (PSI, domain AUC, MMD, label shift; DriftBaseline; DriftWindow), `drift_report` (the
comparison, plot and table any solution's records feed).
May import: core.foundation, core.data, core.confidence, core.models.
"""
