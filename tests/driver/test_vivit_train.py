"""ViViT through the driver on the bundled `moving_digits/tiny` (80 train / 30 test clips).

One tiny run (ViViT-Mu/4x2 on 4-frame 16x16 clips, 24 steps on 8 CPU devices) is
shared: end-to-end results, resuming it, multi-view evaluation of its checkpoint,
fine-tuning from it. Image-to-video initialisation and Scenic files go through
`train.Setup` / `train.evaluate` as a user's run does.
"""

import json
import logging
import os
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from tests.checkpoint import _ckpt_helpers as H
from tests.checkpoint import test_scenic_io as scenic
from tests.helpers import logged, read_jsonl
from vit_jax import checkpoint, data
from vit_jax.driver import config as config_lib
from vit_jax.driver import steps, train

TEST_CLIPS = 30  # moving_digits/tiny's test split (video_data_dir: tests/conftest.py)


def tiny_video_config(data_dir, **overrides):
  c = config_lib.base_config()
  c.model_name = "ViViT-Mu_4x2"
  c.model.variant = "spatio_temporal"
  c.data.dataset = "moving_digits/tiny"
  c.data.data_dir = str(data_dir)
  c.data.image_size = 16
  c.data.num_frames = 4
  c.data.stride = 2
  c.data.scale_jitter = (1.0, 1.0)
  c.data.flip = False
  c.data.shuffle_buffer = 80
  c.batch_size = 16
  c.eval_batch_size = 16
  c.total_steps = 24
  c.optimizer.name = "adamw"
  c.lr.base = 3e-3
  c.lr.warmup_steps = 4
  c.log_every_steps = 4
  c.eval_every_steps = 0
  c.checkpoint.every_steps = 12
  c.progress_bar = False
  c.update_from_flattened_dict(overrides)
  return c


@pytest.fixture(scope="module")
def video_run(video_data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("vivit") / "run")
  config = tiny_video_config(video_data_dir)
  return config, workdir, train.train_and_evaluate(config, workdir)


@pytest.mark.slow
def test_video_training_end_to_end(video_run):
  config, workdir, results = video_run
  assert results["num_examples"] == TEST_CLIPS and results["step"] == 24
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f) == pytest.approx(results)
  losses = logged(os.path.join(workdir, "metrics.jsonl"), "loss")
  assert len(losses) == 6 and losses[-1] < losses[0]
  with open(os.path.join(workdir, "config.json")) as f:
    info = json.load(f)["data_info"]
  assert info["is_video"] and info["input_shape"] == [4, 16, 16, 3]
  assert sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints"))
                if s.isdigit()) == [12, 24]


@pytest.mark.slow
def test_video_run_resumes(video_run, tmp_path):
  config, workdir, _ = video_run
  resumed = str(tmp_path / "resumed")
  shutil.copytree(workdir, resumed)
  config = tiny_video_config(config.data.data_dir, total_steps=28)
  results = train.train_and_evaluate(config, resumed)
  assert results["step"] == 28 and results["num_examples"] == TEST_CLIPS
  steps_logged = [x["step"] for x in read_jsonl(os.path.join(resumed, "metrics.jsonl"))
                  if "loss" in x]
  assert steps_logged[-2:] == [24, 28]  # continued at 25, not from 0


def _views_and_labels(config):
  """Every test video decoded straight from TFDS, preprocessed alone: [N, V, T, h, w, 3]."""
  ds = tfds.load(config.data.dataset, split="test", data_dir=config.data.data_dir)
  raw = [(ex["video"], ex["label"]) for ex in tfds.as_numpy(ds)]
  views = data.preprocess_for_eval(config.data, [v for v, _ in raw])
  return views, np.array([label for _, label in raw])


@pytest.mark.slow
def test_multi_view_eval_counts_each_video_once_and_averages_its_views(video_run):
  config, workdir, _ = video_run
  # 2 clips (offsets 0 and 1 of 8 frames) x 3 crops (shorter side 20, so the crops differ).
  config = tiny_video_config(config.data.data_dir, **{
      "data.num_test_clips": 2, "data.num_test_crops": 3, "data.resize_small": 20})
  results = train.evaluate(config, workdir)
  assert results["num_examples"] == TEST_CLIPS  # not 6 x 30 views

  # Reference: each video's 6 views run through the model on their own, logits averaged.
  views, labels = _views_and_labels(config)
  assert views.shape == (TEST_CLIPS, 6, 4, 16, 16, 3)
  params = checkpoint.load(workdir, allow_video=True)
  model = train.build_model(config, num_classes=20)
  logits = np.asarray(model.apply({"params": params}, jnp.asarray(views.reshape(-1, 4, 16, 16, 3))))
  logits = logits.reshape(TEST_CLIPS, 6, -1)
  onehot = np.eye(20)[labels]
  per_video = np.asarray(steps.cross_entropy(jnp.asarray(logits.mean(1)), jnp.asarray(onehot)))
  assert results["loss"] == pytest.approx(per_video.mean(), rel=1e-4)
  assert results["top1"] == pytest.approx(np.mean(logits.mean(1).argmax(-1) == labels))
  # The check has teeth: the views' logits differ, and scoring each view as an example
  # (or mixing views of different videos) gives another loss.
  assert np.abs(logits - logits.mean(1, keepdims=True)).max() > 1e-3
  per_view = np.asarray(steps.cross_entropy(jnp.asarray(logits), jnp.asarray(onehot[:, None])))
  assert abs(per_view.mean() - per_video.mean()) > 1e-3
  shuffled = logits.reshape(6, TEST_CLIPS, -1).mean(0)  # views grouped across videos
  mixed = np.asarray(steps.cross_entropy(jnp.asarray(shuffled), jnp.asarray(onehot)))
  assert abs(mixed.mean() - per_video.mean()) > 1e-3


@pytest.mark.slow
def test_fine_tune_from_a_video_run_new_head(video_run):
  config, workdir, _ = video_run
  c = tiny_video_config(config.data.data_dir, **{
      "init_from.path": workdir, "init_from.reset_head": True})
  setup = train.Setup(c, workdir + "_ft")
  params = jax.device_get(setup.pretrained_params(workdir))
  source = checkpoint.load(workdir, allow_video=True)
  np.testing.assert_array_equal(params["embedding"]["kernel"], source["embedding"]["kernel"])
  np.testing.assert_array_equal(
      params["Transformer"]["posembed_input"]["pos_embedding"],
      source["Transformer"]["posembed_input"]["pos_embedding"])
  assert np.any(source["output_projection"]["kernel"])
  assert not np.any(params["output_projection"]["kernel"])  # reset_head
  # Another clip length changes the video position embeddings: refused, with the fix.
  init8 = setup.model.init(jax.random.key(0), jnp.zeros((1, 8, 16, 16, 3)))["params"]
  with pytest.raises(checkpoint.CheckpointError, match=r"not resized: fine-tune with the "
                                                       r"checkpoint's num_frames"):
    checkpoint.adapt_video(source, init8, variant="spatio_temporal")


@pytest.mark.slow
def test_init_from_an_image_checkpoint_through_the_driver(video_data_dir, tmp_path, caplog):
  # A released-format image ViT-Mu/4 (4x4 grid on 16x16 images, 20 classes).
  arrays = H.released_npz_arrays(**H.MU, patch=4, grid=(4, 4), classes=20)
  path = str(tmp_path / "ViT-Mu_4.npz")
  np.savez(path, **arrays)
  c = tiny_video_config(video_data_dir, **{
      "model.variant": "factorised_encoder", "model.temporal_encoder_layers": 1,
      "init_from.path": path, "init_from.kernel_init_method": "average",
      "init_from.temporal_init": "image", "total_steps": 4, "checkpoint.every_steps": 4})
  workdir = str(tmp_path / "from_image")
  with caplog.at_level(logging.INFO):
    params = jax.device_get(train.Setup(c, workdir).pretrained_params(path))
  assert "ViViT initialisation from an image ViT" in caplog.text
  assert re.search(r"copied +SpatialTransformer/posembed_input/pos_embedding ", caplog.text)
  image = checkpoint.load(path)
  kernel = params["embedding"]["kernel"]  # [2, 4, 4, 3, 32]: filter inflation, W/2 per frame
  np.testing.assert_allclose(kernel, np.stack([image["embedding"]["kernel"] / 2] * 2), rtol=1e-6)
  for encoder in ("SpatialTransformer", "TemporalTransformer"):
    np.testing.assert_array_equal(
        params[encoder]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]["kernel"],
        image["Transformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]["kernel"])
  np.testing.assert_array_equal(params["output_projection"]["kernel"], image["head"]["kernel"])
  results = train.train_and_evaluate(c, workdir)
  assert results["step"] == 4 and results["num_examples"] == TEST_CLIPS


def test_inflation_keys_are_validated(video_data_dir):
  with pytest.raises(ValueError, match=r"init_from.kernel_init_method must be one of"):
    config_lib.validate(tiny_video_config(video_data_dir, **{
        "init_from.kernel_init_method": "central"}))
  image = tiny_video_config(video_data_dir, model_name="ViT-Mu_4")
  image.init_from.temporal_init = "image"
  with pytest.raises(ValueError, match=r"init_from.temporal_init only apply to video"):
    config_lib.validate(image)


def test_scenic_checkpoint_evaluates_through_the_driver(video_data_dir, tmp_path):
  # Scenic's factorised encoder as generated in tests/checkpoint/test_scenic_io.py, with
  # 20 classes, on the tiny clips (4 frames at 8x8: t=2 of a 2x2 grid, as in that file).
  flat = scenic.scenic_fe_params()
  flat["output_projection/kernel"] = H.Filler(3)(scenic.WIDTH, 20)
  flat["output_projection/bias"] = H.Filler(4)(20)
  path = scenic.write_scenic_checkpoint(tmp_path / "checkpoint_100", flat)
  c = tiny_video_config(video_data_dir, **{
      "model.variant": "factorised_encoder",
      "model.temporal_encoder_layers": scenic.TEMPORAL_LAYERS, "data.image_size": 8})
  results = train.evaluate(c, str(tmp_path / "eval"), checkpoint_path=str(path))
  assert results["num_examples"] == TEST_CLIPS
  # The same number from the numpy forward pass that reads the file by Scenic's names.
  views, labels = _views_and_labels(c)
  logits = scenic.scenic_fe_forward(flat, views[:, 0])
  assert results["top1"] == pytest.approx(np.mean(logits.argmax(-1) == labels))
  expected = np.asarray(steps.cross_entropy(jnp.asarray(logits, jnp.float32),
                                            jnp.asarray(np.eye(20)[labels])))
  assert results["loss"] == pytest.approx(expected.mean(), rel=1e-4)
