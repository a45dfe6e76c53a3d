"""``training.distribute.build_before_tracing``: one trace of the training step, same training."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from training.distribute import build_before_tracing  # noqa: E402


def _model_and_data():
    keras.utils.set_random_seed(0)
    inp = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu")(inp)
    h = keras.layers.Dropout(0.2)(h)
    out = keras.layers.Dense(3)(h)
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    rng = np.random.default_rng(0)
    ds = tf.data.Dataset.from_tensor_slices((rng.normal(size=(32, 6)).astype("float32"), rng.integers(0, 3, 32))).batch(8)
    return model, ds


def _fit_counting_traces(prebuild: bool):
    model, ds = _model_and_data()
    if prebuild:
        build_before_tracing(model)
    traces = []
    step = model.train_step

    def counted(data):
        traces.append(1)  # runs only while tf.function traces
        return step(data)

    model.train_step = counted
    history = model.fit(ds, validation_data=ds, epochs=3, verbose=0).history
    return len(traces), history, [w.numpy() for w in model.weights]


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow trainer behaviour")
def test_the_step_is_traced_once_and_trains_exactly_as_before():
    traces_before, history_before, weights_before = _fit_counting_traces(prebuild=False)
    traces, history, weights = _fit_counting_traces(prebuild=True)
    assert traces == 1
    assert traces_before >= traces  # Keras' own order traces the step twice (the variables are made in the first trace)
    assert history.keys() == history_before.keys()
    for key in history:
        np.testing.assert_allclose(history[key], history_before[key], rtol=1e-6, err_msg=key)
    for a, b in zip(weights, weights_before):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
