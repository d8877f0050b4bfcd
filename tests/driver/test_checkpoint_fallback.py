"""A damaged latest checkpoint: the run resumes from the newest intact step, deletes nothing.

Real Orbax checkpoints of the tiny digits run, damaged as a full disk or an interrupted
copy leaves them: the largest array file of the latest step deleted, or its `_METADATA`
and `manifest.ocdbt`.
"""

from __future__ import annotations

import os

import pytest

from tests.helpers import tiny_config
from vit_jax.driver import checkpointer, train
from vit_jax.errors import WorkdirError

pytestmark = pytest.mark.slow  # trains a tiny run in-process (~20-40 s with its fixture)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_data_dir):
  """12 steps, checkpoints at 6 and 12."""
  workdir = tmp_path_factory.mktemp("fallback") / "run"
  config = tiny_config(digits_data_dir, total_steps=12, **{
      "checkpoint.every_steps": 6, "eval_every_steps": 0, "log_every_steps": 6})
  train.train_and_evaluate(config, str(workdir))
  return config, workdir


def _copy(src, dst):
  import shutil  # noqa: PLC0415

  shutil.copytree(src, dst)
  return dst


def _largest_file(directory):
  files = [os.path.join(root, f) for root, _, names in os.walk(directory) for f in names]
  return max(files, key=os.path.getsize)


def _files(directory):
  return sorted(os.path.relpath(os.path.join(root, f), directory)
                for root, _, names in os.walk(directory) for f in names)


def _damage(step_dir, damage):
  if damage == "largest_file":
    os.remove(_largest_file(step_dir))
  else:
    for name in ("_METADATA", "manifest.ocdbt"):
      os.remove(step_dir / "state" / name)


def test_a_damaged_latest_step_falls_back_to_the_newest_intact_one(trained, tmp_path, caplog):
  config, source = trained
  workdir = _copy(source, tmp_path / "run")
  step_dir = workdir / "checkpoints" / "12"
  _damage(step_dir, "largest_file")
  kept = _files(step_dir)
  config = config.copy_and_resolve_references()
  config.total_steps = 14
  with caplog.at_level("WARNING"):
    results = train.train_and_evaluate(config, str(workdir))
  assert results["step"] == 14
  log = caplog.text
  assert f"The checkpoint of step 12 in {workdir}/checkpoints is damaged" in log
  assert "Resumed from step 6, the newest intact checkpoint; damaged: 12" in log
  # Nothing deleted: the damaged step is kept under another name, Orbax no longer lists it.
  assert _files(workdir / "checkpoints" / "12.damaged") == kept
  # Training wrote step 12 again and went on (checkpoint.keep=2 then dropped step 6).
  assert sorted(os.listdir(workdir / "checkpoints")) == ["12", "12.damaged", "14"]


def test_lost_metadata_falls_back_too(trained, tmp_path):
  # Without _METADATA and manifest.ocdbt Orbax used to report a misleading tree-structure
  # error about opt_state; the restore falls back instead.
  config, source = trained
  workdir = _copy(source, tmp_path / "run")
  _damage(workdir / "checkpoints" / "12", "metadata")
  setup = train.Setup(config, str(workdir))
  ckpt = checkpointer.Checkpointer(str(workdir))
  try:
    state = ckpt.restore_intact(setup.restore_target)
  finally:
    ckpt.close()
  assert int(state.step) == 6
  assert sorted(os.listdir(workdir / "checkpoints")) == ["12.damaged", "6"]


def test_evaluation_names_the_step_it_scores_and_refuses_when_nothing_restores(
    trained, tmp_path, caplog):
  config, source = trained
  with caplog.at_level("INFO"):
    results = train.evaluate(config, str(tmp_path / "eval"), str(source / "checkpoints"))
  assert results["step"] == 12
  assert f"Evaluating {source}/checkpoints (a run's checkpoint of step 12)." in caplog.text
  workdir = _copy(source, tmp_path / "run")
  for step in ("6", "12"):
    os.remove(_largest_file(workdir / "checkpoints" / step))
  with pytest.raises(WorkdirError, match=r"No checkpoint in .*checkpoints can be restored:\n"
                     r"  step 12: .*\n  step 6: .*\nMove the directory aside"):
    train.evaluate(config, str(workdir))
