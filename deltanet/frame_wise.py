"""``FrameWise``: apply a per-frame layer to every frame of a clip."""

from __future__ import annotations

import inspect

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="deltanet")
class FrameWise(keras.layers.Wrapper):
    """Apply a per-frame layer to each frame of a clip ``(batch, time, ...)``.

    Unlike ``keras.layers.TimeDistributed`` (which, in Keras 3, calls the layer once per
    time step), this folds time into the batch axis and calls the layer once, so
    ``BatchNormalization`` sees the statistics of all frames and the graph stays small.
    The wrapped layer (and its weights) is shared with whatever else uses it.

    Args:
        layer: a Keras layer that takes one frame batch ``(batch, ...)``.
        **kwargs: base ``Layer`` arguments.

    Input shape:
        ``(batch, time, ...frame_shape)``.

    Output shape:
        ``(batch, time, ...layer_output_shape)``.

    Example:

    >>> conv = keras.layers.Conv2D(4, 3)
    >>> FrameWise(conv)(np.zeros((2, 5, 8, 8, 3), "float32")).shape
    (2, 5, 6, 6, 4)
    """

    def __init__(self, layer, **kwargs):
        super().__init__(layer, **kwargs)
        self.supports_masking = False

    def build(self, input_shape):
        if len(input_shape) < 3:
            raise ValueError(f"FrameWise expects (batch, time, ...) inputs, received input_shape={input_shape}")
        if not self.layer.built:
            self.layer.build((None,) + tuple(input_shape[2:]))
        self.built = True

    def compute_output_shape(self, input_shape):
        inner = self.layer.compute_output_shape((None,) + tuple(input_shape[2:]))
        return tuple(input_shape[:2]) + tuple(inner[1:])

    def call(self, inputs, training=None):
        shape = ops.shape(inputs)
        frames = ops.reshape(inputs, (-1,) + tuple(inputs.shape[2:]))
        # (what Keras itself derives from the signature; its own flag for it is private)
        kwargs = {"training": training} if "training" in inspect.signature(self.layer.call).parameters else {}
        outputs = self.layer(frames, **kwargs)
        return ops.reshape(outputs, (shape[0], shape[1]) + tuple(outputs.shape[1:]))
