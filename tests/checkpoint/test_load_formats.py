"""Each supported format, generated with the released key names, lands in the right places.

The check is end to end: load the file, fit it to a model with
`adapt(strict=True)`, run the Flax model, and compare its logits with a numpy
forward pass that reads the same file in its own format's conventions.
"""

import _ckpt_helpers as H
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from vit_jax import checkpoint, models

PATCH, GRID, CLASSES = 4, (4, 3), 5  # 16x12 images: a non-square grid shows H/W swaps
ATOL = 1e-4  # float32 Flax vs float64 numpy on unit-scale logits: ~1e-6 observed


def _model_logits(params, x, **overrides):
  model = models.create_model("ViT-Mu_4", num_classes=overrides.pop("num_classes", CLASSES),
                              **overrides)
  init = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.asarray(x)))["params"]
  fitted, report = checkpoint.adapt(params, init, strict=True, log=False)
  assert report.reinitialised == [] and report.ignored == [] and report.reshaped == []
  return np.asarray(model.apply({"params": fitted}, jnp.asarray(x)))


def _save_npz(path, arrays):
  np.savez(path, **arrays)
  return str(path)


@pytest.mark.parametrize("prefix", ["", "opt/target/", "params/", "params/img/"])
@pytest.mark.parametrize("representation", [None, 24])
def test_released_vit_jax_npz(tmp_path, prefix, representation):
  arrays = H.released_npz_arrays(**H.MU, patch=PATCH, grid=GRID, classes=CLASSES,
                                 representation=representation)
  on_disk = {prefix + k: v for k, v in arrays.items()}
  if prefix == "opt/target/":  # optimizer state beside the params is ignored
    on_disk["opt/state/step"] = np.array(7)
  if prefix == "params/img/":  # SigLIP-style: the text tower is ignored
    on_disk["params/txt/Embed_0/embedding"] = np.zeros((10, 4), np.float32)
  path = _save_npz(tmp_path / "vit.npz", on_disk)

  params, fmt = checkpoint.load_with_format(path)
  assert fmt == "vit_jax"
  block = params["Transformer"]["encoderblock_1"]
  assert sorted(block) == ["LayerNorm_0", "LayerNorm_1", "MlpBlock_0",
                           "MultiHeadDotProductAttention_0"]
  np.testing.assert_array_equal(
      block["LayerNorm_1"]["scale"], arrays["Transformer/encoderblock_1/LayerNorm_2/scale"])
  x = H.images()
  expected = H.jax_style_forward(arrays, x, depth=2, block_names=H.RELEASED_BLOCK)
  logits = _model_logits(params, x, representation_size=representation)
  np.testing.assert_allclose(logits, expected, atol=ATOL)


@pytest.mark.parametrize("pool,scan", [("tok", True), ("tok", False), ("map", True),
                                       ("gap", False)])
def test_big_vision_npz(tmp_path, pool, scan):
  arrays = H.big_vision_npz_arrays(**H.MU, patch=PATCH, grid=GRID, classes=CLASSES,
                                   pool=pool, scan=scan)
  path = _save_npz(tmp_path / "bv.npz", {"params/" + k: v for k, v in arrays.items()})
  params, fmt = checkpoint.load_with_format(path)
  assert fmt == "big_vision"
  assert "encoderblock_1" in params["Transformer"]  # returned per-layer
  posemb = params["Transformer"]["posembed_input"]["pos_embedding"]
  if pool == "tok":
    # No cls row in big_vision: a zero row keeps cls bit-identical and the forward exact.
    assert posemb.shape == (1, 13, 32)
    np.testing.assert_array_equal(posemb[:, 0], 0)
    np.testing.assert_array_equal(params["cls"], arrays["cls"])
  else:
    assert posemb.shape == (1, 12, 32)
  x = H.images()
  expected = H.jax_style_forward(arrays, x, depth=2, block_names=H.LINEN_BLOCK, scanned=scan,
                                 posemb_before_cls=True, pool=pool)
  classifier = {"tok": "token", "map": "map", "gap": "gap"}[pool]
  np.testing.assert_allclose(_model_logits(params, x, classifier=classifier), expected,
                             atol=ATOL)


def test_big_vision_npz_loads_into_a_scanned_model(tmp_path):
  arrays = H.big_vision_npz_arrays(**H.MU, patch=PATCH, grid=GRID, classes=CLASSES)
  params = checkpoint.load(_save_npz(tmp_path / "bv.npz", arrays))
  x = H.images()
  expected = H.jax_style_forward(arrays, x, depth=2, block_names=H.LINEN_BLOCK, scanned=True,
                                 posemb_before_cls=True)
  np.testing.assert_allclose(_model_logits(params, x, scan_layers=True), expected, atol=ATOL)


@pytest.mark.parametrize("pool,no_embed_class", [("token", False), ("token", True),
                                                 ("map", False)])
def test_timm_safetensors(tmp_path, pool, no_embed_class):
  # no_embed_class (posemb without a cls row) is kept as stored: the model adds it to the
  # patches only (tests/checkpoint/test_timm_families.py covers the other timm families).
  grid = (4, 4) if no_embed_class else GRID
  sd = H.timm_state_dict(width=32, depth=2, mlp=64, classes=CLASSES, patch=PATCH, grid=grid,
                         pool=pool, no_embed_class=no_embed_class)
  path = str(tmp_path / "model.safetensors")
  safetensors.numpy.save_file(sd, path)
  params, fmt = checkpoint.load_with_format(path)
  assert fmt == "timm"
  q = params["Transformer"]["encoderblock_0"]["MultiHeadDotProductAttention_0"]["query"]
  assert q["kernel"].shape == (32, 2, 16) and q["bias"].shape == (2, 16)
  # Head 1's query outputs are rows 16..31 of the fused (3D, D) weight.
  np.testing.assert_array_equal(q["kernel"][:, 1, :], sd["blocks.0.attn.qkv.weight"][16:32].T)
  v = params["Transformer"]["encoderblock_0"]["MultiHeadDotProductAttention_0"]["value"]
  np.testing.assert_array_equal(v["bias"].reshape(-1), sd["blocks.0.attn.qkv.bias"][64:])
  x = H.images(height=grid[0] * PATCH, width=grid[1] * PATCH)
  expected = H.timm_forward(sd, x, depth=2, heads=2, pool=pool, no_embed_class=no_embed_class)
  logits = _model_logits(params, x, classifier="token" if pool == "token" else "map",
                         gelu_approximate=False, no_embed_class=no_embed_class)
  np.testing.assert_allclose(logits, expected, atol=ATOL)


@pytest.mark.parametrize("prefix,pooler", [("vit.", False), ("", True)])
def test_hf_transformers_safetensors(tmp_path, prefix, pooler):
  sd = H.hf_state_dict(width=32, depth=2, mlp=64, classes=CLASSES, patch=PATCH, grid=GRID,
                       prefix=prefix, pooler=pooler)
  path = str(tmp_path / "model.safetensors")
  safetensors.numpy.save_file(sd, path)
  params, fmt = checkpoint.load_with_format(path)
  assert fmt == "hf"
  x = H.images()
  expected = H.hf_forward(sd, x, depth=2, heads=2, prefix=prefix)
  if pooler:  # ViTModel: pooler output = our tanh(pre_logits) with no head
    logits = _model_logits(params, x, num_classes=None, representation_size=32,
                           gelu_approximate=False)
  else:
    logits = _model_logits(params, x, gelu_approximate=False)
  np.testing.assert_allclose(logits, expected, atol=ATOL)


def test_hf_head_count_comes_from_config_json(tmp_path):
  # Width 32 is Mu's (2 heads); a config.json beside the file says 4, which must win.
  sd = H.hf_state_dict(width=32, depth=1, mlp=64, classes=CLASSES, patch=PATCH, grid=GRID)
  safetensors.numpy.save_file(sd, str(tmp_path / "model.safetensors"))
  (tmp_path / "config.json").write_text('{"num_attention_heads": 4}')
  params = checkpoint.load(str(tmp_path / "model.safetensors"))
  attn = params["Transformer"]["encoderblock_0"]["MultiHeadDotProductAttention_0"]
  assert attn["query"]["kernel"].shape == (32, 4, 8)
  assert attn["out"]["kernel"].shape == (4, 8, 32)


def test_our_params_as_npz(tmp_path):
  model = models.create_model("ViT-Mu_4", num_classes=CLASSES, classifier="map")
  x = H.images()
  params = model.init(jax.random.key(0), jnp.asarray(x))["params"]
  flat = {k: np.asarray(v) for k, v in checkpoint.tree.flatten(params).items()}
  params_back, fmt = checkpoint.load_with_format(_save_npz(tmp_path / "ours.npz", flat))
  assert fmt == "linen"
  back = checkpoint.tree.flatten(params_back)
  assert back.keys() == flat.keys()
  for k in flat:
    np.testing.assert_array_equal(back[k], flat[k])
