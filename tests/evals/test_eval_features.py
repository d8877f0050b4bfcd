"""Frozen features: what each name means, exact extraction on 1 and 8 devices, the cache."""

import jax
import numpy as np
import pytest

from vit_jax import data, models
from vit_jax.driver import parallel
from vit_jax.errors import ConfigError
from vit_jax.evals import features

X = jax.random.normal(jax.random.key(1), (3, 8, 8, 3))


def _tiny(**kw):
  model = models.create_model("ViT-Mu_2", num_classes=10, **kw)
  params = model.init(jax.random.key(0), X)["params"]
  # A non-zero head, so "pooled" is not trivially what the head reads.
  params["head"]["kernel"] = jax.random.normal(jax.random.key(2), params["head"]["kernel"].shape)
  return model, params


def test_feature_names_read_the_encoder_as_the_model_computes_it():
  model, params = _tiny(num_registers=1)
  names = ("pooled", "cls", "patch_mean", "cls_patch_mean", "cls_last2", "cls_last1_patch_mean",
           "tokens")
  out = features.compute(model, params, X, names)
  ref = model.apply({"params": params}, X, features=True)
  # Every encoder token, from the model itself: [cls, register, 16 patches].
  tokens = model.clone(classifier="unpooled", num_classes=None, class_token=True).apply(
      {"params": params}, X)
  np.testing.assert_allclose(out["pooled"], ref["pooled"], atol=1e-6)
  np.testing.assert_allclose(out["cls"], tokens[:, 0], atol=1e-6)
  np.testing.assert_allclose(out["tokens"], tokens[:, 2:], atol=1e-6)
  np.testing.assert_allclose(out["patch_mean"], tokens[:, 2:].mean(1), atol=1e-6)
  np.testing.assert_allclose(out["cls_patch_mean"],
                             np.concatenate([tokens[:, 0], tokens[:, 2:].mean(1)], -1), atol=1e-6)
  # The first block's cls through the final LayerNorm: a one-block model on the same params.
  one_block = model.clone(classifier="unpooled", num_classes=None, class_token=True,
                          num_layers=1)
  first = {k: v for k, v in params["Transformer"].items() if k != "encoderblock_1"}
  block0 = one_block.apply({"params": {**params, "Transformer": first}}, X)[:, 0]
  np.testing.assert_allclose(out["cls_last2"], np.concatenate([block0, tokens[:, 0]], -1),
                             atol=1e-5)
  np.testing.assert_allclose(out["cls_last1_patch_mean"], out["cls_patch_mean"], atol=1e-6)
  # Scanned layers are unstacked first: the same features.
  scanned = model.clone(scan_layers=True)
  s_model, s_params = features.prepare(scanned, models.stack_layers(params))
  np.testing.assert_allclose(features.compute(s_model, s_params, X, ("cls_last2",))["cls_last2"],
                             out["cls_last2"], atol=1e-5)
  with pytest.raises(ConfigError, match="has none"):
    features.check_supported(model.clone(classifier="gap"), ("cls",))


def test_vivit_features_average_views_and_keep_view_tokens(video_data_dir):
  model = models.create_model("ViViT-Mu_2x2", num_classes=4, variant="factorised_encoder")
  clips = jax.random.normal(jax.random.key(3), (2, 3, 4, 8, 8, 3))  # [B, V, T, H, W, 3]
  params = jax.jit(model.init)(jax.random.key(0), clips[:, 0])["params"]
  compute = jax.jit(features.compute, static_argnums=(0, 3))
  out = compute(model, params, clips, ("pooled", "cls", "tokens"))
  assert out["pooled"].shape == (2, 32) and out["cls"].shape == (2, 32)
  assert out["tokens"].shape == (2, 3, 2 * 16, 32)  # views kept: t=2 frames x 16 patches
  # Each view on its own ([B*V] clips), then averaged: what the video evaluators do.
  per_view = compute(model, params, clips.reshape((6,) + clips.shape[2:]),
                     ("pooled",))["pooled"].reshape(2, 3, 32)
  np.testing.assert_allclose(out["pooled"], per_view.mean(axis=1), atol=1e-5)
  assert not np.allclose(per_view[:, 0], out["pooled"])
  # Through the pipeline: 30 test clips x 2 temporal views in batches of 16 (the last
  # padded), on 8 devices: every clip once, its views' features averaged.
  video = models.create_model("ViViT-Mu_4x2", num_classes=None)
  cfg = data.default_config()
  cfg.update(dict(dataset="moving_digits/tiny", data_dir=video_data_dir, image_size=16,
                  num_frames=4, stride=2, num_test_clips=2, flip=False))
  v_params = jax.jit(video.init)(jax.random.key(0), np.zeros((1, 4, 16, 16, 3)))["params"]
  got = features.extract(video, v_params, cfg, "test", ("pooled", "tokens"), batch_size=16,
                         mesh=parallel.create_mesh(1))
  assert got["pooled"].shape == (30, 32) and got["tokens"].shape == (30, 2, 2 * 16, 32)
  assert np.array_equal(np.sort(got["label"]), np.sort(
      np.concatenate([b["label"][b["mask"]] for b in data.eval_iterator(
          cfg, global_batch_size=16, sharding=parallel.batch_sharding(
              parallel.create_mesh(1)))])))


def _data_config(data_dir, **kw):
  c = data.default_config()
  c.update(dict(dataset="digits", data_dir=str(data_dir), image_size=8, **kw))
  return c


def test_extraction_counts_every_example_once_on_one_and_eight_devices(digits_data_dir):
  model, params = _tiny()
  cfg = _data_config(digits_data_dir)
  info = data.get_info(cfg)
  got = {}
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = parallel.create_mesh(1, devices)
    # 360 test digits in batches of 64 (8 devices: 8 each): the last batch is padded.
    got[len(devices)] = features.extract(model, params, cfg, "test", ("cls",), batch_size=64,
                                         mesh=mesh)
  assert len(devices) == 8
  for out in got.values():
    assert out["cls"].shape == (info.num_eval_examples, 32) == (360, 32)
  # The same examples, each once, in the split's order.
  np.testing.assert_array_equal(got[1]["label"], got[8]["label"])
  np.testing.assert_allclose(got[1]["cls"], got[8]["cls"], atol=1e-5)
  assert len(np.unique(got[8]["cls"].round(5), axis=0)) == 360


def test_cache_is_read_back_and_recomputed_when_checkpoint_split_or_preprocessing_change(
    tmp_path, digits_data_dir):
  model, params = _tiny()
  mesh = parallel.create_mesh(1)
  cache = features.FeatureCache(str(tmp_path / "cache"))

  def get(params, split="test", **data_kw):
    source = features.FeatureSource(model, params, mesh=mesh, cache=cache,
                                    fingerprint=lambda: features.params_fingerprint(model, params))
    before = len(cache.computed)
    out = source.get(_data_config(digits_data_dir, **data_kw), split, ("cls", "pooled"),
                     batch_size=64)
    return out, len(cache.computed) > before

  first, computed = get(params)
  assert computed and len(list((tmp_path / "cache").glob("*.npz"))) == 2
  again, computed = get(params)
  assert not computed and cache.hits == ["cls", "pooled"]
  np.testing.assert_array_equal(again["cls"], first["cls"])
  changed = jax.tree.map(lambda x: x, params)
  changed["Transformer"]["encoder_norm"]["bias"] = changed["Transformer"]["encoder_norm"][
      "bias"] + 1.0
  out, computed = get(changed)
  assert computed and not np.allclose(out["cls"], first["cls"])
  _, computed = get(params, split="train")
  assert computed
  _, computed = get(params, resize_method="bicubic", resize_small=10)
  assert computed
  _, computed = get(params, value_range=(0.0, 1.0))
  assert computed
  # Training-only keys change nothing evaluation reads: the cache still answers.
  _, computed = get(params, augment="rotate(8)", flip=False)
  assert not computed
