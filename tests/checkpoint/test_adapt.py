"""`adapt`: fitting restored params to another resolution, class count, layout or size."""

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import checkpoint, models
from vit_jax.checkpoint import tree as tree_lib

POSEMB = "Transformer/posembed_input/pos_embedding"


def make(image=16, **overrides):
  overrides.setdefault("num_classes", 10)
  name = overrides.pop("name", "ViT-Mu_4")
  return models.create_model(name, **overrides), jnp.zeros((2, image, image, 3))


@functools.cache
def _init_cached(image, seed, overrides):
  model, x = make(image, **dict(overrides))
  return model.init(jax.random.key(seed), x)["params"]


def random_params(image=16, seed=0, **overrides):
  """Initialised, then perturbed everywhere (a zero head would hide misplacements)."""
  params = _init_cached(image, seed, tuple(sorted(overrides.items())))
  leaves, treedef = jax.tree.flatten(params)
  rng = np.random.default_rng(seed)
  return jax.tree.unflatten(treedef, [
      np.asarray(v) + 0.1 * rng.standard_normal(v.shape).astype(np.float32) for v in leaves])


def init(image=16, **overrides):
  return _init_cached(image, 42, tuple(sorted(overrides.items())))


def abstract(image=16, **overrides):
  model, x = make(image, **overrides)
  return jax.eval_shape(lambda: model.init(jax.random.key(42), x))["params"]


def test_same_model_is_an_exact_copy():
  source = random_params()
  params, report = checkpoint.adapt(source, init(), strict=True, log=False)
  model, _ = make()
  x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3), minval=-1, maxval=1)
  np.testing.assert_array_equal(model.apply({"params": params}, x),
                                model.apply({"params": source}, x))
  assert len(report.copied) == len(tree_lib.flatten(source))
  assert report.reshaped == report.reinitialised == report.ignored == []


def test_finetune_at_new_resolution_class_count_and_layout():
  # Pre-trained: 16 px (4x4 grid), 10 classes, representation layer, per-layer.
  source = random_params(representation_size=24)
  # Fine-tune: 24 px (6x6 grid), 3 classes, no representation layer, scanned.
  target = init(image=24, num_classes=3, scan_layers=True)
  params, report = checkpoint.adapt(source, target, strict=True, log=False)

  assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, target)
  assert report.reshaped == [POSEMB]
  assert sorted(report.reinitialised) == ["head/bias", "head/kernel"]
  assert sorted(report.ignored) == ["pre_logits/bias", "pre_logits/kernel"]
  assert report.unexpected == []
  np.testing.assert_array_equal(params["head"]["kernel"], 0)  # zero-init from init_params
  posemb = params["Transformer"]["posembed_input"]["pos_embedding"]
  src_posemb = source["Transformer"]["posembed_input"]["pos_embedding"]
  np.testing.assert_array_equal(posemb[:, 0], src_posemb[:, 0])  # cls row untouched
  # Corner tokens map onto corner tokens (aligned corners).
  np.testing.assert_allclose(posemb[0, 1 + 35], src_posemb[0, 1 + 15], rtol=1e-6)
  stacked = params["Transformer"]["encoderblock"]["MultiHeadDotProductAttention_0"]
  np.testing.assert_array_equal(
      stacked["query"]["kernel"][1],
      source["Transformer"]["encoderblock_1"]["MultiHeadDotProductAttention_0"]["query"]["kernel"])
  model, _ = make(image=24, num_classes=3, scan_layers=True)
  logits = model.apply({"params": params}, jnp.ones((1, 24, 24, 3)))
  assert logits.shape == (1, 3)


def test_abstract_init_params_are_enough_for_a_new_head():
  params, report = checkpoint.adapt(random_params(), abstract(num_classes=4), log=False)
  assert params["head"]["kernel"].shape == (32, 4)
  np.testing.assert_array_equal(params["head"]["kernel"], 0)
  assert sorted(report.reinitialised) == ["head/bias", "head/kernel"]


def test_representation_layer_added_from_init_and_reinit_on_request():
  target = init(representation_size=24)
  params, report = checkpoint.adapt(random_params(), target, reinit=("head/",), strict=True,
                                    log=False)
  assert sorted(report.reinitialised) == ["head/bias", "head/kernel", "pre_logits/bias",
                                          "pre_logits/kernel"]
  np.testing.assert_array_equal(params["pre_logits"]["kernel"], target["pre_logits"]["kernel"])


def test_dtype_follows_the_model():
  target = init(param_dtype=jnp.bfloat16)
  params, report = checkpoint.adapt(random_params(), target, log=False)
  assert all(v.dtype == jnp.bfloat16 for v in jax.tree.leaves(params))
  assert "float32 -> bfloat16" in str(report)


def test_classifier_change_is_unexpected_strict_raises_and_lenient_reports():
  source = random_params()  # classifier="token": has cls and a cls posemb row
  target = init(classifier="gap")
  with pytest.raises(checkpoint.CheckpointError) as error:
    checkpoint.adapt(source, target, strict=True, log=False)
  message = str(error.value)
  assert "cls: checkpoint (1, 1, 32), model None" in message
  assert f"{POSEMB}: checkpoint (1, 17, 32), model (1, 16, 32)" in message
  params, report = checkpoint.adapt(source, target, log=False)
  assert sorted(e.key for e in report.unexpected) == [POSEMB, "cls"]
  np.testing.assert_array_equal(params["Transformer"]["posembed_input"]["pos_embedding"],
                                source["Transformer"]["posembed_input"]["pos_embedding"][:, 1:])


def test_gap_checkpoint_into_token_model_takes_cls_from_init():
  target = init()
  params, report = checkpoint.adapt(random_params(classifier="gap"), target, log=False)
  np.testing.assert_array_equal(params["cls"], target["cls"])
  assert "cls" in report.reinitialised
  assert {e.key for e in report.unexpected} == {"cls", POSEMB}


def test_report_str_and_log(caplog):
  _, report = checkpoint.adapt(random_params(), init(image=24, num_classes=3), log=False)
  text = str(report)
  assert text.splitlines()[0] == ("adapt: 37 copied, 1 reshaped, 2 reinitialised, 0 ignored "
                                  "(0 unexpected)")
  assert f"reshaped      {POSEMB}  (1, 17, 32) -> (1, 37, 32)" in text
  assert "bilinear resize of the 4x4 grid to 6x6, cls row kept" in text
  assert "reinitialised head/kernel  (32, 10) -> (32, 3)" in text
  with caplog.at_level(logging.INFO, logger="vit_jax.checkpoint.adapt"):
    report.log()
  assert "adapt: 37 copied" in caplog.text and "head/kernel" in caplog.text


def test_non_square_grids_via_image_size_and_source_grid():
  # 16x12 px checkpoint (4x3 grid) -> 32x20 px model (8x5 grid).
  model, _ = make()
  source = jax.tree.map(np.asarray, model.init(jax.random.key(0), jnp.zeros((1, 16, 12, 3))))
  source = source["params"]
  target = model.init(jax.random.key(0), jnp.zeros((1, 32, 20, 3)))["params"]
  with pytest.raises(checkpoint.CheckpointError, match="not a square grid"):
    checkpoint.adapt(source, target, log=False)
  params, report = checkpoint.adapt(source, target, source_grid=(4, 3), image_size=(32, 20),
                                    log=False)
  assert "4x3 grid to 8x5" in str(report)
  assert params["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 41, 32)


def test_posemb_size_mismatch_without_resize():
  with pytest.raises(checkpoint.CheckpointError,
                     match="checkpoint has 17 tokens, the model needs 37: pass resize_posemb=True"):
    checkpoint.adapt(random_params(), init(image=24), resize_posemb=False, log=False)


def test_patch_size_change_needs_resize_patch():
  source = random_params()  # patch 4, 16 px -> 4x4 grid
  target = init(image=32, patch_size=8)  # patch 8, 32 px -> same 4x4 grid
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"embedding/kernel: checkpoint \(4, 4, 3, 32\) vs model \(8, 8, 3, 32\)"
                           r".*resize_patch=True"):
    checkpoint.adapt(source, target, log=False)
  params, report = checkpoint.adapt(source, target, resize_patch=True, strict=True, log=False)
  assert report.reshaped == ["embedding/kernel"]
  np.testing.assert_array_equal(
      params["embedding"]["kernel"],
      checkpoint.resize_patch_kernel(source["embedding"]["kernel"], (8, 8)))


def test_width_mismatch_names_the_first_key_and_both_shapes():
  target = init(name="ViT-Nano_4", num_layers=2)  # width 64 vs Mu's 32, same depth
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"First mismatching key: Transformer/encoder_norm/bias: checkpoint "
                           r"\(32,\) vs model \(64,\)"):
    checkpoint.adapt(random_params(), target, log=False)


@pytest.mark.parametrize("layers", [1, 3])
def test_depth_mismatch_names_the_first_missing_block(layers):
  target = abstract(num_layers=layers)
  first = "Transformer/encoderblock_1/LayerNorm_0/bias" if layers == 1 else \
          "Transformer/encoderblock_2/LayerNorm_0/bias"
  with pytest.raises(checkpoint.CheckpointError) as error:
    checkpoint.adapt(random_params(), target, log=False)
  message = str(error.value)
  assert f"the checkpoint has 2 blocks in Transformer, the model has {layers}" in message
  assert f"First mismatching key: {first} is (32,)" in message
  assert "num_layers=2" in message


def test_head_count_mismatch_is_an_architecture_error():
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"MultiHeadDotProductAttention_0/key/bias: checkpoint \(2, 16\) vs "
                           r"model \(4, 8\)"):
    checkpoint.adapt(random_params(), abstract(num_heads=4), log=False)
