"""The later families' architecture options (EncoderOptions) in ViT and ViViT.

Their numerics against each family's reference are tested on real key layouts in
tests/checkpoint/test_timm_families.py; here: what each option adds to the model, that
it composes with the fused attention path and scanned layers, and its validation.
"""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import models
from vit_jax.models import EncoderOptions, layers, layout

IMAGES = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 16, 12, 3)), jnp.float32)
FAMILY_OPTIONS = dict(layer_scale=1e-5, num_registers=2, no_embed_class=True,
                      class_token=True, classifier="gap", fc_norm=True, pre_norm=True,
                      mlp_activation="swiglu", mlp_inner_norm=True, qkv_bias="qv",
                      qk_norm=True, rope="eva02", rope_reference_grid=16)


def keys(params):
  return set(flax.traverse_util.flatten_dict(params, sep="/"))


def random_params(model, inputs=IMAGES, seed=1):
  """Random values in the shapes of the model's params (no init run: eval_shape)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), inputs)["params"]
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: (0.3 * rng.standard_normal(x.shape) + (x.ndim == 1)).astype(
      np.float32), shapes)


def run(model, params, inputs=IMAGES):
  return np.asarray(jax.jit(model.apply)({"params": params}, inputs))


def test_options_add_their_parameters_and_nothing_else():
  plain = models.create_model("ViT-Mu_4", num_classes=3)
  rich = models.create_model("ViT-Mu_4", num_classes=3, **FAMILY_OPTIONS)
  p_plain = keys(jax.eval_shape(plain.init, jax.random.key(0), IMAGES)["params"])
  params = jax.eval_shape(rich.init, jax.random.key(0), IMAGES)["params"]
  p_rich = keys(params)
  block = "Transformer/encoderblock_0/"
  added = {"registers", "fc_norm/scale", "fc_norm/bias", "Transformer/pre_norm/scale",
           "Transformer/pre_norm/bias"} | {
      block + k for k in ("LayerScale_0/scale", "LayerScale_1/scale",
                          "MultiHeadDotProductAttention_0/query_norm/scale",
                          "MultiHeadDotProductAttention_0/query_norm/bias",
                          "MultiHeadDotProductAttention_0/key_norm/scale",
                          "MultiHeadDotProductAttention_0/key_norm/bias",
                          "MlpBlock_0/gate/kernel", "MlpBlock_0/gate/bias",
                          "MlpBlock_0/up/kernel", "MlpBlock_0/up/bias",
                          "MlpBlock_0/inner_norm/scale", "MlpBlock_0/inner_norm/bias")}
  removed = {"Transformer/encoder_norm/scale", "Transformer/encoder_norm/bias",
             block + "MultiHeadDotProductAttention_0/key/bias",
             block + "MlpBlock_0/Dense_0/kernel", block + "MlpBlock_0/Dense_0/bias"}
  block1 = {k.replace("encoderblock_0", "encoderblock_1") for k in added | removed
            if k.startswith(block)}
  assert p_rich - p_plain == added | {k for k in block1 if k in p_rich}
  assert p_plain - p_rich == removed | {k for k in block1 if k in p_plain}
  # Registers have no posemb rows (no_embed_class): 4x3 patches.
  assert params["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 12, 32)
  assert params["registers"].shape == (1, 2, 32)
  scale = layers.LayerScale(1e-5).init(jax.random.key(0), jnp.ones((1, 32)))["params"]["scale"]
  np.testing.assert_array_equal(scale, np.full(32, 1e-5, np.float32))


def test_gap_pools_the_patch_tokens_only():
  kw = dict(class_token=True, num_registers=3)
  gap = models.create_model("ViT-Mu_4", num_classes=None, classifier="gap", **kw)
  tokens = models.create_model("ViT-Mu_4", num_classes=None, classifier="unpooled", **kw)
  params = random_params(gap)
  every = run(tokens, params)  # [B, 1 + 3 + 12, D]
  assert every.shape == (2, 16, 32)
  np.testing.assert_allclose(run(gap, params), every[:, 4:].mean(1), atol=1e-5)


@pytest.mark.parametrize("rope", ["eva02", "dinov3"])
def test_rope_qk_norm_and_biases_keep_the_fused_attention_path(rope):
  kw = dict(FAMILY_OPTIONS, rope=rope, rope_reference_grid=16 if rope == "eva02" else None)
  explicit = models.create_model("ViT-Mu_4", num_classes=3, **kw)
  fused = explicit.clone(attention_implementation="xla")  # jax.nn.dot_product_attention
  params = random_params(explicit)
  out = run(explicit, params)
  np.testing.assert_allclose(run(fused, params), out, atol=1e-5)
  # RoPE acts: the same weights without it give other logits.
  assert np.abs(run(explicit.clone(rope=None, rope_reference_grid=None), params) - out).max() > 1e-3


def test_scanned_layers_give_the_same_logits_with_every_option():
  model = models.create_model("ViT-Mu_4", num_classes=3, **FAMILY_OPTIONS)
  params = random_params(model)
  scanned = model.clone(scan_layers=True)
  np.testing.assert_allclose(run(scanned, layout.stack_layers(params)), run(model, params),
                             atol=1e-5)


def test_distilled_model_averages_its_two_heads():
  model = models.create_model("ViT-Mu_4", num_classes=3, distilled=True)
  params = random_params(model)
  # Features (num_classes=None) are the mean of the cls and distillation tokens; the
  # heads are linear, so with head_dist = head the logits are head(features).
  features = run(models.create_model("ViT-Mu_4", num_classes=None, distilled=True),
                 {k: v for k, v in params.items() if not k.startswith("head")})
  head = lambda name: features @ params[name]["kernel"] + params[name]["bias"]
  same = dict(params, head_dist=params["head"])
  np.testing.assert_allclose(run(model, same), head("head"), atol=1e-5)
  # Distinct heads: not the cls head alone.
  assert not np.allclose(run(model, params), head("head"), atol=1e-3)


def test_vivit_takes_the_same_options():
  video = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (1, 4, 8, 8, 3)), jnp.float32)
  for variant, prefix in [("spatio_temporal", ""), ("factorised_encoder", "_SpatialTransformer")]:
    model = models.create_model("ViViT-Mu_4x2", num_classes=3, variant=variant,
                                **dict(FAMILY_OPTIONS, rope_reference_grid=None))
    params = random_params(model, video)
    names = keys(params)
    encoder = "Transformer" if not prefix else "SpatialTransformer"
    assert {"registers" + prefix, "fc_norm" + prefix + "/scale",
            encoder + "/encoderblock_0/LayerScale_0/scale",
            encoder + "/encoderblock_0/MlpBlock_0/gate/kernel"} <= names
    if variant == "spatio_temporal":  # RoPE: the same angles in every frame
      out = run(model, params, video)
      assert np.isfinite(out).all() and np.abs(
          run(model.clone(rope=None), params, video) - out).max() > 1e-3
  model = models.create_model("ViViT-Mu_4x2", num_classes=3,
                              variant="factorised_self_attention", layer_scale=1e-6)
  names = keys(random_params(model, video))
  assert {"Transformer/encoderblock_0/LayerScale_time/scale",
          "Transformer/encoderblock_0/LayerScale_space/scale",
          "Transformer/encoderblock_0/LayerScale_mlp/scale"} <= names
  with pytest.raises(ValueError, match="rope is not implemented for variant"):
    random_params(models.create_model("ViViT-Mu_4x2", variant="factorised_self_attention",
                                      rope="dinov3"), video)
  with pytest.raises(ValueError, match="no place for cls or register tokens"):
    random_params(models.create_model("ViViT-Mu_4x2", variant="factorised_dot_product",
                                      num_registers=2), video)


@pytest.mark.parametrize("kwargs,message", [
    (dict(mlp_activation="relu"), "Unknown mlp_activation 'relu'"),
    (dict(qkv_bias="k"), "Unknown qkv_bias 'k'"),
    (dict(rope="2d"), "Unknown rope '2d'"),
    (dict(rope_reference_grid=16), "without rope"),
    (dict(rope="dinov3", rope_reference_grid=16), "only applies with rope='eva02'"),
    (dict(layer_scale=0.0), "layer_scale is the LayerScale init value"),
    (dict(num_registers=-1), "num_registers must be >= 0"),
    (dict(distilled=True, class_token=False), "distilled=True needs the cls token"),
    (dict(layernorm_epsilon=0.0), "layernorm_epsilon must be > 0"),
])
def test_invalid_options_are_clear_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    EncoderOptions(**kwargs)


def test_token_and_pooling_combinations_are_checked():
  with pytest.raises(ValueError, match="classifier='token' pools the cls token"):
    random_params(models.create_model("ViT-Mu_4", class_token=False))
  with pytest.raises(ValueError, match="distilled=True reads the cls and distillation"):
    random_params(models.create_model("ViT-Mu_4", distilled=True, classifier="gap",
                                      class_token=True))


@pytest.mark.parametrize("variant", ["frame_average", "spatio_temporal"])
def test_inflated_family_vit_on_a_static_video_gives_the_image_logits(variant):
  # A DINOv2-reg / EVA-02-like image model (registers without posemb rows, LayerScale,
  # RoPE, SwiGLU, GAP + fc_norm) inflated into ViViT: with "average" kernels and one
  # temporal index, a static video is the image.
  from vit_jax.checkpoint import inflate_from_image
  from vit_jax.models import vivit

  kw = dict(FAMILY_OPTIONS, rope_reference_grid=None)
  image_model = models.create_model("ViT-Mu_4", num_classes=3, **kw)
  frame = jnp.concatenate([IMAGES[:1], IMAGES[:1, :, :4]], axis=2)  # [1, 16, 16, 3]
  image_params = random_params(image_model, frame)
  video = jnp.repeat(frame[:, None], 2, axis=1)  # [1, 2, 16, 16, 3]: t = 1 tubelet
  video_model = models.create_model("ViViT-Mu_4x2", num_classes=3, variant=variant, **kw)
  init = jax.eval_shape(video_model.init, jax.random.key(0), video)["params"]
  init = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), init)
  params, report = inflate_from_image(image_params, init, variant=variant,
                                      kernel_init_method="average",
                                      token_grid=vivit.token_grid(video_model, video.shape))
  assert not report.reinitialised or all(k.startswith("output_projection")
                                         for k in report.reinitialised)
  params = dict(params, output_projection=image_params["head"])
  np.testing.assert_allclose(run(video_model, params, video), run(image_model, image_params, frame),
                             atol=2e-5)
