"""Tests of vit_jax.predict: files scored with a run's saved preprocessing agree with
the evaluator, example by example and in accuracy over the whole test split."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from tests.helpers import REPO, subprocess_env, tiny_config
from vit_jax import data
from vit_jax.driver import train
from vit_jax.tools import inference, predict


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory, digits_data_dir):
  """A tiny digits run (ViT-Mu/2, 48 steps, EMA off) and its evaluator results."""
  c = tiny_config(digits_data_dir, total_steps=48, eval_every_steps=0,
                  **{"checkpoint.every_steps": 48})
  workdir = str(tmp_path_factory.mktemp("predict_run"))
  results = train.train_and_evaluate(c, workdir)
  return workdir, results


@pytest.fixture(scope="module")
def test_pngs(tmp_path_factory, digits_data_dir):
  """The digits test split exported as PNG files test/<label>/<index>.png, in split order."""
  root = str(tmp_path_factory.mktemp("digits_png"))
  ds = tfds.builder("digits", data_dir=digits_data_dir).as_dataset(split="test",
                                                                    shuffle_files=False)
  paths, labels = [], []
  for i, ex in enumerate(tfds.as_numpy(ds)):
    folder = os.path.join(root, str(ex["label"]))
    os.makedirs(folder, exist_ok=True)
    paths.append(os.path.join(folder, f"{i:03d}.png"))
    Image.fromarray(ex["image"][..., 0]).save(paths[-1])
    labels.append(int(ex["label"]))
  return root, paths, np.asarray(labels)


def test_prediction_matches_the_evaluator(digits_run, test_pngs, digits_data_dir):
  workdir, results = digits_run
  root, paths, labels = test_pngs
  trained = inference.load_run(workdir)
  with open(os.path.join(workdir, "config.json")) as f:
    config = json.load(f)["config"]

  # The evaluator's inputs and the model's eval-path predictions, in split order.
  eval_inputs, eval_labels = [], []
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  for batch in data.eval_iterator(config["data"], global_batch_size=64, sharding=sharding):
    mask = np.asarray(batch["mask"])
    eval_inputs.append(np.asarray(batch["image"])[mask])
    eval_labels.append(np.asarray(batch["label"])[mask])
  eval_inputs, eval_labels = np.concatenate(eval_inputs), np.concatenate(eval_labels)
  np.testing.assert_array_equal(eval_labels, labels)  # same examples, same order

  # Files through predict: decoded PNGs, preprocessed with the run's saved preprocessing.
  file_inputs = trained.preprocess([data.decode_file(p) for p in paths])
  np.testing.assert_allclose(file_inputs, eval_inputs, atol=1e-6)
  eval_pred = np.argmax(trained.logits(eval_inputs), -1)
  found = predict.predict(trained, [root], k=3)
  assert [f for f, _ in found] == sorted(paths)
  by_path = {f: best for f, best in found}
  file_pred = np.asarray([int(by_path[p][0][0]) for p in paths])
  np.testing.assert_array_equal(file_pred, eval_pred)
  # ... and the accuracy over the split is the evaluator's.
  assert results["num_examples"] == len(paths) == 360
  assert np.sum(file_pred == labels) == round(results["top1"] * 360)
  for best in by_path.values():
    probs = [p for _, p in best]
    assert len(best) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1


@pytest.mark.slow
def test_predict_command_line(digits_run, test_pngs):
  workdir, _ = digits_run
  _, paths, _ = test_pngs
  env = subprocess_env()
  proc = subprocess.run(
      [sys.executable, "-m", "vit_jax.predict", "--workdir", workdir, "--input", paths[0],
       paths[1], "--top_k", "2", "--json"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = [json.loads(line) for line in proc.stdout.splitlines()]
  assert [line["path"] for line in lines] == paths[:2]
  assert all(len(line["top_k"]) == 2 for line in lines)
  bad = subprocess.run([sys.executable, "-m", "vit_jax.predict", "--input", paths[0]],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert bad.returncode != 0 and "--workdir DIR or --checkpoint FILE" in bad.stderr


@pytest.mark.slow
def test_visualize_command_line(digits_run, test_pngs, tmp_path):
  workdir, _ = digits_run
  _, paths, _ = test_pngs
  proc = subprocess.run(
      [sys.executable, "-m", "vit_jax.visualize", "--workdir", workdir, "--input", paths[0],
       "--out", str(tmp_path)], cwd=REPO, env=subprocess_env(),
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  stem = os.path.splitext(os.path.basename(paths[0]))[0]
  for suffix in ("_rollout.png", "_heads.png"):
    with Image.open(tmp_path / (stem + suffix)) as image:
      assert image.width > 150 and image.height > 150


@pytest.mark.parametrize("tokens", [{}, {"num_registers": 2}])
def test_a_bare_checkpoint_file_gives_its_input_size(tmp_path, tokens):
  # `predict --checkpoint FILE --model NAME`: the input size comes from the position
  # embedding, its cls (and register) rows set aside.
  from vit_jax import checkpoint, models  # noqa: PLC0415

  model = models.create_model("ViT-Mu_4", num_classes=3, **tokens)
  x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3), minval=-1, maxval=1)
  params = model.init(jax.random.key(0), x)["params"]
  params = jax.tree.map(lambda p: p + 0.1, params)  # a head that is not zero
  path = str(tmp_path / "model.npz")
  checkpoint.save_npz(params, path)
  loaded = inference.load_checkpoint(path, "ViT-Mu_4", **tokens)
  assert loaded.eval_data["image_size"] == [16, 16]  # 4 x 4 patches of 4 px
  assert loaded.model.num_classes == 3
  np.testing.assert_allclose(loaded.model.apply({"params": loaded.params}, x),
                             model.apply({"params": params}, x), atol=1e-5)


def test_a_checkpoint_that_says_its_model_needs_no_model_name(tmp_path):
  # `predict --checkpoint FILE`: the released .npz layout gives the model, its input size
  # and the JAX preprocessing; the prediction is the model's on the preprocessed file.
  from vit_jax import checkpoint, models  # noqa: PLC0415

  model = models.create_model("ViT-Mu_4", num_classes=3)
  x = jax.random.uniform(jax.random.key(1), (1, 16, 16, 3), minval=-1, maxval=1)
  params = jax.tree.map(lambda p: p + 0.1, model.init(jax.random.key(0), x)["params"])
  path = str(tmp_path / "model.npz")
  checkpoint.save_npz(params, path)
  loaded = inference.load(checkpoint_path=path)
  assert loaded.model.num_classes == 3 and loaded.class_names == ("0", "1", "2")
  assert loaded.data_config()["image_size"] == (16, 16)
  assert loaded.data_config()["value_range"] == (-1.0, 1.0)
  pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
  Image.fromarray(pixels).save(tmp_path / "a.png")
  (best,) = [b for _, b in predict.predict(loaded, [str(tmp_path / "a.png")], k=3)]
  expected = jax.nn.softmax(model.apply({"params": params}, pixels[None] / 127.5 - 1.0))[0]
  np.testing.assert_allclose([p for _, p in best], np.sort(expected)[::-1], atol=1e-5)


def test_a_backbone_without_a_head_is_refused_by_predict_and_drawn_by_visualize(tmp_path):
  # A checkpoint whose output is features (num_classes=None) has no classes to rank.
  from vit_jax import checkpoint, errors, models  # noqa: PLC0415
  from vit_jax.tools import visualize  # noqa: PLC0415

  model = models.create_model("ViT-Mu_4", num_classes=None)
  params = model.init(jax.random.key(0), np.zeros((1, 16, 16, 3), np.float32))["params"]
  path = str(tmp_path / "backbone.npz")
  checkpoint.save_npz(params, path)
  loaded = inference.load(checkpoint_path=path)
  assert loaded.class_names == ()
  pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
  Image.fromarray(pixels).save(tmp_path / "a.png")
  with pytest.raises(errors.CheckpointError, match="no classification head"):
    predict.predict(loaded, [str(tmp_path / "a.png")])
  written = visualize.visualize(loaded, [str(tmp_path / "a.png")], str(tmp_path / "maps"))
  assert [os.path.basename(w) for w in written] == ["a_rollout.png", "a_heads.png"]


def test_a_run_is_one_source_of_load_pretrained(digits_run, tmp_path):
  from vit_jax import checkpoint  # noqa: PLC0415
  from vit_jax.errors import MissingFileError  # noqa: PLC0415

  workdir, _ = digits_run
  found, run = checkpoint.load_pretrained(workdir), inference.load_run(workdir)
  assert found.format == "run" and found.class_names == run.class_names != ()
  assert found.eval_data == run.eval_data and found.preprocessing.mean == (0.5, 0.5, 0.5)
  with pytest.raises(MissingFileError, match="not a training run's config"):
    inference.load_run(str(tmp_path))


def test_logits_of_any_count_run_one_compiled_shape(monkeypatch):
  """100 inputs at batch_size 64 run as 2 x 50 (one shape, one compilation), not 64 + 36;
  padding never reaches the result."""
  from vit_jax import models  # noqa: PLC0415
  model = models.create_model("ViT-Mu_4", num_classes=3)
  x = np.random.RandomState(0).uniform(-1, 1, (100, 16, 16, 3)).astype(np.float32)
  params = model.init(jax.random.key(0), x[:1])["params"]
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(1), p.shape),
                        params)
  trained = inference.TrainedModel(model=model, params=params, class_names=("a", "b", "c"),
                                   eval_data={}, is_video=False, model_name="ViT-Mu_4")
  shapes = []
  jitted = inference._jitted_apply(model)
  monkeypatch.setattr(inference, "_jitted_apply", lambda m: lambda p, b: (
      shapes.append(b.shape[0]), jitted(p, b))[1])
  for count, batch_size, expected in [(100, 64, [50, 50]), (7, 64, [7]), (10, 4, [4, 4, 4])]:
    shapes.clear()
    got = trained.logits(x[:count], batch_size)
    assert shapes == expected
    want = np.concatenate([model.apply({"params": params}, x[i:i + 1]) for i in range(count)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
