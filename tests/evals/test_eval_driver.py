"""Evaluators in a training run and in `python -m vit_jax.evaluate` (end to end)."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests import helpers
from vit_jax.driver import train
from vit_jax.errors import UserError
from vit_jax.evals import cli

pytestmark = pytest.mark.slow

EVAL_CONFIG = "tests/evals/tiny_evals_config.py"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, digits_data_dir):
  """A 12-step tiny digits run with a kNN evaluator every 6 steps and 5-shot at the end."""
  workdir = str(tmp_path_factory.mktemp("evals") / "run")
  config = helpers.tiny_config(digits_data_dir, total_steps=12, eval_every_steps=0,
                               **{"checkpoint.every_steps": 12})
  config.evals.knn = dict(type="knn", ks=(5,), every_steps=6)
  config.evals.fewshot = dict(type="fewshot", shots=(5,), seeds=2)
  config.evals.standalone = dict(type="knn", in_training=False)
  results = train.train_and_evaluate(config, workdir)
  return workdir, results


def test_training_runs_each_evaluator_at_its_cadence_beside_the_classification_keys(
    trained_run):
  workdir, results = trained_run
  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  assert set(saved) == {"top1", "top5", "loss", "num_examples", "step", "knn/top1_k5",
                        "knn/top5_k5", "fewshot/5shot_top1", "fewshot/5shot_top1_std"}
  assert saved["num_examples"] == 360 and saved["step"] == 12
  lines = helpers.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  assert [x["step"] for x in lines if "eval_knn/top1_k5" in x] == [6, 12]
  assert [x["step"] for x in lines if "eval_fewshot/5shot_top1" in x] == [12]
  # The default classification runs whenever any evaluator does (checkpoint selection).
  assert [x["step"] for x in lines if "eval_top1" in x] == [6, 12]
  assert not os.path.exists(os.path.join(workdir, "feature_cache"))  # training: in memory


def _evaluate(workdir, data_dir, *flags):
  cmd = [sys.executable, "-m", "vit_jax.evaluate", "--config", EVAL_CONFIG, "--workdir",
         str(workdir), "--compilation_cache=", *flags]
  return subprocess.run(cmd, cwd=helpers.REPO, env=helpers.subprocess_env(8, data_dir),
                        capture_output=True, text=True, timeout=300)


def test_standalone_command_evaluates_a_run_reuses_its_features_and_refuses_bad_input(
    trained_run, digits_data_dir, tmp_path):
  run, _ = trained_run
  out = tmp_path / "eval"
  proc = _evaluate(out, digits_data_dir, f"--source={run}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(out / "eval_results.json") as f:
    first = json.load(f)
  assert {"knn/top1_k20", "linear/top1", "fewshot/5shot_top1"} <= set(first)
  assert first["details"]["linear"]["best_features"] in ("cls", "cls_last2")
  assert "knn        top1_k20" in proc.stdout  # the table
  cached = sorted(os.listdir(out / "feature_cache"))
  assert "Extracting" in proc.stderr
  # Again: every feature comes from the cache, the same figures.
  again = _evaluate(out, digits_data_dir, f"--source={run}")
  assert again.returncode == 0 and "Extracting" not in again.stderr
  with open(out / "eval_results.json") as f:
    assert json.load(f) == first
  assert sorted(os.listdir(out / "feature_cache")) == cached
  # Refused before anything is written: a bad option (one message, no traceback).
  bad = tmp_path / "bad"
  proc = _evaluate(bad, digits_data_dir, f"--source={run}", "--config.evals.knn.ks=(0,)")
  assert proc.returncode == 1 and "ks must be positive" in proc.stderr
  assert "Traceback" not in proc.stderr and not bad.exists()


def test_standalone_random_baseline_and_refusals_in_process(digits_data_dir, tmp_path):
  config = helpers.load_config(EVAL_CONFIG)
  config.data.data_dir = str(digits_data_dir)
  # The full-data linear path: augmented training batches through the frozen backbone.
  config.unlock()
  config.evals.stream = dict(type="linear", mode="on_the_fly", steps=30, features=("cls",),
                             learning_rates=(0.03, 0.3), batch_size_probe=64,
                             data=dict(train_split="train[10%:]", augment="rotate(8, fill=0)"),
                             val_split="train[:10%]")
  out = cli.evaluate(config, "random:ViT-Mu_2", str(tmp_path / "random"))
  assert {"knn/top1_k20", "linear/top1", "fewshot/5shot_top1", "stream/top1"} <= set(out)
  assert 0.15 < out["stream/top1"] <= 1.0 and out["details"]["stream"]["best_features"] == "cls"
  assert out["source"] == "random:ViT-Mu_2"
  for source, message in (("random:ViT-Nope_2", "ViT-Nope_2"),
                          (str(tmp_path / "missing"), "missing")):
    with pytest.raises(UserError, match=message):
      cli.evaluate(config, source, str(tmp_path / "refused"))
  assert not (tmp_path / "refused").exists()


def _two_processes(workdir, data_dir, *flags):
  """`python -m vit_jax.evaluate` as 2 processes x 2 CPU devices joined by jax.distributed."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  cmd = [sys.executable, "-m", "vit_jax.evaluate", "--config", EVAL_CONFIG, "--workdir",
         str(workdir), "--compilation_cache=", "--source=random:ViT-Mu_2", *flags]
  procs = [subprocess.Popen(cmd, cwd=helpers.REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=helpers.subprocess_env(
                                2, data_dir, VIT_JAX_COORDINATOR=f"127.0.0.1:{port}",
                                VIT_JAX_NUM_PROCESSES="2", VIT_JAX_PROCESS_ID=str(i)))
           for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return [err for _, err in outs]


def test_two_processes_extract_every_example_once_as_one_process_does(digits_data_dir,
                                                                      tmp_path):
  """Each process reads its share; the features gathered on both are one process's, in the
  same order, so the protocols that sample examples draw the same ones."""
  multi = tmp_path / "two"
  logs = _two_processes(multi, digits_data_dir, "--config.evals.knn.ks=(5,)")
  assert "Extracting" in logs[0]  # process 1 logs warnings only
  config = helpers.load_config(EVAL_CONFIG)
  config.data.data_dir = str(digits_data_dir)
  config.evals.knn.ks = (5,)
  single = cli.evaluate(config, "random:ViT-Mu_2", str(tmp_path / "one"))  # 8 devices
  with open(multi / cli.RESULTS_FILE) as f:
    results = json.load(f)
  for key in ("knn/top1_k5", "fewshot/1shot_top1", "fewshot/5shot_top1", "linear/top1"):
    assert results[key] == pytest.approx(single[key], abs=2 / 360), key

  def rows(directory):  # every cached feature file as (label, feature) rows, as stored
    out = {}
    for name in sorted(os.listdir(directory / "feature_cache")):
      if name.endswith(".npz"):
        with np.load(directory / "feature_cache" / name) as z:
          out[name] = np.concatenate([z["label"][:, None], z["features"]], axis=1)
    return out
  a, b = rows(multi), rows(tmp_path / "one")
  assert set(a) == set(b) and len(a) == 6  # (cls, cls_last2, pooled) x (train, test)
  for name in a:
    assert len(a[name]) in (1437, 360)
    np.testing.assert_allclose(a[name], b[name], atol=1e-5)
