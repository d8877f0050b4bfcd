"""The model, train step, optimizer, checkpoint and attention-map code runs without TensorFlow.

A GPU box that only benchmarks or serves a model often has no TensorFlow (it only feeds
the input pipeline). A child process whose import system refuses `tensorflow` and
`tensorflow_datasets` (and their submodules) as if they were not installed imports
those modules, runs a real computation through each, and runs
benchmarks/train_throughput.py and timm_compare.py's JAX workers; at the end neither
package may have been imported.
"""

import subprocess
import sys
import textwrap

from tests.helpers import REPO, subprocess_env

BLOCKER = textwrap.dedent("""
    import importlib.abc
    import sys

    BLOCKED = ("tensorflow", "tensorflow_datasets")

    class NoTensorFlow(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
          raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None

    sys.meta_path.insert(0, NoTensorFlow())
""")

COMPUTATION = textwrap.dedent("""
    import os
    import tempfile

    import jax
    import jax.numpy as jnp
    import numpy as np

    import vit_jax.models
    import vit_jax.driver.steps
    import vit_jax.driver.optim
    import vit_jax.checkpoint
    import vit_jax.tools.attention_maps
    from vit_jax.driver import config as config_lib

    model = vit_jax.models.create_model("ViT-Mu_2", num_classes=3)
    images = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3), minval=-1, maxval=1)
    params = model.init(jax.random.key(1), images)["params"]

    # One jitted train step of the driver, with its optimizer.
    c = config_lib.base_config()
    c.optimizer.name, c.optimizer.weight_decay, c.lr.base, c.total_steps = "adamw", 0.05, 1e-3, 10
    tx = vit_jax.driver.optim.create_optimizer(c, params)
    state = vit_jax.driver.steps.TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
        rng=jax.random.key_data(jax.random.key(2)))
    step = jax.jit(vit_jax.driver.steps.make_train_step(model, tx, c, 3))
    state, metrics = step(state, {"image": images, "label": jnp.arange(4) % 3})
    assert int(state.step) == 1 and np.isfinite(float(metrics["loss"])), metrics
    print("train step loss", float(metrics["loss"]))

    # Attention rollout of the trained parameters: a [B, 4, 4] map over the 2x2 patches.
    maps = vit_jax.tools.attention_maps.compute(model, state.params, images)
    assert maps.rollout.shape == (4, 4, 4) and np.all(maps.rollout.sum((1, 2)) <= 1 + 1e-5)
    print("rollout", maps.rollout.shape)

    # save_npz + load: the same arrays back.
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "mu.npz")
      vit_jax.checkpoint.save_npz(state.params, path)
      restored = vit_jax.checkpoint.load(path)
    jax.tree.map(np.testing.assert_array_equal, restored, jax.device_get(state.params))
    print("npz round trip", len(jax.tree.leaves(restored)), "arrays")
""")

# benchmarks/train_throughput.py as `python benchmarks/train_throughput.py ARGS` runs it
# (its folder first on sys.path, for `import timing`), on the smallest model and input.
# Its timing warms up for at least 10 s per measurement, to time a steady heap; the
# table, not the timing, is what is tested here, so the warm-up is cut to its 4 calls.
BENCHMARK = textwrap.dedent("""
    import runpy

    sys.path.insert(0, "benchmarks")
    import timing
    timing.WARMUP_SECONDS = 0.0
    sys.argv = ["benchmarks/train_throughput.py", "--models", "ViT-Mu_2", "--batch_size", "2",
                "--image_size", "8", "--steps", "1"]
    runpy.run_path("benchmarks/train_throughput.py", run_name="__main__")

    # timm_compare's two JAX measurements (library API, driver step), as its workers run them.
    import argparse, timm_compare
    timm_compare.MATMUL_N = 64
    args = argparse.Namespace(models="ViT-Mu_2", dtypes="float32", batch_size=2,
                              infer_batch_size=3, image_size=8, steps=1)
    lib, drv = timm_compare.jax_library_bench(args), timm_compare.jax_driver_bench(args)
    assert lib["train_img_s"] > 0 and lib["infer_img_s"] > 0 and lib["train_flops"] > 0, lib
    assert drv["train_img_s"] > 0, drv
    print("timm_compare jax workers", round(lib["train_img_s"]), round(drv["train_img_s"]))
""")

CHECK = textwrap.dedent("""
    imported = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
    assert not imported, imported
    print("no tensorflow imported")
""")


def test_models_steps_checkpoint_attention_maps_and_benchmark_without_tensorflow():
  script = BLOCKER + COMPUTATION + BENCHMARK + CHECK
  proc = subprocess.run([sys.executable, "-c", script], cwd=REPO,
                        env=subprocess_env(devices=None), capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
  out = proc.stdout
  for line in ("train step loss", "rollout (4, 4, 4)", "npz round trip",
               "no tensorflow imported"):
    assert line in out, out
  # The benchmark's table: its header and one row for the model.
  assert "train img/s" in out and "infer img/s" in out and "GFLOPs/img" in out, out
  rows = [line for line in out.splitlines() if line.startswith("ViT-Mu_2 ")]
  assert len(rows) == 1 and rows[0].split()[1:4] == ["plain", "float32", "xla"], out
