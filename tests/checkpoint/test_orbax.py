"""Orbax training checkpoints, saved exactly as the training driver saves them."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from vit_jax import checkpoint, models
from vit_jax.checkpoint import tree as tree_lib


def _train_state(params, step):
  return {"params": params, "opt_state": optax.adam(1e-3).init(params), "step": step,
          "rng": jax.random.key(step)}


def shard_over_devices(params):
  """Leaves split over all devices on their first axis when it divides, else replicated."""
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  def put(x):
    spec = (jax.sharding.PartitionSpec("data") if x.ndim and x.shape[0] % len(jax.devices()) == 0
            else jax.sharding.PartitionSpec())
    return jax.device_put(x, jax.sharding.NamedSharding(mesh, spec))
  return jax.tree.map(put, params)


def save_training_run(workdir, steps_and_params):
  """The driver's contract: CheckpointManager(workdir/checkpoints), item "state"."""
  with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as manager:
    for step, params in steps_and_params:
      manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(_train_state(params, step))))
    manager.wait_until_finished()


def init_params(scan_layers=False, seed=0):
  model = models.create_model("ViT-Mu_4", num_classes=10, scan_layers=scan_layers)
  return model.init(jax.random.key(seed), jnp.zeros((1, 16, 16, 3)))["params"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A workdir with steps 100 and 200 (different params), scanned, sharded over 8 devices."""
  workdir = str(tmp_path_factory.mktemp("workdir"))
  old, new = init_params(True, seed=1), init_params(True, seed=2)
  save_training_run(workdir, [(100, shard_over_devices(old)), (200, shard_over_devices(new))])
  return workdir, new


@pytest.mark.parametrize("where", ["workdir", "checkpoints", "step", "item"])
def test_orbax_paths_restore_latest_params_as_numpy(run, where):
  workdir, latest = run
  path = {"workdir": workdir, "checkpoints": f"{workdir}/checkpoints",
          "step": f"{workdir}/checkpoints/200", "item": f"{workdir}/checkpoints/200/state"}[where]
  params, fmt = checkpoint.load_with_format(path)
  assert fmt == "orbax"
  flat = tree_lib.flatten(params)
  expected = tree_lib.flatten(models.unstack_layers(jax.device_get(latest)))
  assert flat.keys() == expected.keys()  # params only, per-layer layout
  for key, value in flat.items():
    assert type(value) is np.ndarray, key
    np.testing.assert_array_equal(value, expected[key])


def test_orbax_older_step_by_path(run):
  workdir, _ = run
  params = checkpoint.load(f"{workdir}/checkpoints/100")
  expected = models.unstack_layers(jax.device_get(init_params(True, seed=1)))
  np.testing.assert_array_equal(params["embedding"]["kernel"], expected["embedding"]["kernel"])


def test_orbax_per_layer_checkpoint_into_scanned_model(tmp_path):
  params = init_params(scan_layers=False, seed=3)
  save_training_run(str(tmp_path), [(1, params)])
  restored = checkpoint.load(str(tmp_path))
  target = jax.eval_shape(lambda: init_params(scan_layers=True))
  fitted, report = checkpoint.adapt(restored, target, strict=True, log=False)
  assert models.is_stacked(fitted)
  np.testing.assert_array_equal(
      fitted["Transformer"]["encoderblock"]["MlpBlock_0"]["Dense_0"]["kernel"][1],
      params["Transformer"]["encoderblock_1"]["MlpBlock_0"]["Dense_0"]["kernel"])
  assert report.reshaped == [] and report.reinitialised == []
  assert any("stacked 2 layers" in note for note in report.notes)


def test_not_an_orbax_directory(tmp_path):
  (tmp_path / "notes.txt").write_text("hello")
  with pytest.raises(checkpoint.CheckpointError, match="not an Orbax checkpoint"):
    checkpoint.load(str(tmp_path))


def test_orbax_item_without_params(tmp_path):
  with ocp.CheckpointManager(str(tmp_path / "checkpoints")) as manager:
    manager.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave({"step": 1})))
  with pytest.raises(checkpoint.CheckpointError, match="no `params` entry"):
    checkpoint.load(str(tmp_path))
