"""Data: dataset cards, the data root, verified files, readers, splits, label maps, and seeded noise.

Owns: `catalog` (cards -> files -> ClassificationData; readers by card format; write_labelled_csv),
`splits` (Split, ClassificationData, LabelMap, stratified and out-of-scope splits), `perturb`
(typing noise for robustness evaluation).
May import: core.foundation.
"""
