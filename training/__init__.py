"""Training side of deltanet: data sources, clip decoding, tf.data pipelines and models.

Kept free of imports on purpose: ``training.video`` and ``training.synthetic`` must be
usable (by data tools, tests and the streaming runtime) without loading TensorFlow.
"""
