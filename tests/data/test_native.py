"""Native resolution inputs (vit_jax/data/native.py): SigLIP 2's patch budget, packed streams.

The sizes are known answers of transformers' `get_image_size_for_max_num_patches`
(Siglip2ImageProcessor, transformers 5.24); the streams read a folder of images of
mixed sizes and aspect ratios (tests/data/conftest.py:image_folder). Packed evaluation
must give, on 1 and on 8 devices, the metrics of running each image alone at its own
size, padding slots and rows counted for nothing.
"""

from __future__ import annotations

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from jax.sharding import NamedSharding, PartitionSpec

from vit_jax import data, models
from vit_jax.data import native
from vit_jax.driver import parallel
from vit_jax.errors import ConfigError
from vit_jax.evals import classification, features
from vit_jax.models import packed

# (height, width, patch, max_num_patches) -> transformers' (height, width).
SIGLIP2_SIZES = [
    ((480, 640, 16, 256), (224, 288)), ((640, 480, 16, 256), (288, 224)),
    ((224, 224, 16, 256), (256, 256)), ((1000, 100, 16, 256), (800, 80)),
    ((37, 501, 14, 196), (56, 686)), ((8, 8, 2, 16), (8, 8)), ((13, 7, 4, 64), (40, 24)),
    ((3000, 20, 16, 1024), (5456, 48)), ((500, 500, 16, 729), (432, 432)),
    ((300, 900, 32, 64), (128, 384)), ((8, 8, 2, 12), (6, 6)),
]
PATCH = 4


def test_target_size_is_siglip2s():
  for (h, w, p, n), expected in SIGLIP2_SIZES:
    assert native.target_size(h, w, (p, p), n) == expected, (h, w, p, n)
  for h, w in np.random.default_rng(0).integers(1, 400, (50, 2)):
    th, tw = native.target_size(int(h), int(w), (4, 4), 50)
    assert th % 4 == tw % 4 == 0 and (th // 4) * (tw // 4) <= 50


def _triangle_weights(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in]: an antialiased bilinear shrink by s = n_in / n_out in closed form.

  Output pixel i (centre (i + 0.5) s in input units) averages the input pixels j with
  triangle weights max(0, 1 - |j + 0.5 - (i + 0.5) s| / s), normalised over the pixels
  inside the image (PIL's and torchvision's antialias=True).
  """
  s = n_in / n_out
  d = np.abs(np.arange(n_in)[None] + 0.5 - (np.arange(n_out)[:, None] + 0.5) * s)
  w = np.maximum(0.0, 1.0 - d / s)
  return w / w.sum(1, keepdims=True)


def test_antialiased_resize_is_the_triangle_filter_average():
  from vit_jax.data import image_ops  # noqa: PLC0415

  image = np.random.default_rng(0).uniform(0, 255, (16, 24, 3)).astype(np.float32)
  for out_hw in ((8, 12), (4, 6), (5, 8)):  # 2x, 4x, and 3.2x / 3x
    got = image_ops.resize(tf.constant(image), out_hw, "bilinear", antialias=True).numpy()
    rows, cols = _triangle_weights(16, out_hw[0]), _triangle_weights(24, out_hw[1])
    np.testing.assert_allclose(got, np.einsum("ih,jw,hwc->ijc", rows, cols, image),
                               atol=1e-3, err_msg=str(out_hw))
  # The 2x shrink's interior weights are (1, 3, 3, 1) / 8 per side.
  taps = np.array([1, 3, 3, 1]) / 8
  got = image_ops.resize(tf.constant(image), (8, 12), "bilinear", antialias=True).numpy()
  np.testing.assert_allclose(got[3, 5], np.einsum("h,w,hwc->c", taps, taps, image[5:9, 9:13]),
                             atol=1e-3)


def test_native_resize_does_not_alias_stripes():
  # 1-pixel black and white columns, shrunk 5x by the budget (40x40 -> 8x8 at 4 patches of
  # 4x4): a plain bilinear resize samples single columns (stripes at full contrast); the
  # antialiased one averages 9 columns (11 at the borders), leaving the mean grey within
  # 2% (5% at the borders) of the range [-1, 1].
  stripes = np.zeros((40, 40, 3), np.uint8)
  stripes[:, 1::2] = 255
  c = _config("unused", max_num_patches=4)
  image = native.eval_image(tf.constant(stripes), c).numpy()  # value_range (-1, 1)
  assert image.shape == (8, 8, 3)
  assert np.abs(image[:, 1:-1]).max() < 0.05 and np.abs(image).max() < 0.1, image[..., 0]
  from vit_jax.data import image_ops  # noqa: PLC0415

  aliased = image_ops.resize(tf.constant(stripes), (8, 8), "bilinear").numpy() / 127.5 - 1
  assert np.abs(aliased).max() > 0.9  # what the check above would catch


def test_eval_is_per_image_and_exact_on_one_and_eight_devices(image_folder):
  model = models.create_model("ViT-Mu_4", num_classes=3, classifier="gap",
                              posemb_resize="bilinear_antialias")

  @jax.jit
  def init():
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))["params"]
    return jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.PRNGKey(1), p.shape),
                        params)  # a head that tells the images apart

  params = init()
  c = data.default_config()
  c.update(dict(dataset=f"folder:{image_folder}", image_size=16, resolution_mode="native",
                patch_size=4, max_num_patches=16, seq_len=40, max_images_per_row=4))
  # The reference: each image alone in a row of its own (tests/models/test_packed.py: the
  # same as unpacked at its size), all through one program.
  apply = jax.jit(model.apply)
  logits, labels = [], []
  for path in sorted(glob.glob(os.path.join(image_folder, "test", "*", "*"))):
    image = native.eval_image(tf.constant(data.decode_file(path)), c).numpy()
    alone, _ = packed.pack_images([image], (4, 4), seq_len=40, max_images=1)
    logits.append(np.asarray(apply({"params": params}, alone))[0, 0])
    labels.append(["circle", "square", "stripes"].index(os.path.basename(os.path.dirname(path))))
  logits, labels = np.stack(logits), np.asarray(labels)
  log_p = logits - np.log(np.sum(np.exp(logits - logits.max(-1, keepdims=True)), -1,
                                 keepdims=True)) - logits.max(-1, keepdims=True)
  expected_loss = -np.mean(log_p[np.arange(len(labels)), labels])
  expected_top1 = np.mean(np.argmax(logits, -1) == labels)
  assert 0 < expected_top1 < 1  # the check below can tell a wrong label from a right one
  for devices, batch in ((1, 4), (8, 8)):  # both leave padding slots; 8 also padding rows
    mesh = parallel.create_mesh(1, jax.devices()[:devices])
    step = classification.jit_step(model, 3, mesh)
    got = classification.evaluate(step, params, c, batch_size=batch, mesh=mesh)
    assert got["num_examples"] == 9, devices
    assert got["top1"] == pytest.approx(expected_top1), devices
    assert got["loss"] == pytest.approx(expected_loss, rel=1e-5), devices
  # The frozen-feature protocols (kNN, linear, few-shot) read `pooled` from the same packed
  # batches (8 devices): one vector per image, in the split's order, padding dropped, which
  # the head turns into the image's logits alone.
  got = features.extract(model, params, c, "test", ("pooled",), batch_size=8, mesh=mesh)
  assert got["label"].tolist() == labels.tolist()
  head = params["head"]
  np.testing.assert_allclose(got["pooled"] @ np.asarray(head["kernel"]) + np.asarray(head["bias"]),
                             logits, rtol=1e-5, atol=1e-5)


def _sharding(num_devices):
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:num_devices]), ("data",))
  return NamedSharding(mesh, PartitionSpec("data"))


def _config(root, **overrides):
  config = data.default_config()
  config.update(dict(dataset=f"folder:{root}", image_size=16, prefetch=1, flip=False,
                     train_crop="resize", resolution_mode="native", patch_size=PATCH,
                     max_num_patches=16, seq_len=40, max_images_per_row=4), **overrides)
  return config


def _images(batch):
  """(label, grid, kept coords, kept patches) of each image slot of a packed batch."""
  b = {k: np.asarray(v) for k, v in batch.items()}
  out = []
  for r, j in zip(*np.nonzero(b["mask"])):
    at = b["image_ids"][r] == j + 1
    out.append((b["label"][r, j], tuple(b["grids"][r][at][0]), b["coords"][r][at],
                b["patches"][r][at]))
  return out


def test_eval_stream_holds_every_image_once_at_its_own_size(image_folder):
  config = _config(image_folder)
  files = sorted(glob.glob(os.path.join(image_folder, "test", "*", "*")))
  batches = list(data.eval_iterator(config, global_batch_size=8, sharding=_sharding(8)))
  # 8 images per batch, 2 per row (seq_len 40 holds two of 16 patches): 4 rows padded to
  # the 8 devices; 9 images need two batches, the second mostly padding.
  assert len(batches) == 2 and batches[0]["patches"].shape == (8, 40, PATCH * PATCH * 3)
  assert batches[0]["label"].shape == (8, 2)
  images = [x for b in batches for x in _images(b)]
  assert [x[0] for x in images] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
  for path, (label, grid, coords, patches) in zip(files, images):
    assert label == ["circle", "square", "stripes"].index(os.path.basename(os.path.dirname(path)))
    raw = data.decode_file(path)
    expected = native.eval_image(tf.constant(raw), config).numpy()
    h, w = native.target_size(raw.shape[0], raw.shape[1], (PATCH, PATCH), 16)
    assert expected.shape[:2] == (h, w) and grid == (h // PATCH, w // PATCH)
    np.testing.assert_array_equal(coords, packed.grid_coords(grid))
    np.testing.assert_allclose(patches, packed.patchify(expected, (PATCH, PATCH)), atol=1e-6)


def test_token_dropping_keeps_a_random_part_of_each_image_and_resumes_exactly(image_folder):
  config = _config(image_folder, token_drop_rate=0.5)
  # Training rows hold 4 images of at most 8 kept patches (16 - floor(0.5 * 16)).
  assert native.images_per_row(config, train=True) == 4
  stream = data.train_iterator(config, global_batch_size=8, sharding=_sharding(2), seed=3)
  first, second = next(stream), next(stream)
  assert first["label"].shape == (2, 4) and np.asarray(first["mask"]).all()
  for _, (gh, gw), coords, _ in _images(first):
    n = gh * gw
    assert len(coords) == n - n // 2
    assert len({tuple(c) for c in coords}) == len(coords)  # no patch twice
    assert (coords >= 0).all() and (coords < (gh, gw)).all()
  assert any(len(c) < gh * gw and not np.array_equal(c, packed.grid_coords((gh, gw))[:len(c)])
             for _, (gh, gw), c, _ in _images(first))  # not simply the first patches
  resumed = next(data.train_iterator(config, global_batch_size=8, sharding=_sharding(2),
                                     seed=3, start_step=1))
  for key in second:
    np.testing.assert_array_equal(np.asarray(resumed[key]), np.asarray(second[key]), key)


def test_augment_changes_native_train_images_not_their_sizes(image_folder):
  # Whole images (train_crop="resize", no flip): without data.augment each training image
  # is its evaluation image; RandAugment changes the pixels of each image at its own size
  # (all but the plain white ones, which most ops leave white), so the grids, patch counts
  # and labels stay those of the plain batch.
  plain = next(data.train_iterator(_config(image_folder), global_batch_size=8,
                                   sharding=_sharding(2), seed=0))
  augmented = next(data.train_iterator(
      _config(image_folder, augment="randaug(2, 10)"),
      global_batch_size=8, sharding=_sharding(2), seed=0))
  plain, augmented = _images(plain), _images(augmented)
  assert len(plain) == len(augmented) == 8
  for (y, grid, coords, patches), (y2, grid2, coords2, patches2) in zip(plain, augmented):
    assert (y, grid) == (y2, grid2)
    assert len(coords2) == grid[0] * grid[1]
    np.testing.assert_array_equal(coords, coords2)
    if np.ptp(patches) > 0.1:
      assert np.abs(patches - patches2).max() > 0.5  # changed, visibly
  sizes = {grid for _, grid, _, _ in plain}
  assert len(sizes) > 2  # images of several shapes went through the ops
  assert sum(np.ptp(patches) > 0.1 for _, _, _, patches in plain) >= 4


def test_repeated_augment_packs_each_image_r_times(image_folder):
  # r = 2: 4 examples, each twice; with nothing random (whole images, no flip, no augment)
  # the two copies are the same patches, so every image of the batch occurs an even number
  # of times; with token dropping each copy keeps its own patches.
  batch = next(data.train_iterator(_config(image_folder, repeated_augment=2),
                                   global_batch_size=8, sharding=_sharding(2), seed=0))
  images = [(y, patches.tobytes()) for y, _, _, patches in _images(batch)]
  assert len(images) == 8 and all(images.count(x) % 2 == 0 for x in images), images
  batch = next(data.train_iterator(_config(image_folder, repeated_augment=2, token_drop_rate=0.5),
                                   global_batch_size=8, sharding=_sharding(2), seed=0))
  kept = [coords.tobytes() for _, _, coords, _ in _images(batch)]
  assert len(set(kept)) == 8


@pytest.mark.parametrize("overrides,message", [
    (dict(resolution_mode="natve"), "resolution_mode='natve'"),
    (dict(max_num_patches=64, seq_len=40), "does not fit in a row of data.seq_len=40"),
    (dict(train_crop="random_crop"), "native resolution takes one of"),
    (dict(token_drop_rate=1.0), "token_drop_rate=1.0 must be in"),
])
def test_bad_native_settings_are_short_errors(image_folder, overrides, message):
  with pytest.raises(ConfigError, match=message):
    data.get_info(_config(image_folder, **overrides))


def test_the_pipeline_alone_asks_for_the_patch_size(image_folder):
  with pytest.raises(ConfigError, match="needs data.patch_size"):
    native.Packer(_config(image_folder, patch_size=None), train=False)
