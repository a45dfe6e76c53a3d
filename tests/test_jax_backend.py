"""The JAX backend as a first-class path: DeltaActivation's hand-written gradient under JAX,
and a model trained by ``KERAS_BACKEND=jax python -m training.fit`` that TensorFlow loads and
the DeltaEngine runs with the same per-frame logits as JAX computed.

Each JAX part runs in a subprocess (Keras picks its backend once per process); this process
is TensorFlow's (tests/conftest.py). The data-parallel path is in tests/test_distribute.py.
"""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from backends import require_jax, run_jax
from fakes import make_fake_ucf101, write_video

GRADIENT_CHECK = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, keras, numpy as np
    assert keras.backend.backend() == "jax"
    from deltanet.delta_activation import DeltaActivation, _threshold_clip

    rng = np.random.default_rng(7)
    x = np.cumsum(rng.normal(0, 0.2, (2, 12, 5, 4, 3)), axis=1).astype("float32")
    x[:, :, 0, 0, :] = 0.0  # never changes
    x[:, 3] = x[:, 2]  # a repeated frame
    w = rng.normal(size=x.shape).astype("float32")
    out = {}
    for penalty in ("l1", "hoyer"):
        layer = DeltaActivation(mode="threshold", threshold=0.1, penalty_weight=1.5, cost_per_nonzero=2.0, penalty=penalty)
        layer.build(x.shape)
        theta = jnp.asarray(layer.threshold.value)

        def fused(x):  # what training runs: the known-length pass with the hand-written gradient
            y, l1, l2, _, count, _ = _threshold_clip(x, theta)
            return jnp.sum(y * w) + layer._penalty(l1, l2, count)

        def reference(x):  # autodiff of the general formulation (scan + straight-through + where)
            y, d = layer._threshold(x)
            return jnp.sum(y * w) + layer._penalty(jnp.sum(jnp.abs(d)), jnp.sum(jnp.square(d)), jnp.float32(d.size))

        g_fused = np.asarray(jax.jit(jax.grad(fused))(jnp.asarray(x)))
        g_ref = np.asarray(jax.grad(reference)(jnp.asarray(x)))
        np.testing.assert_allclose(np.asarray(fused(x)), np.asarray(reference(x)), rtol=1e-6)
        np.testing.assert_allclose(g_fused, g_ref, rtol=1e-5, atol=1e-6)
        out[penalty] = float(np.abs(g_fused - w).max())  # how much the penalty contributed
    print(json.dumps(out))
    """
)


def test_fused_threshold_gradient_under_jax_equals_autodiff_of_the_scan():
    require_jax()
    r = run_jax(GRADIENT_CHECK)
    contributed = json.loads(r.stdout.strip().splitlines()[-1])
    assert all(v > 1e-3 for v in contributed.values()), contributed  # the penalty's gradient is in it


FIT_AND_LOGITS = textwrap.dedent(
    """
    import sys
    import numpy as np
    from training import fit
    import deltanet
    assert fit.main(sys.argv[1:]) == 0
    out = sys.argv[sys.argv.index("--out") + 1]
    model = deltanet.load_model(out + "/model.keras")
    frames = np.load(out + "/../frames.npy")
    logits = deltanet.frame_logits_model(model).predict(frames[None].astype("float32"), verbose=0)[0]
    np.save(out + "/../jax_logits.npy", logits)
    """
)


@pytest.fixture(scope="module")
def noisy_ucf(tmp_path_factory):
    root = tmp_path_factory.mktemp("ucf")
    fake = make_fake_ucf101(root, groups=(1, 2, 3, 5), clips=2, frames=8, size=(32, 32))
    rng = np.random.default_rng(0)
    for rel, colour in sorted(fake.colors.items()):
        noise = rng.normal(0.0, 25.0, (8, 32, 32, 3))
        write_video(fake.disk_path(rel), np.clip(np.asarray(colour, np.float64) + noise, 0, 255).astype(np.uint8))
    return root


@pytest.mark.slow
def test_jax_fit_writes_a_model_that_tensorflow_loads_and_the_engine_runs(noisy_ucf, tmp_path):
    require_jax()
    import deltanet
    from streaming.convert import to_plan
    from streaming.engine import DeltaEngine

    rng = np.random.default_rng(1)
    frames = np.clip(rng.normal(128, 40, (1, 32, 32, 3)) + rng.normal(0, 4, (12, 32, 32, 3)), 0, 255).astype(np.uint8)
    np.save(tmp_path / "frames.npy", frames)
    out = tmp_path / "run"
    # batches of 6: 12 train, 6 val and 6 test videos, one batch shape, one XLA compilation per step kind
    args = ["--data", str(noisy_ucf), "--arch", "tiny", "--size", "32", "--frames", "4", "--stride", "1",
            "--batch-size", "6", "--epochs", "1", "--threshold", "0.02", "--frame-cache", "on", "--quiet",
            "--out", str(out)]  # fmt: skip
    run_jax(FIT_AND_LOGITS, *args, DELTANET_CACHE=str(tmp_path / "cache"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["epochs"] == 1 and 0.0 < metrics["mac_density"] < 1.0
    assert list((tmp_path / "cache" / "frames").glob("*.json")), "the JAX fit sampled from the frame cache"

    model = deltanet.load_model(out / "model.keras")  # under TensorFlow
    jax_logits = np.load(tmp_path / "jax_logits.npy")
    tf_logits = deltanet.frame_logits_model(model).predict(frames[None].astype("float32"), verbose=0)[0]
    engine_logits, _ = DeltaEngine(to_plan(model)).run(frames)
    scale = np.abs(jax_logits).max()
    assert np.abs(tf_logits - jax_logits).max() <= 1e-4 * scale
    assert np.abs(engine_logits - jax_logits).max() <= 1e-4 * scale
    assert (engine_logits.argmax(1) == jax_logits.argmax(1)).all()
