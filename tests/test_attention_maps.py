"""Tests of vit_jax.tools.attention_maps and the figures of vit_jax.visualize.

The ground-truth test trains a tiny ViT on a task whose answer lives in one known
place: a 3x3 grid of 8x8 cells, every cell a random digit, the label being the
digit in one fixed cell. The rollout must put most of its mass on that cell, and
an untrained model's must not.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from tests.media import write_video
from vit_jax import models
from vit_jax.data.builders.digits import load_digits_split
from vit_jax.tools import attention_maps, inference, visualize

GRID, CELL, TARGET = 3, 8, (0, 2)


def test_rollout_matches_the_definition_and_rows_sum_to_one():
  logits = jax.random.normal(jax.random.key(0), (3, 2, 4, 5, 5))  # [L, B, H, N, N]
  weights = jax.nn.softmax(logits, axis=-1)
  r = np.asarray(attention_maps.rollout(weights))
  assert r.shape == (2, 5, 5)
  np.testing.assert_allclose(r.sum(-1), 1.0, atol=1e-5)
  a = np.asarray(weights).mean(2) + np.eye(5)
  a = a / a.sum(-1, keepdims=True)
  expected = np.einsum("bij,bjk->bik", a[2], np.einsum("bij,bjk->bik", a[1], a[0]))
  np.testing.assert_allclose(r, expected, atol=1e-5)
  # Without the residual, uniform attention rolls out to uniform attention.
  uniform = jnp.full((2, 1, 1, 4, 4), 0.25)
  np.testing.assert_allclose(attention_maps.rollout(uniform, residual=False), 0.25, atol=1e-6)


def _perturbed(params):
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(0), len(leaves))
  return jax.tree.unflatten(treedef, [x + 0.3 * jax.random.normal(k, x.shape)
                                      for x, k in zip(leaves, keys)])


@pytest.mark.parametrize("classifier,scan", [("token", False), ("gap", True), ("map", False)])
def test_image_maps_shapes_and_mass(classifier, scan):
  model = models.create_model("ViT-Mu_2", num_classes=5, classifier=classifier,
                              scan_layers=scan)
  images = jax.random.uniform(jax.random.key(1), (3, 8, 8, 3), minval=-1, maxval=1)
  params = _perturbed(model.init(jax.random.key(0), images)["params"])
  maps = attention_maps.compute(model, params, images)
  assert maps.grid == (4, 4) and maps.logits.shape == (3, 5)
  assert maps.rollout.shape == (3, 4, 4) and maps.layer_heads.shape == (2, 3, 2, 4, 4)
  assert (maps.rollout >= 0).all()
  mass = maps.rollout.sum((1, 2))
  if classifier == "token":  # part of the cls row stays on the cls column
    assert ((mass > 0) & (mass < 1)).all()
  else:
    np.testing.assert_allclose(mass, 1.0, atol=1e-5)
    np.testing.assert_allclose(maps.layer_heads.sum((3, 4)), 1.0, atol=1e-5)
  assert (maps.pool_heads is not None) == (classifier == "map")
  if classifier == "map":
    assert maps.pool_heads.shape == (3, 2, 4, 4)
    np.testing.assert_allclose(maps.pool_heads.sum((2, 3)), 1.0, atol=1e-5)


@pytest.mark.parametrize("classifier,tokens", [("token", dict(num_registers=4)),
                                               ("map", dict(num_registers=4)),
                                               ("gap", dict(num_registers=2)),
                                               ("token", dict(distilled=True))])
def test_prefix_tokens_attend_but_are_not_drawn(classifier, tokens):
  # DINOv2 with registers, SigLIP-style MAP with registers, DeiT distilled.
  model = models.create_model("ViT-Mu_2", num_classes=5, classifier=classifier,
                              layer_scale=1e-5, **tokens)
  images = jax.random.uniform(jax.random.key(1), (3, 8, 8, 3), minval=-1, maxval=1)
  params = _perturbed(model.init(jax.random.key(0), images)["params"])
  maps = attention_maps.compute(model, params, images)
  assert maps.rollout.shape == (3, 4, 4) and maps.layer_heads.shape == (2, 3, 2, 4, 4)
  # The pooled query's rollout sums to 1 over all P + 16 tokens; the prefix tokens'
  # share is left out of the map, so what is drawn sums to less.
  _, weights = models.attention_weights(model, params, images)
  prefix = model.options.num_prefix_tokens(classifier)
  assert attention_maps.encoder_layers(weights, "Transformer").shape[-1] == prefix + 16
  mass = maps.rollout.sum((1, 2))
  assert ((mass > 0) & (mass < 1)).all()
  if classifier == "map":  # the probe attends over the 16 patches only
    np.testing.assert_allclose(maps.pool_heads.sum((2, 3)), 1.0, atol=1e-5)


@pytest.mark.parametrize("variant", ["spatio_temporal", "factorised_encoder", "frame_average",
                                     "factorised_self_attention", "factorised_dot_product"])
def test_video_maps_for_every_variant(variant):
  model = models.create_model("ViViT-Mu_4x2", num_classes=5, variant=variant,
                              classifier="gap")
  video = jax.random.uniform(jax.random.key(1), (2, 4, 8, 8, 3), minval=-1, maxval=1)
  params = _perturbed(model.init(jax.random.key(0), video)["params"])
  maps = attention_maps.compute(model, params, video)
  assert maps.grid == (2, 2, 2) and maps.rollout.shape == (2, 2, 2, 2)
  factorised_encoder = variant in ("factorised_encoder", "frame_average")
  # With gap pooling every map is a distribution: over all tokens, or per frame.
  per_frame = maps.rollout.sum((2, 3))
  np.testing.assert_allclose(per_frame if factorised_encoder else per_frame.sum(1),
                             1.0, atol=1e-5)
  layers = 4 if variant == "factorised_self_attention" else 2  # two stages per block
  assert maps.layer_heads.shape == (layers, 2, 2, 2, 2, 2)
  assert (maps.temporal is not None) == factorised_encoder
  if factorised_encoder:
    assert maps.temporal.shape == (2, 2)
    np.testing.assert_allclose(maps.temporal.sum(-1), 1.0, atol=1e-5)


def _grid_task(images, labels, n, rng):
  """[n, 24, 24, 3] in [-1, 1]: 9 random digits; the label is the digit in TARGET."""
  pick = rng.integers(0, len(labels), (n, GRID, GRID))
  cells = images[pick].astype(np.float32) / 255.0  # [n, 3, 3, 8, 8]
  x = cells.transpose(0, 1, 3, 2, 4).reshape(n, GRID * CELL, GRID * CELL)
  x = np.repeat(x[..., None], 3, axis=-1) * 2.0 - 1.0
  return x, labels[pick[:, TARGET[0], TARGET[1]]]


def _target_mass(model, params, x):
  """Mean share of the rollout map on TARGET, and how often TARGET is the map's argmax."""
  r = attention_maps.compute(model, params, x).rollout
  share = r[:, TARGET[0], TARGET[1]] / r.sum((1, 2))
  argmax = r.reshape(len(r), -1).argmax(-1) == TARGET[0] * GRID + TARGET[1]
  return float(share.mean()), float(argmax.mean())


@pytest.mark.parametrize("classifier", ["token", "gap", "map"])
def test_rollout_finds_the_known_answer_location(classifier):
  rng = np.random.default_rng(0)
  x_train, y_train = _grid_task(*load_digits_split("train"), 4096, rng)
  x_test, y_test = _grid_task(*load_digits_split("test"), 256, rng)
  model = models.VisionTransformer(num_classes=10, patch_size=CELL, hidden_size=32,
                                   num_layers=2, mlp_dim=64, num_heads=2,
                                   classifier=classifier)
  params = model.init(jax.random.key(0), x_train[:1])["params"]
  untrained_share, untrained_argmax = _target_mass(model, params, x_test)

  steps = 300
  tx = optax.adam(optax.warmup_cosine_decay_schedule(0.0, 3e-3, 20, steps))

  @jax.jit
  def step(p, opt, x, y):
    def loss_fn(p):
      logits = model.apply({"params": p}, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    grads = jax.grad(loss_fn)(p)
    updates, opt = tx.update(grads, opt, p)
    return optax.apply_updates(p, updates), opt

  opt = tx.init(params)
  for _ in range(steps):
    batch = rng.integers(0, len(y_train), 64)
    params, opt = step(params, opt, x_train[batch], y_train[batch])
  accuracy = float(np.mean(np.argmax(model.apply({"params": params}, x_test), -1) == y_test))
  share, argmax = _target_mass(model, params, x_test)

  # Measured (seed 0): accuracy 0.92-0.96; share 0.71 (token), 0.54 (gap), 0.55 (map),
  # untrained 0.11 (chance 1/9).
  assert accuracy > 0.8, accuracy
  assert share > 0.4 and argmax > 0.9, (share, argmax)
  assert untrained_share < 0.2 and untrained_argmax < 0.5, (untrained_share, untrained_argmax)
  if classifier == "token":
    assert share > 0.5  # most of the mass


def _check_pngs(paths, expected_names):
  assert sorted(os.path.basename(p) for p in paths) == sorted(expected_names)
  for path in paths:
    assert os.path.getsize(path) > 1000
    with Image.open(path) as image:
      image.load()
      assert image.width >= 150 and image.height >= 150, (path, image.size)


def _trained_model(model, input_shape, is_video, image_size):
  params = _perturbed(model.init(jax.random.key(0), jnp.zeros((1,) + input_shape))["params"])
  preprocessing = {"image_size": image_size, "resize_small": None, "value_range": (-1.0, 1.0),
                   "mean": None, "std": None, "num_frames": 8, "stride": 1,
                   "num_test_clips": 1, "num_test_crops": 1}
  return inference.TrainedModel(model=model, params=params, eval_data=preprocessing,
                                class_names=tuple(f"class {i}" for i in range(5)),
                                is_video=is_video, model_name="test")


def test_image_figures_are_written(tmp_path):
  pixels = np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8)
  Image.fromarray(pixels).save(tmp_path / "photo.png")
  model = models.create_model("ViT-Mu_4", num_classes=5, classifier="map")  # + MAP row
  trained = _trained_model(model, (16, 16, 3), False, 16)
  written = visualize.visualize(trained, [str(tmp_path / "photo.png")], str(tmp_path / "out"))
  _check_pngs(written, ["photo_rollout.png", "photo_heads.png"])


@pytest.mark.parametrize("variant", ["factorised_encoder"])
def test_video_figures_are_written(tmp_path, variant):
  frames = np.random.default_rng(0).integers(0, 256, (10, 24, 32, 3), dtype=np.uint8)
  write_video(str(tmp_path / "clip.mp4"), frames)
  model = models.create_model("ViViT-Mu_4x2", num_classes=5, variant=variant,
                              **({"temporal_encoder_layers": 1}
                                 if variant == "factorised_encoder" else {}))
  trained = _trained_model(model, (8, 16, 16, 3), True, 16)
  written = visualize.visualize(trained, [str(tmp_path)], str(tmp_path / "out"))
  names = ["clip_rollout.png", "clip_heads.png", "clip_frames.png"]
  if variant == "factorised_encoder":
    names.append("clip_temporal.png")
  _check_pngs(written, names)
