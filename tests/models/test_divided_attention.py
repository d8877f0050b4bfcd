"""TimeSformer's divided space-time attention (vivit "divided_space_time"): known answers.

Tiny sizes: width 32, 2 heads, t=3 temporal indices of a 2x2 patch grid (n=4).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from vit_jax.checkpoint.inflate import inflate_from_image
from vit_jax.models import attention_weights, create_model, vivit
from vit_jax.models.options import EncoderOptions
from vit_jax.tools import attention_maps

B, T, N, D = 2, 3, 4, 32


def _random_params(module, *inputs, seed=1):
  """Random non-zero params of `module`'s shapes (no init program: eval_shape only)."""
  shapes = jax.eval_shape(module.init, jax.random.key(0), *inputs)["params"]
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda a: jnp.asarray(0.3 * rng.standard_normal(a.shape), a.dtype), shapes)


def test_cls_token_is_the_per_frame_spatial_attention_averaged_over_frames():
  """With the time projection and the MLP's output at zero, the block is only its spatial
  stage: the patches of frame f are those of the block run on frame f alone (t=1), and
  the cls token is the mean over frames of its per-frame results."""
  block = lambda t: vivit.DividedSpaceTimeBlock(mlp_dim=64, num_heads=2, num_prefix_tokens=1,
                                                temporal_grid=t, options=EncoderOptions())
  x = jax.random.normal(jax.random.key(0), (B, 1 + T * N, D))
  params = _random_params(block(T), x)
  flat = traverse_util.flatten_dict(params, sep="/")
  for key in ("Dense_time/kernel", "Dense_time/bias", "MlpBlock/Dense_1/kernel",
              "MlpBlock/Dense_1/bias"):
    flat[key] = jnp.zeros_like(flat[key])
  params = traverse_util.unflatten_dict(flat, sep="/")
  apply = jax.jit(lambda t, p, x: block(t).apply({"params": p}, x)[0], static_argnums=0)
  out = apply(T, params, x)

  frames = x[:, 1:].reshape(B, T, N, D)
  per_frame = [apply(1, params, jnp.concatenate([x[:, :1], frames[:, f]], 1))
               for f in range(T)]  # T x [B, 1 + N, D]
  for f in range(T):
    np.testing.assert_allclose(out[:, 1 + f * N:1 + (f + 1) * N], per_frame[f][:, 1:], atol=1e-5)
  cls_mean = jnp.mean(jnp.stack([p[:, 0] for p in per_frame]), axis=0)
  np.testing.assert_allclose(out[:, 0], cls_mean, atol=1e-5)
  # Not any one frame's cls: the frames differ, so the average is a real mixture.
  assert min(float(jnp.abs(p[:, 0] - out[:, 0]).max()) for p in per_frame) > 1e-3


@pytest.fixture(scope="module")
def model_and_params():
  model = create_model("TimeSformer-Mu_4", num_classes=5, num_layers=1)
  x = jax.random.uniform(jax.random.key(3), (B, T, 8, 8, 3), minval=-1, maxval=1)
  apply = jax.jit(lambda p, x: model.apply({"params": p}, x))  # one program a clip shape
  return model, _random_params(model, x), x, apply


def test_frame_permutation_without_time_embedding(model_and_params):
  """Without time embeddings nothing tells the frames apart: permuting them permutes the
  temporal attention's rows and columns and leaves the logits (cls averaged over frames)
  unchanged; with the time embedding the logits change."""
  model, params, x, apply = model_and_params
  order = jnp.array([2, 0, 1])
  flat = traverse_util.flatten_dict(params, sep="/")
  key = "Transformer/posembed_space_time/time_embedding"
  flat[key] = jnp.zeros_like(flat[key])
  no_time = traverse_util.unflatten_dict(flat, sep="/")
  inspect = jax.jit(lambda p, x: attention_weights(model, p, x))
  logits, weights = inspect(no_time, x)
  logits_p, weights_p = inspect(no_time, x[:, order])
  np.testing.assert_allclose(logits_p, logits, atol=1e-5)
  name = "Transformer/encoderblock_0/MultiHeadDotProductAttention_time"
  assert weights[name].shape == (B * N, 2, T, T)
  np.testing.assert_allclose(weights_p[name], weights[name][:, :, order][:, :, :, order],
                             atol=1e-5)
  assert weights["Transformer/encoderblock_0/MultiHeadDotProductAttention_space"].shape == (
      B * T, 2, 1 + N, 1 + N)
  assert np.abs(apply(params, x[:, order]) - apply(params, x)).max() > 1e-3


def test_time_table_follows_the_frame_count_by_nearest_rows(model_and_params):
  """6 frames read time rows [0, 0, 1, 1, 2, 2] of the 3 stored (torch's nearest)."""
  np.testing.assert_array_equal(vivit.nearest_rows(3, 6), [0, 0, 1, 1, 2, 2])
  np.testing.assert_array_equal(vivit.nearest_rows(3, 5), [0, 0, 1, 1, 2])
  np.testing.assert_array_equal(vivit.nearest_rows(4, 2), [0, 2])
  model, params, x, apply = model_and_params
  # A clip whose frames each appear twice, with time rows that repeat likewise, gives the
  # logits of a model whose time table was written out at 6 rows.
  flat = traverse_util.flatten_dict(params, sep="/")
  key = "Transformer/posembed_space_time/time_embedding"
  wide = dict(flat, **{key: flat[key][:, vivit.nearest_rows(3, 6)]})
  doubled = jnp.repeat(x, 2, axis=1)
  np.testing.assert_allclose(apply(params, doubled),
                             apply(traverse_util.unflatten_dict(wide, sep="/"), doubled),
                             atol=1e-5)


def test_options_that_do_not_apply_are_refused():
  x = jnp.zeros((1, 2, 8, 8, 3))
  with pytest.raises(ValueError, match="drop rope / posemb_resize"):
    create_model("TimeSformer-Mu_4", posemb_resize="bicubic").init(jax.random.key(0), x)


def test_timesformer_b_has_the_reference_parameter_count():
  """121,566,352: transformers' TimesformerForVideoClassification at its defaults (ViT-B/16,
  8 frames, 224 px) with 400 classes (the paper's 121.4M)."""
  model = create_model("TimeSformer-B_16", num_classes=400)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 224, 224, 3)))
  assert sum(a.size for a in jax.tree.leaves(shapes)) == 121_566_352


def test_attention_maps_of_a_divided_model(model_and_params):
  """Rollout over both stages of each block: maps per frame; each space row of the cls
  token is a distribution, so the maps over the patches sum to at most 1."""
  model, params, x, _ = model_and_params
  maps = attention_maps.compute(model, params, x)
  assert maps.grid == (T, 2, 2)
  assert maps.rollout.shape == (B, T, 2, 2)
  assert maps.layer_heads.shape == (2, B, 2, T, 2, 2)  # (time, space) stages of 1 block
  assert np.all(maps.rollout > 0) and np.all(maps.rollout.sum((1, 2, 3)) <= 1 + 1e-5)
  # The time stage: the cls token's row is the identity, so its raw map is zero.
  np.testing.assert_allclose(maps.layer_heads[0], 0.0, atol=1e-7)
  # The space stage: the cls row is the frames' mean, a distribution over cls and patches.
  assert np.all(maps.layer_heads[1].sum((2, 3, 4)) < 1)


def test_inflated_from_an_image_vit_a_static_clip_gives_the_image_logits():
  """TimeSformer's initialisation (inflate_from_image, variant divided_space_time): the
  attention of both stages from the image attention, Dense_time and the time table zero,
  so a clip of one repeated frame gives the image ViT's logits on that frame."""
  image_model = create_model("ViT-Mu_4", num_classes=5)
  frame = jax.random.uniform(jax.random.key(4), (B, 8, 8, 3), minval=-1, maxval=1)
  image_params = _random_params(image_model, frame)
  video_model = create_model("TimeSformer-Mu_4", num_classes=5, gelu_approximate=True)
  clip = jnp.repeat(frame[:, None], T, axis=1)
  zeros = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype),
                       jax.eval_shape(video_model.init, jax.random.key(0), clip)["params"])
  params, report = inflate_from_image(image_params, zeros, variant="divided_space_time")
  notes = {e.key: e.action for e in report.entries}
  assert notes["Transformer/posembed_space_time/pos_embedding"] == "copied"
  assert notes["Transformer/encoderblock_1/MultiHeadDotProductAttention_time/query/kernel"] == (
      "copied")
  assert not report.ignored
  expected = jax.jit(lambda p, x: image_model.apply({"params": p}, x))(image_params, frame)
  logits = jax.jit(lambda p, x: video_model.apply({"params": p}, x))(params, clip)
  np.testing.assert_allclose(logits, expected, atol=1e-5)
  assert np.abs(expected).max() > 0.1
