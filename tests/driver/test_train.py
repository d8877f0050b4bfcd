"""End-to-end tests of the driver on the bundled digits data, with tiny models.

Runs that must be separate processes (kill and resume, SIGTERM, the command line,
other device counts) run `python -m vit_jax.main` or a short script in a subprocess.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import (
  REPO,
  logged,
  main_command,
  overrides_as_flags,
  read_jsonl,
  restore_params,
  run_main,
  subprocess_env,
  tiny_config,
)
from vit_jax import checkpoint, data, models
from vit_jax.driver import config as config_lib
from vit_jax.driver import optim, steps, train


@pytest.mark.slow
def test_train_end_to_end_writes_everything(tmp_path, digits_data_dir):
  workdir = tmp_path / "run"
  results = train.train_and_evaluate(tiny_config(digits_data_dir), str(workdir))
  assert set(results) >= {"top1", "top5", "loss", "num_examples", "step"}
  assert results["num_examples"] == 360 and results["step"] == 24
  assert results["top1"] > 0.2  # 24 steps of a 2-layer ViT: twice the 10% chance level
  assert results["top5"] >= results["top1"]
  with open(workdir / "results.json") as f:
    assert json.load(f) == pytest.approx(results)
  lines = read_jsonl(workdir / "metrics.jsonl")
  train_lines = [x for x in lines if "loss" in x]
  assert [x["step"] for x in train_lines] == [4, 8, 12, 16, 20, 24]
  assert train_lines[-1]["loss"] < train_lines[0]["loss"]
  assert "compile_seconds" in train_lines[0] and train_lines[0]["images_per_sec"] > 0
  assert [x["step"] for x in lines if "eval_top1" in x] == [12, 24]
  assert os.listdir(workdir / "tensorboard")
  with open(workdir / "config.json") as f:
    saved = json.load(f)
  assert saved["config"]["model_name"] == "ViT-Mu_2"
  assert saved["data_info"]["num_classes"] == 10
  assert sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit()) == [12, 24]

  # Evaluation mode scores the latest checkpoint and finds the same numbers.
  evaluated = train.evaluate(tiny_config(digits_data_dir), str(workdir))
  assert evaluated["top1"] == pytest.approx(results["top1"])
  assert evaluated["num_examples"] == 360 and evaluated["step"] == 24


@pytest.mark.slow
def test_fine_tune_at_a_new_resolution_from_a_run_and_eval_of_an_exported_file(
    tmp_path, digits_data_dir):
  pretrained = tmp_path / "pretrained"
  base = train.train_and_evaluate(tiny_config(digits_data_dir), str(pretrained))
  # 16x16 inputs: the 4x4 position-embedding grid is resized to 8x8, the head restarts.
  c = tiny_config(digits_data_dir, **{
      "data.image_size": 16, "total_steps": 12, "eval_every_steps": 0,
      "init_from.path": str(pretrained), "init_from.reset_head": True})
  tuned_dir = tmp_path / "tuned"
  setup = train.Setup(c, str(tuned_dir))
  params = jax.device_get(setup.pretrained_params(str(pretrained)))
  source = restore_params(pretrained, 24)
  assert params["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 65, 32)
  np.testing.assert_array_equal(params["Transformer"]["posembed_input"]["pos_embedding"][0, 0],
                                source["Transformer"]["posembed_input"]["pos_embedding"][0, 0])
  np.testing.assert_array_equal(params["Transformer"]["encoderblock_1"]["MlpBlock_0"]["Dense_0"]
                                ["kernel"], source["Transformer"]["encoderblock_1"]["MlpBlock_0"]
                                ["Dense_0"]["kernel"])
  assert not np.any(params["head"]["kernel"])  # reset_head
  tuned = train.train_and_evaluate(c, str(tuned_dir))
  # Its own step counter: 12 steps, not the pretrained run's 24 + 12.
  assert tuned["step"] == 12 and tuned["num_examples"] == 360
  assert tuned["top1"] > base["top1"] - 0.1  # started from the trained encoder

  # --mode=eval of an exported file gives the run's own numbers.
  exported = tmp_path / "tuned.npz"
  checkpoint.save_npz(restore_params(tuned_dir, 12), str(exported))
  scored = train.evaluate(tiny_config(digits_data_dir, **{"data.image_size": 16}),
                          str(tmp_path / "scoring"), checkpoint_path=str(exported))
  assert scored["top1"] == pytest.approx(tuned["top1"])
  assert scored["num_examples"] == 360


@pytest.mark.slow
def test_keeps_the_latest_and_the_best_checkpoint(tmp_path, digits_data_dir):
  c = tiny_config(digits_data_dir, **{"eval_every_steps": 4, "checkpoint.every_steps": 4,
                                      "checkpoint.keep": 1, "checkpoint.keep_best": 1,
                                      "total_steps": 16})
  train.train_and_evaluate(c, str(tmp_path))
  evals = {x["step"]: x["eval_top1"] for x in read_jsonl(tmp_path / "metrics.jsonl")
           if "eval_top1" in x}
  assert sorted(evals) == [4, 8, 12, 16]
  best = max(sorted(evals), key=lambda s: evals[s])  # earliest of ties, as kept first
  kept = {int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit()}
  assert 16 in kept and len(kept) <= 2
  assert any(evals[s] == evals[best] for s in kept)


def test_parameter_ema_follows_its_formula():
  model = models.create_model("ViT-Mu_2", num_classes=10)
  images = jax.random.uniform(jax.random.key(0), (8, 8, 8, 3), minval=-1, maxval=1)
  params = model.init(jax.random.key(1), images)["params"]
  c = config_lib.base_config()
  c.ema_decay, c.optimizer.name, c.lr.base, c.total_steps = 0.5, "sgd", 0.5, 10
  tx = optim.create_optimizer(c, params)
  state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                           rng=jax.random.key_data(jax.random.key(2)), ema_params=params)
  step_fn = jax.jit(steps.make_train_step(model, tx, c, 10))
  batch = {"image": images, "label": jnp.arange(8)}
  expected = params
  for _ in range(3):
    state, _ = step_fn(state, batch)
    expected = jax.tree.map(lambda e, p: 0.5 * e + 0.5 * p, expected, state.params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               state.ema_params, expected)
  assert not np.allclose(state.ema_params["head"]["kernel"], state.params["head"]["kernel"])


def test_gradient_accumulation_gives_the_full_batch_update():
  model = models.create_model("ViT-Mu_2", num_classes=10)
  images = jax.random.uniform(jax.random.key(0), (16, 8, 8, 3), minval=-1, maxval=1)
  labels = jnp.arange(16) % 10
  params = model.init(jax.random.key(1), images)["params"]
  results = {}
  for accum in (1, 4):
    c = config_lib.base_config()
    # SGD: the update is linear in the gradient, so float noise stays float noise (Adam's
    # first steps are ~sign(g) and would amplify 1e-9 differences on near-zero gradients).
    c.accum_steps, c.optimizer.name, c.lr.base, c.total_steps = accum, "sgd", 0.5, 10
    tx = optim.create_optimizer(c, params)
    state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                             opt_state=tx.init(params), rng=jax.random.key_data(jax.random.key(2)))
    step_fn = jax.jit(steps.make_train_step(model, tx, c, 10))
    for _ in range(3):
      state, metrics = step_fn(state, {"image": images, "label": labels})
    results[accum] = (state.params, metrics["loss"])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-6, rtol=1e-5),
               results[1][0], results[4][0])
  np.testing.assert_allclose(results[1][1], results[4][1], rtol=1e-5)


KILL_SCRIPT = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, "tests")
    from tiny_digits_config import get_config
    from vit_jax.driver import checkpointer, train
    original = checkpointer.Checkpointer.save

    def save_then_die(self, state, metrics=None, force=False):
      original(self, state, metrics, force)
      self.wait()
      os._exit(9)  # like SIGKILL right after the first checkpoint: no cleanup runs

    checkpointer.Checkpointer.save = save_then_die
    train.train_and_evaluate(get_config(), sys.argv[1])
""")


@pytest.mark.slow
def test_killed_run_resumes_to_identical_parameters(tmp_path, digits_data_dir):
  killed = tmp_path / "killed"
  proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(killed)], cwd=REPO,
                        env=subprocess_env(data_dir=digits_data_dir),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 9, proc.stderr[-3000:]
  assert sorted(os.listdir(killed / "checkpoints")) == ["12"]
  assert not (killed / "results.json").exists()

  resumed = run_main(killed, digits_data_dir)  # same workdir: resumes at step 12
  assert "Restored step 12" in resumed.stderr
  straight = tmp_path / "straight"
  run_main(straight, digits_data_dir)
  a, b = restore_params(killed, 24), restore_params(straight, 24)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  with open(killed / "results.json") as f, open(straight / "results.json") as g:
    assert json.load(f) == json.load(g)


@pytest.mark.slow
def test_one_and_eight_devices_give_the_same_loss_curve(tmp_path, digits_data_dir):
  flags = overrides_as_flags({"total_steps": 8, "eval_every_steps": 0,
                               "checkpoint.every_steps": 100})
  run_main(tmp_path / "one", digits_data_dir, *flags, devices=1)
  run_main(tmp_path / "eight", digits_data_dir, *flags, devices=8)
  one = logged(tmp_path / "one" / "metrics.jsonl", "loss")
  eight = logged(tmp_path / "eight" / "metrics.jsonl", "loss")
  assert len(one) == len(eight) == 2
  np.testing.assert_allclose(one, eight, rtol=1e-4)


@pytest.mark.slow
def test_fsdp_mesh_shards_parameters_and_trains(tmp_path, digits_data_dir):
  c = tiny_config(digits_data_dir, **{"mesh.fsdp": 4, "total_steps": 4, "eval_every_steps": 0,
                                      "checkpoint.every_steps": 100})
  setup = train.Setup(c, str(tmp_path))
  assert dict(setup.mesh.shape) == {"data": 2, "fsdp": 4}
  kernel = setup.param_shardings["Transformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]["kernel"]
  assert "fsdp" in kernel.spec  # [32, 64] split on its 64 axis over the 4 fsdp devices
  state = setup.state_from_params(setup.init_params())
  leaf = state.params["Transformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]["kernel"]
  assert leaf.addressable_shards[0].data.shape == (32, 16)
  results = train.train_and_evaluate(c, str(tmp_path / "run"))
  assert results["num_examples"] == 360


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, digits_data_dir):
  # Warmup from lr 0 keeps step 1 finite; lr 1e38 without clipping overflows after.
  c = tiny_config(digits_data_dir, **{
      "optimizer.name": "sgd", "lr.base": 1e38, "lr.warmup_steps": 2, "lr.schedule": "constant",
      "grad_clip_norm": 0.0, "log_every_steps": 1, "checkpoint.every_steps": 1,
      "eval_every_steps": 0, "checkpoint.keep": 5})
  with pytest.raises(train.NonFiniteLossError, match=r"became (nan|inf): detected at step \d \(checked every 1 steps.*last good "
                     r"checkpoint: step 1"):
    train.train_and_evaluate(c, str(tmp_path))
  kept = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
  assert kept and max(kept) < 4
  params = restore_params(tmp_path, max(kept))
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly(tmp_path, digits_data_dir):
  workdir = tmp_path / "preempted"
  proc = subprocess.Popen(
      main_command(workdir, "--config.total_steps=100000", "--config.log_every_steps=1"),
      cwd=REPO, env=subprocess_env(2, digits_data_dir), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 240
  while not (metrics.exists() and metrics.stat().st_size) and time.time() < deadline:
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 75, stderr[-3000:]  # main.EXIT_PREEMPTED: resume me
  assert "Preempted at step" in stderr
  saved = [int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit()]
  assert saved and 0 < max(saved) < 100000


@pytest.mark.slow
def test_remat_auto_turns_remat_on_only_when_the_step_does_not_fit(tmp_path, digits_data_dir):
  # 65 tokens (16x16 images, 2x2 patches): activations outweigh the parameters.
  config = tiny_config(digits_data_dir, model_name="ViT-Nano_2", **{"data.image_size": 16})
  assert config.model.remat == "auto"  # the default
  # Remat needs scanned layers to save memory on XLA:CPU (unscanned, it saves nothing here).
  config.model.scan_layers = True
  setup = train.Setup(config, str(tmp_path))
  assert setup.model.options.remat is False
  params = setup.init_params()
  batch = next(data.train_iterator(config.data, global_batch_size=config.batch_size,
                                   sharding=setup.batch_sharding, seed=0))
  # Device memory unknown (CPUs): no remat.
  plain = train.compile_train_step(setup, setup.state_from_params(params), batch, None)
  need = train.step_memory_bytes(plain)
  assert setup.model.options.remat is False
  # The step fits: no remat.
  train.compile_train_step(setup, setup.state_from_params(params), batch, 2 * need)
  assert setup.model.options.remat is False
  # It would not fit in 90% of `need`: remat, which needs less.
  rematted = train.compile_train_step(setup, setup.state_from_params(params), batch, need)
  assert setup.model.options.remat is True
  assert train.step_memory_bytes(rematted) < need
  # The same update either way (the state is donated: one fresh copy per step).
  state_a, metrics_a = plain(setup.state_from_params(params), batch)
  state_b, metrics_b = rematted(setup.state_from_params(params), batch)
  np.testing.assert_allclose(metrics_a["loss"], metrics_b["loss"], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(state_a.params), jax.tree.leaves(state_b.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_remat_must_be_a_bool_or_auto(digits_data_dir):
  config = tiny_config(digits_data_dir)
  # --config.model.remat=True arrives as the string "True" (the default is a string).
  for value, remat in ((True, True), ("True", True), ("false", False), ("auto", False)):
    config.model.remat = value
    config_lib.validate(config)
    assert train.build_model(config, 10).remat is remat
  config.model.remat = "sometimes"
  with pytest.raises(ValueError, match="model.remat must be True, False or 'auto'"):
    config_lib.validate(config)


@pytest.mark.slow
def test_misspelled_config_key_fails_fast(tmp_path, digits_data_dir):
  proc = run_main(tmp_path, digits_data_dir, "--config.lerning_rate=0.1", check=False)
  assert proc.returncode != 0 and "lerning_rate" in proc.stderr
  c = tiny_config(digits_data_dir)
  c.lr.bsae = 0.1
  with pytest.raises(ValueError, match=r"unknown config key 'lr.bsae' \(did you mean 'lr.base'"):
    train.train_and_evaluate(c, str(tmp_path))
  assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_missing_dataset_fails_fast_with_instructions(tmp_path):
  start = time.time()
  proc = run_main(tmp_path / "w", tmp_path / "empty_data_dir", "--config.data.dataset=cifar10",
                  check=False)
  assert proc.returncode != 0
  assert "cifar10" in proc.stderr and "prepare" in proc.stderr.lower()
  assert time.time() - start < 60
