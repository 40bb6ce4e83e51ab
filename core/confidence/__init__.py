"""Confidence: temperature scaling, calibration error, and out-of-scope scorers with their threshold.

Owns: `calibrate` (softmax, fit_temperature, ECE, the reliability plot) and `ood` (the scorers,
OutOfScopeDetector, AUROC). Arrays in, arrays out: nothing here holds a model.
May import: core.foundation.
"""
