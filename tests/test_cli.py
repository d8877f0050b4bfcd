"""The command line as a user meets it: `python -m vit_jax.main|predict|visualize|convert`
as subprocesses, asserting exit codes, messages and what is left in the workdir."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.helpers import REPO, main_command, run_main, subprocess_env

pytestmark = pytest.mark.slow  # every test here starts python -m vit_jax.* processes

SHORT = ["--config.total_steps=8", "--config.checkpoint.every_steps=4",
         "--config.eval_every_steps=0"]


def snapshot(workdir):
  """Every file under `workdir` (not TensorBoard's) -> the SHA-256 of its bytes."""
  out = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(root, name)
      if "tensorboard" not in path:
        with open(path, "rb") as f:
          out[os.path.relpath(path, workdir)] = hashlib.sha256(f.read()).hexdigest()
  return out


def assert_one_message_block(proc, *fragments):
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert "error: " in proc.stderr
  for fragment in fragments:
    assert fragment in proc.stderr, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_data_dir):
  """A tiny digits run of 8 steps (checkpoints 4 and 8), shared by the tests below."""
  workdir = tmp_path_factory.mktemp("cli") / "run"
  proc = run_main(workdir, digits_data_dir, *SHORT, devices=1)
  # Not a terminal: one plain line per logged step instead of a progress bar.
  assert "\r" not in proc.stderr
  assert "step 8/8  loss " in proc.stderr and "images/s  ETA " in proc.stderr
  return workdir


def test_a_resume_that_changes_the_model_is_refused_and_changes_nothing(
    trained, digits_data_dir, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(trained, workdir)
  before = snapshot(workdir)
  proc = run_main(workdir, digits_data_dir, *SHORT, "--config.model_name=ViT-Mu_4",
                  devices=1, check=False)
  assert_one_message_block(proc, "holds checkpoints of another run",
                           "model_name: 'ViT-Mu_2' -> 'ViT-Mu_4'",
                           f"--config.init_from.path={workdir}", "Nothing in the workdir")
  assert "Event loop is closed" not in proc.stderr
  assert snapshot(workdir) == before
  # The shape of the saved training state is checked too (SGD keeps one moment, Adam two).
  proc = run_main(workdir, digits_data_dir, *SHORT, "--config.optimizer.name=sgd",
                  devices=1, check=False)
  assert_one_message_block(proc, "optimizer.name: 'adamw' -> 'sgd'", "the training state")
  assert snapshot(workdir) == before
  # The workdir still predicts (its config.json still matches its checkpoints).
  image = tmp_path / "seven.png"
  Image.fromarray(np.full((8, 8), 200, np.uint8)).save(image)
  predicted = subprocess.run([sys.executable, "-m", "vit_jax.predict", "--workdir",
                              str(workdir), "--input", str(image)], cwd=REPO,
                             env=subprocess_env(1), capture_output=True, text=True)
  assert predicted.returncode == 0, predicted.stderr[-2000:]


def test_a_resume_may_train_longer_and_keeps_a_history(trained, digits_data_dir, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(trained, workdir)
  proc = run_main(workdir, digits_data_dir, *SHORT, "--config.total_steps=12", devices=1)
  assert "Restored step 8" in proc.stderr
  assert "changed settings" in proc.stderr and "total_steps: 8 -> 12" in proc.stderr
  with open(workdir / "config.json") as f:
    saved = json.load(f)
  assert saved["config"]["total_steps"] == 12
  assert [h["start_step"] for h in saved["history"]] == [0, 8]
  assert [h["config"]["total_steps"] for h in saved["history"]] == [8, 12]
  # Once finished, a restart says so in one line and evaluates the last checkpoint.
  proc = run_main(workdir, digits_data_dir, *SHORT, "--config.total_steps=12", devices=1)
  assert "already finished (step 12 of total_steps=12)" in proc.stderr


def test_model_options_are_settable_on_any_config(tmp_path, digits_data_dir):
  # stochastic_depth and classifier are set by no config file.
  workdir = tmp_path / "gap"
  run_main(workdir, digits_data_dir, "--config.total_steps=2", "--config.eval_every_steps=0",
           "--config.lr.warmup_steps=1", "--config.model.stochastic_depth=0.1",
           "--config.model.classifier=gap", devices=1)
  with open(workdir / "config.json") as f:
    model = json.load(f)["config"]["model"]
  assert model["stochastic_depth"] == 0.1 and model["classifier"] == "gap"
  from tests.helpers import restore_params
  assert "cls" not in restore_params(workdir, 2)  # gap pooling: the model has no cls token
  # The type is checked, and a misspelled option gets a "did you mean".
  bad = run_main(tmp_path / "bad", digits_data_dir, "--config.model.stochastic_depth=lots",
                 devices=1, check=False)
  assert bad.returncode == 1 and "could not convert string to float: 'lots'" in bad.stderr
  bad = run_main(tmp_path / "bad", digits_data_dir, "--config.model.stochastic_deph=0.1",
                 devices=1, check=False)
  assert_one_message_block(bad, "unknown config key 'model.stochastic_deph' (did you mean "
                           "'model.stochastic_depth'?)")
  bad = run_main(tmp_path / "bad", digits_data_dir, "--config.model.variant=factorised_encoder",
                 devices=1, check=False)
  assert_one_message_block(bad, "VisionTransformer has no option(s) ['variant']")
  assert not (tmp_path / "bad").exists()


def test_errors_are_one_message_and_verbose_shows_the_traceback(tmp_path, digits_data_dir):
  proc = run_main(tmp_path / "w", digits_data_dir, "--config.optimizer.name=adam",
                  devices=1, check=False)
  assert_one_message_block(proc, "optimizer.name must be one of ('sgd', 'adamw')")
  assert len(proc.stderr.strip().splitlines()) <= 4
  verbose = run_main(tmp_path / "w", digits_data_dir, "--config.optimizer.name=adam",
                     "--verbose", devices=1, check=False)
  assert verbose.returncode != 0 and "Traceback" in verbose.stderr
  assert not (tmp_path / "w").exists()


def test_a_shorter_run_names_the_warmup_override(tmp_path):
  # configs/vit_digits.py warms up for 100 steps.
  proc = subprocess.run(main_command(tmp_path / "w", "--config.total_steps=50",
                                     config="configs/vit_digits.py"),
                        cwd=REPO, env=subprocess_env(1), capture_output=True, text=True)
  assert_one_message_block(proc, "lr.warmup_steps=100", "total_steps=50",
                           "--config.lr.warmup_steps=N")


def test_eval_of_an_empty_workdir_leaves_nothing(tmp_path, digits_data_dir):
  workdir = tmp_path / "empty"
  workdir.mkdir()
  proc = run_main(workdir, digits_data_dir, "--mode=eval", devices=1, check=False)
  assert_one_message_block(proc, "No checkpoint in", "train first")
  assert os.listdir(workdir) == []


def test_nan_says_when_it_was_detected(tmp_path, digits_data_dir):
  proc = run_main(tmp_path / "nan", digits_data_dir, "--config.lr.base=1e38",
                  "--config.lr.schedule=constant", "--config.lr.warmup_steps=2",
                  "--config.grad_clip_norm=0", "--config.optimizer.name=sgd",
                  "--config.log_every_steps=4", "--config.checkpoint.every_steps=2",
                  devices=1, check=False)
  assert_one_message_block(proc, "(checked every 4 steps and at checkpoints", "last good checkpoint:")
  assert re.search(r"became (nan|inf): detected at step \d+ ", proc.stderr)


def test_predict_and_visualize_skip_a_file_that_does_not_decode(trained, tmp_path):
  good, bad = tmp_path / "good.png", tmp_path / "broken.png"
  Image.fromarray(np.full((8, 8), 90, np.uint8)).save(good)
  bad.write_bytes(b"not a png")
  env = subprocess_env(1)
  proc = subprocess.run([sys.executable, "-m", "vit_jax.predict", "--workdir", str(trained),
                         "--input", str(bad), str(good), "--json"], cwd=REPO, env=env,
                        capture_output=True, text=True)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert f"skipped {bad}: it does not decode" in proc.stderr
  printed = [json.loads(line) for line in proc.stdout.splitlines()]
  assert [p["path"] for p in printed] == [str(good)] and len(printed[0]["top_k"]) == 5
  proc = subprocess.run([sys.executable, "-m", "vit_jax.visualize", "--workdir", str(trained),
                         "--input", str(bad), str(good), "--out", str(tmp_path / "figs")],
                        cwd=REPO, env=env, capture_output=True, text=True)
  assert proc.returncode == 1 and f"skipped {bad}" in proc.stderr
  assert sorted(os.listdir(tmp_path / "figs")) == ["good_heads.png", "good_rollout.png"]


def test_convert_refuses_an_existing_destination(trained, tmp_path):
  env = subprocess_env(1)
  convert = lambda *args: subprocess.run([sys.executable, "-m", "vit_jax.convert", *args],
                                         cwd=REPO, env=env, capture_output=True, text=True)
  dst = tmp_path / "item"
  assert convert(str(trained), str(dst), "--format", "orbax").returncode == 0
  before = snapshot(dst)
  proc = convert(str(trained), str(dst), "--format", "orbax")
  assert_one_message_block(proc, "already exists: pass --overwrite")
  assert snapshot(dst) == before
  proc = convert(str(trained), str(dst), "--format", "orbax", "--overwrite")
  assert proc.returncode == 0, proc.stderr[-2000:]


def test_eval_of_a_checkpoint_keeps_its_head(trained, digits_data_dir, tmp_path):
  # configs/vit_digits_finetune.py sets init_from.reset_head for fine-tuning; evaluating a
  # file must still score that file's own head, not a zero one.
  workdir = tmp_path / "eval"
  run_main(workdir, digits_data_dir, "--mode=eval", "--checkpoint", str(trained / "checkpoints"),
           "--config.init_from.reset_head=True", devices=1)
  with open(workdir / "eval_results.json") as f, open(trained / "results.json") as g:
    scored, expected = json.load(f), json.load(g)
  assert scored["top1"] == pytest.approx(expected["top1"], abs=1e-9)
  assert scored["loss"] == pytest.approx(expected["loss"], rel=1e-5)
