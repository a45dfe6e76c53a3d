"""Weight constraints used by deltanet layers."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="deltanet")
class MinValue(keras.constraints.Constraint):
    """Clips a weight from below, e.g. to keep a quantization step strictly positive.

    Args:
        min_value: the smallest value the weight may take. Defaults to ``1e-4``.
    """

    def __init__(self, min_value: float = 1e-4):
        self.min_value = float(min_value)

    def __call__(self, w):
        return keras.ops.maximum(w, keras.ops.cast(self.min_value, w.dtype))

    def get_config(self):
        return {"min_value": self.min_value}
