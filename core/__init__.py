"""verticals core: the shared fine-tuning engine (backbones, data, models, training, evaluation,
cost ledger, run reports). It knows nothing about finance, support or movies; solutions build on it.

Imports here stay light on purpose: `verticals --help` must not pay for torch or transformers.
"""

__version__ = "0.1.0"
