"""Multi-host correctness: 2 processes x 2 CPU devices against 1 process x 4 devices.

The multi-process runs go through launch/multiprocess_local.sh, the script users run:
separate `python -m vit_jax.main` processes joined by jax.distributed on 127.0.0.1, each
reading its own shards of the data, exchanging gradients through gloo and writing its own
part of every Orbax checkpoint. The mesh is (data=1, fsdp=4), so every parameter is split
across the two processes and a checkpoint is only complete with both processes' parts.

`data.train_shards=2` makes the training batches independent of the process count, so
both layouts must train identically up to float summation order.
"""

import json
import os
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from tests.test_train import read_jsonl, run_main
from vit_jax import data
from vit_jax.driver import checkpointer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(REPO, "launch", "multiprocess_local.sh")
FLAGS = ["--config.mesh.fsdp=4", "--config.data.train_shards=2"]

# Loaded by every process through PYTHONPATH: process 1 alone receives SIGTERM right
# after its first checkpoint (step 12), as when one host of a slice is preempted. Both
# processes must agree to stop at the next logging step (16) and save it together.
SIGTERM_PROCESS_1 = textwrap.dedent("""
    import os, signal
    if os.environ.get("VIT_JAX_PROCESS_ID") == "1":
      from vit_jax import data
      from vit_jax.driver import checkpointer
      _save = checkpointer.Checkpointer.save

      def save_then_sigterm(self, *args, **kwargs):
        _save(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)

      checkpointer.Checkpointer.save = save_then_sigterm
""")


def launch(workdir, data_dir, *flags, pythonpath=None, timeout=420, check=True):
  env = dict(os.environ, VIT_JAX_DATA_DIR=str(data_dir), PYTHON=sys.executable, KILL_GRACE_S="5")
  env.pop("XLA_FLAGS", None)  # the launcher sets each process's device count
  if pythonpath:
    env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), REPO])
  cmd = [LAUNCHER, "2", "2", "--", "--config", "tests/tiny_digits_config.py",
         "--workdir", str(workdir), "--compilation_cache=", *FLAGS, *flags]
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
  if check:
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
  return proc


def restore_params(workdir, step):
  """Parameters of a checkpoint written by any topology, restored onto one local device."""
  mngr = ocp.CheckpointManager(
      os.path.join(workdir, "checkpoints"), item_names=(checkpointer.ITEM,),
      item_handlers={checkpointer.ITEM: ocp.StandardCheckpointHandler()})
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                        mngr.item_metadata(step)[checkpointer.ITEM])
  restored = mngr.restore(step, args=ocp.args.Composite(**{
      checkpointer.ITEM: ocp.args.StandardRestore(target)}))[checkpointer.ITEM]
  mngr.close()
  return restored["params"]


def written_by(workdir):
  """Files a run wrote outside its checkpoints (TensorBoard: the number of event files)."""
  files = sorted(p for p in os.listdir(workdir) if p not in ("checkpoints", "tensorboard"))
  return files, len(os.listdir(os.path.join(workdir, "tensorboard")))


def test_two_processes_train_resume_and_evaluate_like_one(tmp_path, digits_data_dir):
  single, multi = tmp_path / "one_process", tmp_path / "two_processes"
  run_main(single, digits_data_dir, *FLAGS, devices=4)

  hook = tmp_path / "hook"
  hook.mkdir()
  (hook / "sitecustomize.py").write_text(SIGTERM_PROCESS_1)
  out = launch(multi, digits_data_dir, pythonpath=hook).stdout
  assert "[p0] " in out and "[p1] " in out  # every line says which process wrote it
  assert "Process 1 of 2; 2 local / 4 global devices" in out
  assert "Preempted at step 16" in out
  assert sorted(int(s) for s in os.listdir(multi / "checkpoints") if s.isdigit()) == [12, 16]
  assert not (multi / "results.json").exists()

  # Every process wrote its part of the checkpoint (the parameters are split between
  # them), and together they restore, here in one process on one device.
  state_dir = multi / "checkpoints" / "16" / "state"
  for p in (0, 1):
    part = state_dir / f"ocdbt.process_{p}"
    assert part.is_dir() and any(files for _, _, files in os.walk(part)), part
    assert (state_dir / "array_metadatas" / f"process_{p}").exists()
  restored = restore_params(multi, 16)
  assert np.all(np.isfinite(restored["head"]["kernel"]))

  # Same workdir again: both processes resume from step 16 and finish.
  out = launch(multi, digits_data_dir).stdout
  assert "Restored step 16" in out

  # Process 0 alone wrote metrics and results, once per step; process 1 left nothing.
  assert written_by(multi) == (written_by(single)[0], 2)  # 2 runs -> 2 event files
  lines = read_jsonl(multi / "metrics.jsonl")
  train_steps = [x["step"] for x in lines if "loss" in x]
  eval_steps = [x["step"] for x in lines if "eval_top1" in x]
  assert train_steps == [4, 8, 12, 16, 20, 24] and eval_steps == [12, 24]

  # Same losses, same final parameters, same evaluation over every example once.
  single_lines = read_jsonl(single / "metrics.jsonl")
  losses = lambda ls: [x["loss"] for x in ls if "loss" in x]
  np.testing.assert_allclose(losses(lines), losses(single_lines), rtol=1e-4)
  a, b = restore_params(multi, 24), restore_params(single, 24)
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b),
                          strict=True):
    name = jax.tree_util.keystr(path)
    if "['key']['bias']" in name:
      # Its gradient is exactly zero (softmax ignores a shift shared by all keys), so
      # Adam turns float noise into lr-sized steps: it differs by summation order alone.
      continue
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4, err_msg=name)
  with open(multi / "results.json") as f, open(single / "results.json") as g:
    results, expected = json.load(f), json.load(g)
  assert results["num_examples"] == 360 and results["step"] == 24
  assert results == pytest.approx(expected, abs=2 / 360)



def test_launcher_stops_the_others_when_one_process_fails(tmp_path, digits_data_dir):
  # Process 1 dies at start-up; process 0 would wait for it in jax.distributed.initialize
  # (then in every collective) for minutes. The launcher must end it and report the failure.
  hook = tmp_path / "hook"
  hook.mkdir()
  (hook / "sitecustomize.py").write_text(
      "import os\nif os.environ.get('VIT_JAX_PROCESS_ID') == '1':\n  os._exit(3)\n")
  start = time.time()
  proc = launch(tmp_path / "run", digits_data_dir, pythonpath=hook, timeout=120, check=False)
  assert proc.returncode == 3, proc.stderr[-3000:]
  assert "[launch] process 1 exited with status 3; stopping the others." in proc.stderr
  assert time.time() - start < 90


def test_train_shards_must_split_processes_and_batch(digits_data_dir):
  c = data.default_config()
  c.dataset, c.data_dir, c.image_size, c.train_crop, c.flip = (
      "digits", str(digits_data_dir), 8, "resize", False)
  c.train_shards = 3
  sharding = NamedSharding(Mesh(np.asarray(jax.devices()), ("data",)), P("data"))
  with pytest.raises(ValueError, match=r"train_shards=3 must be a multiple of the 1 processes "
                     r"and divide the batch size 32"):
    data.train_iterator(c, global_batch_size=32, sharding=sharding, seed=0)
