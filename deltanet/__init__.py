"""deltanet: train video CNNs for temporal sparsity and run them as delta networks.

The Keras parts are imported lazily so that ``deltanet.density`` (NumPy only) can be used by
the TensorFlow-free streaming runtime.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "DeltaActivation": "deltanet.delta_activation",
    "FrameWise": "deltanet.frame_wise",
    "TemporalMean": "deltanet.temporal_mean",
    "MinValue": "deltanet.constraints",
    "deltafy": "deltanet.deltafy",
    "UnsupportedLayerError": "deltanet.deltafy",
    "build_model": "deltanet.models",
    "clip_classifier": "deltanet.models",
    "frame_logits_model": "deltanet.models",
    "mobilenet_v2_frame_model": "deltanet.models",
    "model_info": "deltanet.models",
    "per_frame_model": "deltanet.models",
    "load_model": "deltanet.saving",
    "delta_layers": "deltanet.measure",
    "measure_model": "deltanet.measure",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'deltanet' has no attribute {name!r}")
