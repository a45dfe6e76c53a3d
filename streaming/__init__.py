"""Streaming: frame sources and the delta-inference runtime for live video.

Import submodules explicitly (``from streaming.sources import open_source``). This
package must stay light: it never imports TensorFlow or Keras, so a camera demo
starts fast and runs on machines without them.
"""
