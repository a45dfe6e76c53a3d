"""Loading deltanet models: registers the custom layers, then loads with Keras' safe mode."""

from __future__ import annotations

import os


def register_layers() -> None:
    """Import every module that registers a deltanet Keras class (idempotent)."""
    import deltanet.constraints  # noqa: F401
    import deltanet.delta_activation  # noqa: F401
    import deltanet.frame_wise  # noqa: F401
    import deltanet.temporal_mean  # noqa: F401


def load_model(path: str | os.PathLike, **kwargs):
    """``keras.saving.load_model`` with deltanet's layers registered.

    ``safe_mode`` stays at Keras' default (True): model files are data, never code, and no
    deltanet model needs a ``Lambda`` layer.
    """
    import keras

    register_layers()
    return keras.saving.load_model(path, **kwargs)
