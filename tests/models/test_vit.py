"""Tests of the ViT module: shapes, parameter tree, numerics and transforms."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import models


def _init(model, image_size=16, batch=2, seed=0):
  images = jax.random.uniform(jax.random.key(seed + 1), (batch, image_size, image_size, 3),
                              minval=-1, maxval=1)
  params = model.init(jax.random.key(seed), images)["params"]
  return params, images


def _perturb(params, seed=0, scale=0.02):
  """Random non-zero values everywhere (the zero-initialised head hides bugs)."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(treedef, [
      x + scale * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)])


@pytest.mark.parametrize("classifier,tokens", [("token", 17), ("gap", 16), ("map", 16),
                                               ("unpooled", 16)])
def test_output_shapes_for_every_classifier(classifier, tokens):
  model = models.create_model("ViT-Mu_4", num_classes=7, classifier=classifier)
  params, images = _init(model)
  logits = model.apply({"params": params}, images)
  expected = (2, 16, 7) if classifier == "unpooled" else (2, 7)
  assert logits.shape == expected
  assert logits.dtype == jnp.float32
  assert params["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, tokens, 32)
  assert ("cls" in params) == (classifier == "token")
  assert ("MAPHead_0" in params) == (classifier == "map")


def test_map_head_parameter_tree():
  model = models.create_model("ViT-Mu_4", num_classes=3, classifier="map")
  params, _ = _init(model)
  head = params["MAPHead_0"]
  assert set(head) == {"probe", "MultiHeadDotProductAttention_0", "LayerNorm_0", "MlpBlock_0"}
  assert head["probe"].shape == (1, 1, 32)


def test_features_without_head_and_representation_layer():
  model = models.create_model("ViT-Mu_4", num_classes=None, representation_size=24)
  params, images = _init(model)
  out = model.apply({"params": params}, images)
  assert out.shape == (2, 24)
  assert "head" not in params and params["pre_logits"]["kernel"].shape == (32, 24)
  # tanh after pre_logits bounds the representation.
  assert float(jnp.max(jnp.abs(out))) < 1.0


def test_sincos_posemb_has_no_parameters_and_distinct_rows():
  model = models.create_model("ViT-Mu_4", num_classes=3, posemb="sincos2d")
  params, images = _init(model)
  assert "posembed_input" not in params["Transformer"]
  pe = models.vit.sincos2d_posemb(4, 4, 32)[0]
  assert pe.shape == (16, 32)
  assert len({tuple(np.round(r, 5)) for r in pe}) == 16
  assert model.apply({"params": params}, images).shape == (2, 3)


def test_rectangular_images_and_error_messages():
  model = models.create_model("ViT-Mu_4", num_classes=3)
  params, _ = _init(model)
  rect = jnp.zeros((1, 8, 24, 3))
  rect_params = model.init(jax.random.key(0), rect)["params"]
  assert rect_params["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 13, 32)
  with pytest.raises(ValueError, match="not divisible by the patch size 4x4"):
    model.init(jax.random.key(0), jnp.zeros((1, 10, 16, 3)))
  with pytest.raises(ValueError, match=r"pos_embedding has 17 tokens.*input gives 37"):
    model.apply({"params": params}, jnp.zeros((1, 24, 24, 3)))


def test_reference_parameter_tree_of_vit_b16():
  """Names and shapes as in the released checkpoints (docs/checkpoint_formats.md)."""
  model = models.create_model("ViT-B_16", num_classes=1000, representation_size=768)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3))))
  flat = {"/".join(k): v.shape for k, v in
          flax.traverse_util.flatten_dict(shapes["params"]).items()}
  block = "Transformer/encoderblock_11/"
  expected = {
      "cls": (1, 1, 768),
      "embedding/kernel": (16, 16, 3, 768),
      "embedding/bias": (768,),
      "Transformer/posembed_input/pos_embedding": (1, 197, 768),
      block + "LayerNorm_0/scale": (768,),
      block + "MultiHeadDotProductAttention_0/query/kernel": (768, 12, 64),
      block + "MultiHeadDotProductAttention_0/key/bias": (12, 64),
      block + "MultiHeadDotProductAttention_0/out/kernel": (12, 64, 768),
      block + "MultiHeadDotProductAttention_0/out/bias": (768,),
      block + "LayerNorm_1/bias": (768,),
      block + "MlpBlock_0/Dense_0/kernel": (768, 3072),
      block + "MlpBlock_0/Dense_1/kernel": (3072, 768),
      "Transformer/encoder_norm/scale": (768,),
      "pre_logits/kernel": (768, 768),
      "head/kernel": (768, 1000),
      "head/bias": (1000,),
  }
  for key, shape in expected.items():
    assert flat[key] == shape, key
  assert len([k for k in flat if k.startswith("Transformer/encoderblock_")]) == 12 * 16
  assert not any("encoderblock_12" in k for k in flat)


def test_reference_initialisers():
  model = models.create_model("ViT-Nano_4", num_classes=5)
  params, _ = _init(model, image_size=32)
  assert not np.any(params["head"]["kernel"]) and not np.any(params["head"]["bias"])
  assert not np.any(params["cls"])
  posemb = np.asarray(params["Transformer"]["posembed_input"]["pos_embedding"])
  assert 0.015 < posemb.std() < 0.025
  dense = params["Transformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]
  assert np.abs(np.asarray(dense["bias"])).max() < 1e-5 < np.abs(np.asarray(dense["bias"])).max() * 1e6
  # xavier_uniform: bound sqrt(6 / (fan_in + fan_out)).
  bound = np.sqrt(6 / (64 + 128))
  assert np.abs(np.asarray(dense["kernel"])).max() <= bound
  assert np.abs(np.asarray(dense["kernel"])).max() > 0.9 * bound


def test_gelu_option_changes_activations_slightly():
  tanh = models.create_model("ViT-Mu_4", num_classes=4)
  erf = models.create_model("ViT-Mu_4", num_classes=4, gelu_approximate=False)
  params, images = _init(tanh)
  params = _perturb(params, scale=0.5)
  a = tanh.apply({"params": params}, images)
  b = erf.apply({"params": params}, images)
  diff = float(jnp.max(jnp.abs(a - b)))
  assert 1e-6 < diff < 5e-2


def test_scan_matches_loop_on_converted_params():
  loop = models.create_model("ViT-Nano_4", num_classes=5, classifier="gap")
  scan = models.create_model("ViT-Nano_4", num_classes=5, classifier="gap", scan_layers=True)
  params, images = _init(loop)
  params = _perturb(params)
  stacked = models.stack_layers(params)
  assert stacked["Transformer"]["encoderblock"]["LayerNorm_0"]["scale"].shape == (4, 64)
  # The scanned model initialises to the same tree structure and shapes.
  scan_init, _ = _init(scan)
  assert jax.tree.map(jnp.shape, scan_init) == jax.tree.map(jnp.shape, stacked)
  np.testing.assert_allclose(scan.apply({"params": stacked}, images),
                             loop.apply({"params": params}, images), atol=1e-5, rtol=1e-5)
  back = models.unstack_layers(stacked)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), back, params))
  assert models.is_stacked(stacked) and not models.is_stacked(params)


@pytest.mark.parametrize("scan_layers", [False, True])
@pytest.mark.parametrize("policy", ["nothing_saveable", "dots_saveable"])
def test_remat_gives_the_same_gradients(scan_layers, policy):
  kw = dict(num_classes=5, scan_layers=scan_layers)
  plain = models.create_model("ViT-Mu_4", **kw)
  remat = models.create_model("ViT-Mu_4", remat=True, remat_policy=policy, **kw)
  params, images = _init(plain)
  params = _perturb(params)
  labels = jnp.array([1, 3])

  def loss(model, p):
    logits = model.apply({"params": p}, images)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

  g_plain = jax.jit(jax.grad(lambda p: loss(plain, p)))(params)
  g_remat = jax.jit(jax.grad(lambda p: loss(remat, p)))(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5),
               g_plain, g_remat)


def test_remat_with_stochastic_depth_in_training_matches_plain():
  kw = dict(num_classes=5, stochastic_depth=0.5, dropout_rate=0.1)
  plain = models.create_model("ViT-Mu_4", **kw)
  remat = models.create_model("ViT-Mu_4", remat=True, **kw)
  params, images = _init(plain)
  rngs = {"dropout": jax.random.key(3)}
  a = plain.apply({"params": params}, images, train=True, rngs=rngs)
  b = remat.apply({"params": params}, images, train=True, rngs=rngs)
  np.testing.assert_allclose(a, b, atol=1e-6)


def test_bfloat16_compute_stays_close_to_float32():
  f32 = models.create_model("ViT-Nano_4", num_classes=10)
  bf16 = models.create_model("ViT-Nano_4", num_classes=10, dtype=jnp.bfloat16)
  params, images = _init(f32, image_size=32)
  params = _perturb(params, scale=0.05)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  bf16_params, _ = _init(bf16, image_size=32)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(bf16_params))
  a = f32.apply({"params": params}, images)
  b = bf16.apply({"params": params}, images)
  assert b.dtype == jnp.float32
  scale = float(jnp.max(jnp.abs(a)))
  assert float(jnp.max(jnp.abs(a - b))) < 0.05 * scale
  assert not np.array_equal(np.asarray(a), np.asarray(b))  # bf16 really was used


def test_dropout_and_drop_path_only_act_in_training():
  clean = models.create_model("ViT-Mu_4", num_classes=5)
  noisy = models.create_model("ViT-Mu_4", num_classes=5, dropout_rate=0.3,
                              attention_dropout_rate=0.3, stochastic_depth=0.5)
  params, images = _init(clean)
  params = _perturb(params)
  ref = clean.apply({"params": params}, images)
  np.testing.assert_array_equal(noisy.apply({"params": params}, images, train=False), ref)
  train = noisy.apply({"params": params}, images, train=True,
                      rngs={"dropout": jax.random.key(1)})
  assert float(jnp.max(jnp.abs(train - ref))) > 1e-4


def test_drop_path_is_per_example():
  model = models.create_model("ViT-Mu_4", num_classes=5, stochastic_depth=0.9, scan_layers=True)
  params, _ = _init(model)
  params = _perturb(params)
  images = jnp.tile(jax.random.normal(jax.random.key(2), (1, 16, 16, 3)), (16, 1, 1, 1))
  out = model.apply({"params": params}, images, train=True, rngs={"dropout": jax.random.key(5)})
  # Identical inputs, different per-example masks: several distinct outputs.
  assert len({tuple(np.round(np.asarray(r), 5)) for r in out}) > 1
  drop = models.layers.DropPath()
  x = jnp.ones((4000, 3))
  y = drop.apply({}, x, 0.25, False, rngs={"dropout": jax.random.key(0)})
  kept = np.asarray(y[:, 0] > 0)
  assert abs(kept.mean() - 0.75) < 0.03
  np.testing.assert_allclose(np.asarray(y)[kept], 1 / 0.75, rtol=1e-6)  # rescaled


def test_determinism_for_a_fixed_seed():
  model = models.create_model("ViT-Mu_4", num_classes=5, dropout_rate=0.2, stochastic_depth=0.2)
  p1, images = _init(model, seed=7)
  p2, _ = _init(model, seed=7)
  p3, _ = _init(model, seed=8)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), p1, p2))
  assert not np.array_equal(p1["embedding"]["kernel"], p3["embedding"]["kernel"])
  run = lambda: model.apply({"params": p1}, images, train=True,
                            rngs={"dropout": jax.random.key(4)})
  np.testing.assert_array_equal(run(), run())


@pytest.mark.parametrize("scan_layers", [False, True])
def test_attention_weights_are_returned_on_request(scan_layers):
  model = models.create_model("ViT-Mu_4", num_classes=5, scan_layers=scan_layers)
  params, images = _init(model)
  params = _perturb(params, scale=0.2)
  logits, weights = models.attention_weights(model, params, images)
  # The explicit-softmax path computes the same function as the fused kernel.
  np.testing.assert_allclose(logits, model.apply({"params": params}, images), atol=1e-5)
  stacked = models.stack_encoder_weights(weights)
  assert stacked.shape == (2, 2, 2, 17, 17)  # [L, B, H, N+1, N+1]
  np.testing.assert_allclose(stacked.sum(-1), 1.0, atol=1e-5)


def test_attention_weights_of_map_head():
  model = models.create_model("ViT-Mu_4", num_classes=5, classifier="map")
  params, images = _init(model)
  _, weights = models.attention_weights(model, params, images)
  assert weights["MAPHead_0/MultiHeadDotProductAttention_0"].shape == (2, 2, 1, 16)
  assert weights["Transformer/encoderblock_1/MultiHeadDotProductAttention_0"].shape == (2, 2, 16, 16)


@pytest.mark.parametrize("name", ["ViT-Mu_4", "ViViT-Mu_4x2"])
def test_cpu_default_attention_matches_jax_fused_attention(name):
  # On CPUs implementation=None takes the explicit head-major path (faster there);
  # "xla" is jax.nn.dot_product_attention. Same logits and same gradients.
  assert jax.default_backend() == "cpu"
  default = models.create_model(name, num_classes=5)
  fused = default.clone(attention_implementation="xla")
  shape = (2, 16, 16, 3) if name.startswith("ViT") else (2, 4, 16, 16, 3)
  x = jax.random.normal(jax.random.key(1), shape)
  params = default.init(jax.random.key(0), x)["params"]
  # A non-zero head, so that the gradients reach the attention.
  params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(2), p.shape),
                        params)
  loss = lambda m: lambda p: jnp.sum(jnp.square(m.apply({"params": p}, x)))
  np.testing.assert_allclose(default.apply({"params": params}, x),
                             fused.apply({"params": params}, x), rtol=1e-5, atol=1e-5)
  g_default, g_fused = jax.grad(loss(default))(params), jax.grad(loss(fused))(params)
  for a, b in zip(jax.tree.leaves(g_default), jax.tree.leaves(g_fused)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  # The two really are different programs (else this test compares a path with itself).
  jaxpr = lambda m: str(jax.make_jaxpr(lambda p: m.apply({"params": p}, x))(params))
  assert jaxpr(default) != jaxpr(fused)


def test_attention_implementation_is_validated():
  with pytest.raises(ValueError, match="Unknown attention implementation 'flash'"):
    models.create_model("ViT-Mu_4", num_classes=5, attention_implementation="flash")
  xla = models.create_model("ViT-Mu_4", num_classes=5, attention_implementation="xla")
  params, images = _init(xla)
  assert xla.apply({"params": params}, images).shape == (2, 5)
