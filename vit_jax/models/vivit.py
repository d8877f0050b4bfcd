"""ViViT: video vision transformers (Arnab et al., 2021) in Flax linen.

Videos [B, T, H, W, C] in [-1, 1] -> logits [B, num_classes]. Parameter names
follow Scenic's implementation (docs/checkpoint_formats.md, 'ViViT: Scenic') so its
checkpoints map over:

  embedding/{kernel [t, h, w, C, D] (tubelet) or [h, w, C, D] (frame), bias}

  spatio_temporal, factorised_dot_product (one encoder over all t*gh*gw tokens):
    cls [1, 1, D]                                  only with classifier="token"
    Transformer/posembed_input/pos_embedding       [1, t*gh*gw(+1), D]
    Transformer/encoderblock_{i}/{LayerNorm_0, MultiHeadDotProductAttention_0,
                                  LayerNorm_1, MlpBlock_0}
    Transformer/encoder_norm
  factorised_self_attention (gap only):
    Transformer/posembed_input/pos_embedding       [1, t*gh*gw, D]
    Transformer/encoderblock_{i}/{LayerNorm_time, MultiHeadDotProductAttention_time,
                                  LayerNorm_space, MultiHeadDotProductAttention_space,
                                  LayerNorm_mlp, MlpBlock}
    Transformer/encoder_norm
  factorised_encoder (frame_average has only the spatial half):
    cls_SpatialTransformer, SpatialTransformer/...   posemb [1, gh*gw(+1), D]
    cls_TemporalTransformer, TemporalTransformer/... posemb [1, t(+1), D]

  divided_space_time (TimeSformer; one encoder over the cls token and all t*gh*gw tokens):
    cls [1, 1, D]                                  only with classifier="token"
    Transformer/posembed_space_time/pos_embedding  [1, gh*gw(+1), D]  every frame's
    Transformer/posembed_space_time/time_embedding [1, t, D]
    Transformer/encoderblock_{i}/{LayerNorm_time, MultiHeadDotProductAttention_time,
                                  Dense_time, LayerNorm_space,
                                  MultiHeadDotProductAttention_space, LayerNorm_mlp,
                                  MlpBlock}
    Transformer/encoder_norm

  factorised_encoder_tokens (VideoPrism; no cls, every token goes through both):
    SpatialTransformer/...  posemb [1, gh*gw, D]   each frame's patches
    TemporalTransformer/... posemb [1, t, D]       each spatial position's t tokens
    AttentionPool/{probe, query, key, value, per_dim_scale, out, LayerNorm}
                                                   classifier "map" (the default)

  pooler/...                                       classifier="attentive" (V-JEPA 2):
                                                   models.attentive_pooler
  pre_logits/{kernel, bias}                        only with representation_size
  output_projection/{kernel, bias}                 zero-initialised

No `posembed_input` with posemb="none" (V-JEPA 2, whose rope="vjepa2" rotates queries
and keys by each token's (temporal index, row, column) instead).

t = T / tubelet_size temporal indices, gh x gw = H/h x W/w patches; tokens are
time-major (all patches of temporal index 0, then of index 1, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.models import attentive_pooler, layers, numerics, positions, vit
from vit_jax.models.options import EncoderOptions, OptionsClone

VARIANTS = ("spatio_temporal", "factorised_encoder", "frame_average",
            "factorised_self_attention", "factorised_dot_product")
# TimeSformer's divided space-time attention (Bertasius et al., 2021), the fifth variant:
# not one of the ViViT paper's, so not one `inflate_from_image` initialises.
DIVIDED = "divided_space_time"
# VideoPrism's factorised encoder (Zhao et al., 2024): unlike ViViT's Model 2, the spatial
# encoder's every output token (not one per frame) goes on to the temporal encoder.
FACTORISED_TOKENS = "factorised_encoder_tokens"
ENCODER_VARIANTS = VARIANTS + (DIVIDED, FACTORISED_TOKENS)
EMBEDDINGS = ("tubelet", "frame")
ATTENTION_ORDERS = ("time_space", "space_time")
# The paper (and Scenic) pool the factorised-attention models by averaging: their
# blocks reshape the tokens to a [t, gh*gw] grid that has no place for a cls token.
_CLASSIFIERS = {
    "spatio_temporal": ("token", "gap", "attentive"),
    "factorised_encoder": ("token", "gap"),
    "frame_average": ("token", "gap"),
    "factorised_self_attention": ("gap",),
    "factorised_dot_product": ("gap",),
    DIVIDED: ("token", "gap"),
    FACTORISED_TOKENS: ("map", "gap"),
}
DEFAULT_TEMPORAL_ENCODER_LAYERS = 4  # ViViT-B/L factorised encoder (paper, Scenic configs)
# Position embeddings of the video models (`posemb`): "learn" (a parameter over all
# tokens, the cls row first) or "sincos1d" (VideoMAE's fixed table over the t*gh*gw
# time-major tokens, positions.sincos1d_posemb: not a parameter, computed for the input).
# "none": no absolute position embedding (V-JEPA 2: RoPE only).
VIDEO_POSEMB_TYPES = ("learn", "sincos1d", "none")


def _time_major(x: jax.Array, temporal_grid: int) -> tuple[jax.Array, int]:
  """[B, t*n, ...] -> ([B, t, n, ...], n)."""
  batch, length = x.shape[:2]
  n = length // temporal_grid
  return x.reshape((batch, temporal_grid, n) + x.shape[2:]), n


def _refuse_mask(mask: Optional[jax.Array], variant: str) -> None:
  if mask is not None:
    raise ValueError(f"A token mask is not supported by the {variant!r} variant's blocks; "
                     "the spatio_temporal and factorised_encoder variants take one.")


class FactorisedDotProductAttention(layers.MultiHeadDotProductAttention):
  """Model 4's attention: half of the heads attend over time, half over space.

  Same parameters as MultiHeadDotProductAttention (query/key/value [D, H, hd],
  out [H, hd, D]); heads [0, H/2) attend across the t temporal indices at one
  spatial position, heads [H/2, H) across the n patches of one temporal index
  (Scenic's order), and both halves are concatenated before `out`.
  Sown weights: `attention_weights_time` [B*n, H/2, t, t] and
  `attention_weights_space` [B*t, H/2, n, n].
  """
  temporal_grid: int = 1

  @nn.compact
  def __call__(self, inputs_q: jax.Array, inputs_kv: Optional[jax.Array] = None,
               deterministic: bool = True, mask: Optional[jax.Array] = None) -> jax.Array:
    """[B, t*n, D] -> [B, t*n, D]."""
    _refuse_mask(mask, "factorised_dot_product")
    if inputs_kv is not None:
      raise ValueError("Factorised dot-product attention is self-attention only.")
    if self.num_heads % 2:
      raise ValueError(f"Factorised dot-product attention splits the heads between time "
                       f"and space; num_heads={self.num_heads} must be even.")
    batch, length, width = inputs_q.shape
    if length % self.temporal_grid:
      raise ValueError(f"{length} tokens do not form {self.temporal_grid} temporal indices "
                       "(a cls token cannot be used with factorised attention).")
    head_dim = self.head_dim(width)
    half = self.num_heads // 2
    t = self.temporal_grid
    qkv = self.project_qkv(inputs_q, head_dim)
    score = self.score_params(head_dim)  # heads on axis 0: [:half] time, [half:] space
    # [B, t*n, H, hd] -> [B, t, n, H, hd]
    qkv = [_time_major(a, t)[0] for a in qkv]
    n = qkv[0].shape[2]

    # Time heads: [B, t, n, H/2, hd] -> [B, n, t, H/2, hd] -> [B*n, t, H/2, hd]
    time_in = [a[..., :half, :].transpose(0, 2, 1, 3, 4).reshape(batch * n, t, half, head_dim)
               for a in qkv]
    time_out = self.attend(*time_in, deterministic, weights_name="attention_weights_time",
                           score_params={k: v[:half] for k, v in score.items()})
    # [B*n, t, H/2, hd] -> [B, t, n, H/2, hd]
    time_out = time_out.reshape(batch, n, t, half, head_dim).transpose(0, 2, 1, 3, 4)

    # Space heads: [B, t, n, H/2, hd] -> [B*t, n, H/2, hd]
    space_in = [a[..., half:, :].reshape(batch * t, n, half, head_dim) for a in qkv]
    space_out = self.attend(*space_in, deterministic, weights_name="attention_weights_space",
                            score_params={k: v[half:] for k, v in score.items()})
    space_out = space_out.reshape(batch, t, n, half, head_dim)

    out = jnp.concatenate([time_out, space_out], axis=3)  # [B, t, n, H, hd]
    out = out.reshape(batch, length, self.num_heads, head_dim)  # [B, t*n, H, hd]
    return self.project_out(out, width)


class FactorisedDotProductBlock(layers.Encoder1DBlock):
  """Encoder1DBlock whose attention is FactorisedDotProductAttention (Model 4).

  The attention keeps the name `MultiHeadDotProductAttention_0`, so the block's
  parameters are those of a ViT block.
  """
  temporal_grid: int = 1

  def attention(self, **overrides: Any) -> nn.Module:
    return FactorisedDotProductAttention(
        num_heads=self.num_heads, options=self.options, temporal_grid=self.temporal_grid,
        name="MultiHeadDotProductAttention_0", **overrides)


class FactorisedSelfAttentionBlock(layers.Encoder1DBlock):
  """Model 3's block: self-attention over time, then over space, then the MLP.

  [B, t*n, D] -> ([B, t*n, D], None), the `nn.scan`-compatible signature of
  Encoder1DBlock. Each stage is pre-LN with its own residual and stochastic depth
  (dropped per video). Parameters: LayerNorm_time, MultiHeadDotProductAttention_time,
  LayerNorm_space, MultiHeadDotProductAttention_space, LayerNorm_mlp, MlpBlock.
  Sown weights: time [B*n, H, t, t], space [B*t, H, n, n]. With `options.layer_scale`
  each stage has its LayerScale (LayerScale_time, LayerScale_space, LayerScale_mlp).

  With `zero_init_time_attention` the temporal attention's `out` projection
  starts at zero, so the block starts as an image block. Only `out` is zeroed:
  with all of query/key/value/out at zero (Scenic's "zero" kernel init) no
  gradient reaches any of them and the temporal attention never trains.
  """
  temporal_grid: int = 1
  attention_order: str = "time_space"
  zero_init_time_attention: bool = False

  def _attend_along(self, x: jax.Array, axis: str,
                    stochastic_depth: Union[float, jax.Array],
                    deterministic: bool) -> jax.Array:
    """Residual attention stage along `axis` ("time" or "space"): [B, t*n, D] -> same."""
    grid, n = _time_major(x, self.temporal_grid)  # [B, t, n, D]
    batch, t, _, width = grid.shape
    if axis == "time":
      # [B, t, n, D] -> [B, n, t, D] -> [B*n, t, D]
      y = grid.transpose(0, 2, 1, 3).reshape(batch * n, t, width)
    else:
      y = grid.reshape(batch * t, n, width)  # [B, t, n, D] -> [B*t, n, D]
    y = self.norm(name=f"LayerNorm_{axis}")(y)
    overrides = {"name": f"MultiHeadDotProductAttention_{axis}"}
    if axis == "time" and self.zero_init_time_attention:
      overrides["out_kernel_init"] = nn.initializers.zeros
    y = self.attention(**overrides)(y, deterministic=deterministic)
    if axis == "time":
      # [B*n, t, D] -> [B, n, t, D] -> [B, t, n, D]
      y = y.reshape(batch, n, t, width).transpose(0, 2, 1, 3)
    y = y.reshape(x.shape)  # [B, t, n, D] -> [B, t*n, D]
    return self.residual(x, y, stochastic_depth, deterministic,
                         layer_scale_name=f"LayerScale_{axis}")

  @nn.compact
  def __call__(self, x: jax.Array, stochastic_depth: Union[float, jax.Array] = 0.0,
               deterministic: bool = True, mask: Optional[jax.Array] = None
               ) -> tuple[jax.Array, None]:
    """[B, t*n, D] -> ([B, t*n, D], None)."""
    _refuse_mask(mask, "factorised_self_attention")
    if self.attention_order not in ATTENTION_ORDERS:
      raise ValueError(f"Unknown attention_order {self.attention_order!r}; "
                       f"choose one of {ATTENTION_ORDERS}.")
    if x.shape[1] % self.temporal_grid:
      raise ValueError(f"{x.shape[1]} tokens do not form {self.temporal_grid} temporal "
                       "indices (a cls token cannot be used with factorised attention).")
    for axis in self.attention_order.split("_"):
      x = self._attend_along(x, axis, stochastic_depth, deterministic)
    y = self.norm(name="LayerNorm_mlp")(x)
    y = layers.MlpBlock(mlp_dim=self.mlp_dim, options=self.options, name="MlpBlock")(
        y, deterministic=deterministic)
    y = self.layer_scale(y, "LayerScale_mlp")
    return x + layers.DropPath()(y, stochastic_depth, deterministic), None


def nearest_rows(stored: int, wanted: int) -> np.ndarray:
  """The rows torch's F.interpolate(mode="nearest") reads to resize `stored` rows to
  `wanted`: floor(i * stored / wanted), as TimeSformer resizes its embeddings."""
  return np.minimum(np.floor(np.arange(wanted) * (stored / wanted)).astype(np.int32),
                    stored - 1)


class SpaceTimePositionEmbs(nn.Module):
  """TimeSformer's position embedding: one spatial table shared by the frames, plus time.

  [B, P + t*n, D] -> same (P prefix tokens, then t time-major frames of n = gh*gw
  patches). `pos_embedding` [1, P + n, D] adds its first P rows to the prefix tokens and
  the rest to every frame's patches; `time_embedding` [1, t, D] adds row i to every patch
  of temporal index i (not to the prefix tokens). Another grid or frame count than the
  stored ones reads the nearest stored rows (the spatial table is a square grid), as
  TimeSformer does (F.interpolate(mode="nearest")).
  """
  num_prefix_tokens: int
  temporal_grid: int
  patch_grid: tuple[int, int]
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    batch, length, width = x.shape
    p, t = self.num_prefix_tokens, self.temporal_grid
    gh, gw = self.patch_grid
    n = gh * gw
    if length != p + t * n:
      raise ValueError(f"{length} tokens are not {p} prefix tokens and {t} frames of "
                       f"{gh}x{gw} patches.")
    stored = {name: self.get_variable("params", name).shape[1]
              for name in ("pos_embedding", "time_embedding")
              if self.has_variable("params", name)}
    # TimeSformer's init: the spatial table as ViT's, time zero (an image model's start).
    posemb = self.param("pos_embedding", nn.initializers.normal(stddev=0.02),
                        (1, stored.get("pos_embedding", p + n), width), self.param_dtype)
    time = self.param("time_embedding", nn.initializers.zeros,
                      (1, stored.get("time_embedding", t), width), self.param_dtype)
    spatial = posemb[:, p:]  # [1, n', D]
    if spatial.shape[1] != n:
      sh, sw = positions.grid_from_rows(posemb.shape[1], p)
      grid = spatial.reshape(sh, sw, width)[nearest_rows(sh, gh)][:, nearest_rows(sw, gw)]
      spatial = grid.reshape(1, n, width)
    if time.shape[1] != t:
      time = time[:, nearest_rows(time.shape[1], t)]
    # [B, t, n, D] + [1, 1, n, D] + [1, t, 1, D]
    patches = _time_major(x[:, p:], t)[0] + spatial[:, None] + time[:, :, None]
    prefix = x[:, :p] + posemb[:, :p]
    return jnp.concatenate([prefix, patches.reshape(batch, t * n, width)], axis=1)


class SequencePositionEmbs(nn.Module):
  """A learned position embedding `pos_embedding` [1, L0, D] of a 1-D sequence (the
  temporal encoder's frames) added to [B, L, D].

  Another length L is served by resizing the stored rows in the graph with `resize`
  (options.POSEMB_RESIZE, as a 1 x L0 grid: VideoPrism's interpolate_pos_encoding is
  "bilinear_antialias"); None refuses it.
  """
  resize: Optional[str] = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    length = x.shape[1]
    stored = (self.get_variable("params", "pos_embedding").shape[1]
              if self.has_variable("params", "pos_embedding") else length)
    if stored != length and self.resize is None:
      raise ValueError(f"The temporal position embedding has {stored} rows, the clip gives "
                       f"{length} temporal indices: feed {stored} frames (per tubelet), or "
                       "build the model with posemb_resize to resize it.")
    posemb = self.param("pos_embedding", nn.initializers.normal(stddev=0.02),
                        (1, stored, x.shape[-1]), self.param_dtype)
    if stored != length:
      posemb = positions.resize_posemb_grid(posemb, (1, stored), (1, length), self.resize)
    return x + posemb.astype(x.dtype)


class DividedSpaceTimeBlock(layers.Encoder1DBlock):
  """TimeSformer's block: temporal attention, spatial attention, then the MLP.

  [B, P + t*n, D] -> ([B, P + t*n, D], None), time-major patches after P prefix
  tokens (the cls token). As transformers' TimesformerLayer (divided_space_time):
    1. time: each spatial position's t patches attend to each other (LayerNorm_time,
       MultiHeadDotProductAttention_time); the branch is dropped per (video, position),
       then projected by `Dense_time` [D, D] (TimeSformer's temporal_fc, zero-initialised
       so a fresh block starts as an image block) and added; the prefix tokens skip it.
    2. space: each frame's n patches and the prefix tokens attend to each other
       (LayerNorm_space, MultiHeadDotProductAttention_space); each prefix token's t
       per-frame outputs are averaged over the frames before its residual add.
    3. MLP (LayerNorm_mlp, MlpBlock), residual.
  Sown weights: time [B*n, H, t, t], space [B*t, H, P+n, P+n]. With `options.layer_scale`
  each branch has its LayerScale (LayerScale_time, LayerScale_space, LayerScale_mlp).
  """
  temporal_grid: int = 1

  def _branch_end(self, y: jax.Array, stochastic_depth: Union[float, jax.Array],
                  deterministic: bool, axis: str) -> jax.Array:
    """Dropout and stochastic depth of a branch, per row of y (a position or a frame)."""
    y = self.layer_scale(y, f"LayerScale_{axis}")
    y = nn.Dropout(rate=self.options.dropout_rate)(y, deterministic=deterministic)
    return layers.DropPath()(y, stochastic_depth, deterministic)

  @nn.compact
  def __call__(self, x: jax.Array, stochastic_depth: Union[float, jax.Array] = 0.0,
               deterministic: bool = True, mask: Optional[jax.Array] = None
               ) -> tuple[jax.Array, None]:
    """[B, P + t*n, D] -> ([B, P + t*n, D], None)."""
    _refuse_mask(mask, DIVIDED)
    p, t = self.num_prefix_tokens, self.temporal_grid
    batch, length, width = x.shape
    if (length - p) % t:
      raise ValueError(f"{length} tokens are not {p} prefix tokens and {t} temporal indices.")
    prefix = x[:, :p]  # [B, P, D]
    grid, n = _time_major(x[:, p:], t)  # [B, t, n, D]

    # Time: [B, t, n, D] -> [B, n, t, D] -> [B*n, t, D]
    y = grid.transpose(0, 2, 1, 3).reshape(batch * n, t, width)
    y = self.norm(name="LayerNorm_time")(y)
    y = self.attention(name="MultiHeadDotProductAttention_time")(y, deterministic=deterministic)
    y = self._branch_end(y, stochastic_depth, deterministic, "time")
    y = y.reshape(batch, n, t, width).transpose(0, 2, 1, 3)  # -> [B, t, n, D]
    grid = grid + nn.Dense(width, kernel_init=nn.initializers.zeros, name="Dense_time",
                           **numerics.linear_kwargs(self.options))(y)

    # Space: every frame's sequence [B*t, P + n, D] holds its own copy of the prefix tokens.
    frames = grid.reshape(batch * t, n, width)  # [B, t, n, D] -> [B*t, n, D]
    y = jnp.concatenate([jnp.repeat(prefix, t, axis=0), frames], axis=1)
    y = self.norm(name="LayerNorm_space")(y)
    y = self.attention(name="MultiHeadDotProductAttention_space")(y, deterministic=deterministic)
    y = self._branch_end(y, stochastic_depth, deterministic, "space")
    prefix = prefix + jnp.mean(y[:, :p].reshape(batch, t, p, width), axis=1)  # over frames
    patches = grid.reshape(batch, t * n, width) + y[:, p:].reshape(batch, t * n, width)
    x = jnp.concatenate([prefix, patches], axis=1)

    y = self.norm(name="LayerNorm_mlp")(x)
    y = layers.MlpBlock(mlp_dim=self.mlp_dim, options=self.options, name="MlpBlock")(
        y, deterministic=deterministic)
    y = self.layer_scale(y, "LayerScale_mlp")
    return x + layers.DropPath()(y, stochastic_depth, deterministic), None


class AttentionPool(OptionsClone, nn.Module):
  """VideoPrism's attention pooling (transformers' VideoPrismMultiheadAttentionPoolingHead,
  then its `head_layernorm`): [B, L, D] -> [B, D].

  A learned `probe` [1, 1, D] attends over the tokens with `query`/`key`/`value` kernels
  [D, H, hd] of hd = mlp_dim / H (Praxis's hidden width, not D / H); the query is scaled
  per dimension by softplus(`per_dim_scale` [hd]) * 1.442695 / sqrt(hd) (1.442695 =
  1 / softplus(0): a zero `per_dim_scale` is plain 1/sqrt(hd) scaling); `out` [H, hd, D]
  projects back, and a LayerNorm follows. No residual and no MLP (unlike MAPHead); no
  logit cap. Sown weights: `attention_weights` [B, H, 1, L].
  """
  mlp_dim: int
  num_heads: int
  options: EncoderOptions = EncoderOptions()

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    o = self.options
    batch, _, width = x.shape
    if self.mlp_dim % self.num_heads:
      raise ValueError(f"AttentionPool: mlp_dim={self.mlp_dim} is not divisible by "
                       f"num_heads={self.num_heads}.")
    head_dim = self.mlp_dim // self.num_heads
    dense = lambda name, **kw: nn.DenseGeneral(
        name=name, kernel_init=layers.KERNEL_INIT, **numerics.linear_kwargs(o), **kw)
    probe = self.param("probe", nn.initializers.xavier_uniform(), (1, 1, width), o.param_dtype)
    per_dim_scale = self.param("per_dim_scale", nn.initializers.zeros, (head_dim,),
                               o.param_dtype)
    probe = jnp.tile(probe.astype(x.dtype), [batch, 1, 1])  # [B, 1, D]
    heads = (self.num_heads, head_dim)
    query = dense("query", features=heads)(probe)  # [B, 1, H, hd]
    query = query * (1.442695041 / np.sqrt(head_dim) * jax.nn.softplus(per_dim_scale)
                     ).astype(query.dtype)
    key = dense("key", features=heads)(x)  # [B, L, H, hd]
    value = dense("value", features=heads)(x)
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
    weights = jax.nn.softmax(logits, axis=-1)  # [B, H, 1, L]
    if o.sow_attention_weights:
      self.sow("intermediates", "attention_weights", weights)
    weights = nn.Dropout(rate=o.attention_dropout_rate)(weights, deterministic=deterministic)
    pooled = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(value.dtype), value)
    pooled = dense("out", features=width, axis=(-2, -1))(pooled)[:, 0]  # [B, D]
    return layers.layer_norm(o, name="LayerNorm")(pooled)


class VideoEncoder(vit.Encoder):
  """vit.Encoder (posemb, dropout, blocks, encoder_norm) with the block of a variant.

  variant: one of ENCODER_VARIANTS. "factorised_self_attention",
  "factorised_dot_product" and "divided_space_time" have their own blocks, which need
  `temporal_grid`, the number of temporal indices of the time-major [B, (P +) t*n, D]
  input; the others (and the factorised encoder's spatial and temporal encoders) use
  the ViT block. "divided_space_time" also has its own position embedding
  (SpaceTimePositionEmbs `posembed_space_time`, on the `patch_grid` (gh, gw)), which
  replaces vit.Encoder's [1, L, D] table: its model builds it with
  add_position_embedding=False.
  """
  variant: str = "spatio_temporal"
  temporal_grid: int = 1
  attention_order: str = "time_space"
  zero_init_time_attention: bool = False
  # The position embedding is SequencePositionEmbs (a 1-D table resized with
  # options.posemb_resize) in place of vit.Encoder's; needs add_position_embedding=False.
  sequence_posemb: bool = False

  def block(self) -> tuple[type[nn.Module], dict[str, Any]]:
    block_cls, kwargs = super().block()
    if self.variant == "factorised_dot_product":
      return FactorisedDotProductBlock, dict(kwargs, temporal_grid=self.temporal_grid)
    if self.variant == "factorised_self_attention":
      return FactorisedSelfAttentionBlock, dict(
          kwargs, temporal_grid=self.temporal_grid, attention_order=self.attention_order,
          zero_init_time_attention=self.zero_init_time_attention)
    if self.variant == DIVIDED:
      return DividedSpaceTimeBlock, dict(kwargs, temporal_grid=self.temporal_grid)
    if self.variant not in VARIANTS:
      raise ValueError(f"Unknown ViViT variant {self.variant!r}; choose one of "
                       f"{ENCODER_VARIANTS}.")
    return block_cls, kwargs

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True,
               token_mask: Optional[jax.Array] = None,
               token_positions: Optional[tuple[jax.Array, jax.Array]] = None) -> jax.Array:
    """[B, L, D] -> [B, L, D] (vit.Encoder), after the divided variant's position embedding."""
    if self.variant == DIVIDED:
      if self.add_position_embedding or self.patch_grid is None:
        raise ValueError("The divided_space_time encoder adds its own position embedding: "
                         "build it with add_position_embedding=False and the patch_grid.")
      x = SpaceTimePositionEmbs(self.num_prefix_tokens, self.temporal_grid, self.patch_grid,
                                self.options.param_dtype, name="posembed_space_time")(x)
    elif self.sequence_posemb:
      if self.add_position_embedding:
        raise ValueError("sequence_posemb replaces the encoder's position embedding: build "
                         "it with add_position_embedding=False.")
      x = SequencePositionEmbs(self.options.posemb_resize, self.options.param_dtype,
                               name="posembed_input")(x)
    return super().__call__(x, deterministic, token_mask, token_positions)


class VideoTransformer(vit.TransformerModel):
  """ViViT classifier: videos [B, T, H, W, C] in [-1, 1] -> logits [B, num_classes].

  Architecture options (EncoderOptions) act as in ViT, per encoder: the factorised
  encoders' prefix tokens and fc_norm are named after the encoder (`registers_
  SpatialTransformer`, `fc_norm_TemporalTransformer`, as `cls_SpatialTransformer`);
  `rope` rotates by the spatial position (the same angles in every frame; the temporal
  encoder has none). Not for ViViT: `distilled`; prefix tokens and rope with the
  factorised attention variants.

  Attributes:
    num_classes: size of the zero-initialised `output_projection`; None returns the
      pooled representation [B, D].
    patch_size: spatial patch (h, w) or one int for square patches.
    tubelet_size: frames per tubelet (t of the 3-D conv); must be 1 with
      embedding="frame".
    variant: one of ENCODER_VARIANTS: the paper's Models 1-4 and the frame-averaging
      baseline of Model 2 (VARIANTS), or TimeSformer's "divided_space_time"
      (DividedSpaceTimeBlock; its position embedding is SpaceTimePositionEmbs, resized
      to another frame count or grid by nearest rows, as TimeSformer does), or
      VideoPrism's "factorised_encoder_tokens" (encode_tokens; classifier "map" is its
      AttentionPool).
    embedding: "tubelet" (3-D conv, kernel [t, h, w, C, D], stride = kernel) or
      "frame" (uniform frame sampling: 2-D conv on every frame, kernel [h, w, C, D];
      sampling the frames from a longer video is the input pipeline's job).
    classifier: "token", "gap" or (spatio_temporal) "attentive": V-JEPA 2's pooler
      (models.attentive_pooler) reads all tokens; None picks the variant's default
      ("token" for spatio_temporal and the factorised encoders, "gap" for the
      factorised attention models, which only support "gap").
    temporal_encoder_layers / _mlp_dim / _heads: the factorised encoder's temporal
      transformer (defaults: 4 layers, the spatial encoder's width and heads).
    attention_order: factorised_self_attention only: "time_space" or "space_time".
    zero_init_time_attention: factorised_self_attention only: zero the temporal
      attention's output projection so each block starts as an image block.
    posemb: one of VIDEO_POSEMB_TYPES; "sincos1d" needs a single encoder over all
      tokens (not the factorised encoders) and no prefix tokens.
    fc_norm_epsilon: epsilon of `fc_norm` when it differs from the other LayerNorms'
      (transformers' VideoMAE classifier: torch's default 1e-5 beside the configured
      layer_norm_eps); None: `options.layernorm_epsilon`.
    pooler_layers / pooler_mlp_dim: classifier="attentive" only: the pooler's
      self-attention blocks (default 3) and MLP width (default 4 * hidden_size).
    options: EncoderOptions, as in vit.VisionTransformer; every variant supports every
      attention_score. `stochastic_depth` grows linearly from 0 over each encoder's
      depth; in the spatial encoder of the factorised encoders a block is dropped per
      frame sequence (each frame is an example of that encoder), in the other
      encoders per video.
    Others as in vit.TransformerModel.
  """
  tubelet_size: int = 2
  variant: str = "spatio_temporal"
  embedding: str = "tubelet"
  classifier: Optional[str] = None
  temporal_encoder_layers: Optional[int] = None
  temporal_encoder_mlp_dim: Optional[int] = None
  temporal_encoder_heads: Optional[int] = None
  attention_order: Optional[str] = None
  zero_init_time_attention: bool = False
  posemb: str = "learn"
  fc_norm_epsilon: Optional[float] = None
  pooler_layers: Optional[int] = None
  pooler_mlp_dim: Optional[int] = None

  @property
  def classifier_in_use(self) -> str:
    """`classifier`, or the variant's default when it is None ("token" or "gap")."""
    return self.classifier or _CLASSIFIERS[self.variant][0]

  def check_config(self) -> None:
    """Raises on unknown options and on options the variant does not use."""
    if self.variant not in ENCODER_VARIANTS:
      raise ValueError(f"Unknown ViViT variant {self.variant!r}; choose one of "
                       f"{ENCODER_VARIANTS}.")
    if self.embedding not in EMBEDDINGS:
      raise ValueError(f"Unknown embedding {self.embedding!r}; choose one of {EMBEDDINGS}.")
    if self.embedding == "frame" and self.tubelet_size != 1:
      raise ValueError(
          f"embedding='frame' embeds every frame on its own, but tubelet_size="
          f"{self.tubelet_size}: pass tubelet_size=1 (or use embedding='tubelet').")
    if self.classifier_in_use not in _CLASSIFIERS[self.variant]:
      raise ValueError(f"Variant {self.variant!r} supports classifier "
                       f"{_CLASSIFIERS[self.variant]}, got {self.classifier!r}.")
    temporal_options = {"temporal_encoder_layers": self.temporal_encoder_layers,
                        "temporal_encoder_mlp_dim": self.temporal_encoder_mlp_dim,
                        "temporal_encoder_heads": self.temporal_encoder_heads}
    if self.variant not in ("factorised_encoder", FACTORISED_TOKENS):
      used = sorted(k for k, v in temporal_options.items() if v is not None)
      if used:
        raise ValueError(f"{used} only apply to the factorised encoders, not "
                         f"{self.variant!r}.")
    if self.variant != "factorised_self_attention" and (
        self.attention_order is not None or self.zero_init_time_attention):
      raise ValueError("attention_order and zero_init_time_attention only apply to "
                       f"variant='factorised_self_attention', not {self.variant!r}.")
    if self.attention_order not in (None,) + ATTENTION_ORDERS:
      raise ValueError(f"Unknown attention_order {self.attention_order!r}; "
                       f"choose one of {ATTENTION_ORDERS}.")
    o = self.options
    if self.posemb not in VIDEO_POSEMB_TYPES:
      raise ValueError(f"Unknown posemb {self.posemb!r}; choose one of {VIDEO_POSEMB_TYPES}.")
    if self.posemb == "sincos1d" and (
        self.variant in ("factorised_encoder", "frame_average")
        or o.num_prefix_tokens(self.classifier_in_use)):
      raise ValueError("posemb='sincos1d' indexes the t*gh*gw patch tokens of one encoder: "
                       "use it without cls / register tokens (classifier='gap') and with a "
                       "variant other than the factorised encoders.")
    if o.rope == "vjepa2" and self.variant != "spatio_temporal":
      raise ValueError(f"rope='vjepa2' rotates every token by its (frame, row, column) in one "
                       f"sequence: it needs variant='spatio_temporal', not {self.variant!r}.")
    if self.classifier_in_use != "attentive" and (
        self.pooler_layers is not None or self.pooler_mlp_dim is not None):
      raise ValueError("pooler_layers and pooler_mlp_dim only apply to "
                       f"classifier='attentive', not {self.classifier_in_use!r}.")
    if o.distilled:
      raise ValueError("distilled=True (DeiT's distillation token and head) is an image-model "
                       "option; ViViT has no distillation head.")
    vit.check_token_options(o, self.classifier_in_use, self.representation_size)
    if self.variant in ("factorised_self_attention", "factorised_dot_product"):
      if o.num_prefix_tokens(self.classifier_in_use):
        raise ValueError(f"Variant {self.variant!r} reshapes the tokens to a [t, gh*gw] grid, "
                         "which has no place for cls or register tokens: drop class_token / "
                         "num_registers, or use variant 'spatio_temporal' or "
                         "'factorised_encoder'.")
      if o.rope is not None:
        raise ValueError(f"rope is not implemented for variant {self.variant!r} (its "
                         "attention runs on reshaped token groups); use 'spatio_temporal', "
                         "'factorised_encoder' or 'frame_average'.")
    if self.variant == FACTORISED_TOKENS:
      if o.num_prefix_tokens(self.classifier_in_use) or o.rope is not None or o.fc_norm:
        raise ValueError("factorised_encoder_tokens (VideoPrism) has no cls or register "
                         "tokens, no rope and ends each encoder in its LayerNorm: drop "
                         "class_token / num_registers / rope / fc_norm.")
    if self.variant == DIVIDED:
      if o.rope is not None or o.posemb_resize is not None:
        raise ValueError("divided_space_time has TimeSformer's position embeddings (a spatial "
                         "table and a time table, resized by nearest rows as TimeSformer "
                         "does): drop rope / posemb_resize.")

  def embed(self, video: jax.Array) -> jax.Array:
    """[B, T, H, W, C] -> tokens [B, t, gh, gw, D]."""
    if video.ndim != 5:
      raise ValueError(f"Expected videos [B, T, H, W, C], got shape {video.shape}.")
    batch, frames, height, width, channels = video.shape
    ph, pw = self.patch_hw
    if height % ph or width % pw:
      raise ValueError(
          f"Frame size {height}x{width} is not divisible by the patch size {ph}x{pw}; "
          f"resize to a multiple (e.g. {height // ph * ph}x{width // pw * pw}).")
    if frames < self.tubelet_size:
      raise ValueError(
          f"A clip of {frames} frame(s) is shorter than one tubelet ({self.tubelet_size} "
          f"frames): sample at least {self.tubelet_size} frames (a multiple of "
          f"{self.tubelet_size}).")
    if frames % self.tubelet_size:
      raise ValueError(
          f"{frames} frames are not divisible by tubelet_size={self.tubelet_size}; "
          f"sample {frames // self.tubelet_size * self.tubelet_size} frames instead.")
    o = self.options
    video = video.astype(o.dtype)
    conv = lambda kernel: nn.Conv(
        self.hidden_size, kernel, strides=kernel, padding="VALID", use_bias=o.patch_bias,
        name="embedding", **numerics.conv_kwargs(o))
    if self.embedding == "tubelet":
      return conv((self.tubelet_size, ph, pw))(video)
    # [B, T, H, W, C] -> [B*T, H, W, C]
    x = conv((ph, pw))(video.reshape(batch * frames, height, width, channels))
    return x.reshape((batch, frames) + x.shape[1:])  # -> [B, T, gh, gw, D]

  def encode(self, x: jax.Array, name: str, cls_name: str, num_layers: int, mlp_dim: int,
             num_heads: int, train: bool, patch_grid: Optional[tuple[int, int]] = None,
             found: Optional[dict[str, jax.Array]] = None,
             **encoder_kwargs: Any) -> jax.Array:
    """cls / registers, VideoEncoder `name`, pooling (fc_norm): [B, L, D] -> [B, D].

    `patch_grid`: the spatial grid of the tokens (time-major frames of it) when the
    encoder rotates by position; None: an encoder without RoPE. `found` (features=True):
    receives the first encoder's outputs of the L input tokens, prefix tokens left out
    ("tokens", [B, L, D]).
    """
    o = self.options if patch_grid is not None or self.options.rope is None else (
        self.options.replace(rope=None, rope_temperature=None, rope_reference_grid=None))
    suffix = cls_name.removeprefix("cls")
    classifier = self.classifier_in_use
    x = vit.add_prefix_tokens(self, x, classifier, names=(
        cls_name, "dist" + suffix, "registers" + suffix))  # [B, P + L, D]
    encoder_kwargs.setdefault("add_position_embedding", self.posemb == "learn")
    x = VideoEncoder(num_layers=num_layers, mlp_dim=mlp_dim, num_heads=num_heads,
                     num_prefix_tokens=o.num_prefix_tokens(classifier), patch_grid=patch_grid,
                     options=o, name=name, **encoder_kwargs)(x, deterministic=not train)
    if found is not None and "tokens" not in found:
      found["tokens"] = x[:, o.num_prefix_tokens(classifier):]
    if classifier == "attentive":
      # [B, P + L, D] -> [B, D]: the pooler reads every token (V-JEPA 2 has no prefix).
      return attentive_pooler.AttentivePooler(
          num_heads=num_heads,
          mlp_dim=attentive_pooler.mlp_dim_of(x.shape[-1], self.pooler_mlp_dim),
          num_layers=(attentive_pooler.DEFAULT_POOLER_LAYERS if self.pooler_layers is None
                      else self.pooler_layers),
          options=o, name="pooler")(x, deterministic=not train)
    x = vit.pool_tokens(x, classifier, o)
    if o.fc_norm and self.fc_norm_epsilon is not None:
      x = nn.LayerNorm(epsilon=self.fc_norm_epsilon, dtype=o.dtype, param_dtype=o.param_dtype,
                       name="fc_norm" + suffix)(x)
    elif o.fc_norm:
      x = layers.layer_norm(o, name="fc_norm" + suffix)(x)
    return x

  def check_posemb_rows(self, tokens: int, grid: tuple[int, int, int]) -> None:
    """A learned video position embedding is not resized: another frame count or frame size
    than the parameters were made for is refused here, naming the clip shape to feed."""
    stored = self.variables.get("params", {}).get("Transformer", {}).get(
        "posembed_input", {}).get("pos_embedding")
    if stored is None or stored.shape[1] == tokens or self.options.posemb_resize is not None:
      return
    t, gh, gw = grid
    raise ValueError(
        f"The learned position embedding has {stored.shape[1]} rows, clips of "
        f"{t * self.tubelet_size} frames at {gh * self.patch_hw[0]}x{gw * self.patch_hw[1]} "
        f"give {tokens} tokens ({t} x {gh} x {gw} tubelets"
        f"{' + cls' if tokens != t * gh * gw else ''}): feed clips of the frame count and "
        "size the checkpoint was trained with (learned video position embeddings are not "
        "resized).")

  def encode_tokens(self, x: jax.Array, train: bool,
                    found: Optional[dict[str, jax.Array]] = None) -> jax.Array:
    """VideoPrism's factorised encoder and pooling: tokens [B, t, gh, gw, D] -> [B, D]
    (`found`, features=True: receives the t*n output tokens, "tokens" [B, t*n, D]).

    The spatial encoder runs on each frame's n = gh*gw patches, the temporal encoder on
    each spatial position's t outputs (both: learned position embedding, blocks,
    encoder_norm); the t*n tokens are pooled by AttentionPool ("map") or averaged.
    Another frame size or frame count resizes the spatial / temporal position embedding
    with `posemb_resize` (SequencePositionEmbs for the temporal one).
    """
    batch, t, gh, gw, width = x.shape
    n = gh * gw
    o = self.options
    x = x.reshape(batch * t, n, width)  # [B, t, gh, gw, D] -> [B*t, n, D]
    x = VideoEncoder(num_layers=self.num_layers, mlp_dim=self.mlp_dim,
                     num_heads=self.num_heads, patch_grid=(gh, gw), options=o,
                     name="SpatialTransformer")(x, deterministic=not train)
    # [B*t, n, D] -> [B, n, t, D] -> [B*n, t, D]
    x = x.reshape(batch, t, n, width).transpose(0, 2, 1, 3).reshape(batch * n, t, width)
    x = VideoEncoder(num_layers=self.temporal_encoder_layers or DEFAULT_TEMPORAL_ENCODER_LAYERS,
                     mlp_dim=self.temporal_encoder_mlp_dim or self.mlp_dim,
                     num_heads=self.temporal_encoder_heads or self.num_heads,
                     add_position_embedding=False, sequence_posemb=True, options=o,
                     name="TemporalTransformer")(x, deterministic=not train)
    # [B*n, t, D] -> [B, t, n, D] -> [B, t*n, D] (time-major)
    x = x.reshape(batch, n, t, width).transpose(0, 2, 1, 3).reshape(batch, t * n, width)
    if found is not None:
      found["tokens"] = x
    if self.classifier_in_use == "gap":
      return jnp.mean(x, axis=1)
    return AttentionPool(mlp_dim=self.mlp_dim, num_heads=self.num_heads, options=o,
                         name="AttentionPool")(x, deterministic=not train)

  @nn.compact
  def __call__(self, video: jax.Array, train: bool = False,
               features: bool = False) -> jax.Array | dict[str, jax.Array]:
    """videos [B, T, H, W, C] -> logits [B, num_classes] (pooled [B, D] without a head).

    features=True returns {"pooled": the representation the head reads, [B, D] (after
    pre_logits when there is one), "patch_tokens": [B, t*gh*gw, D], time-major, prefix
    tokens left out: the encoder's output for every tubelet (the factorised encoders: the
    spatial encoder's, frame by frame; VideoPrism: the temporal encoder's)} from one pass.
    """
    self.check_config()
    x = self.embed(video)
    batch, t, gh, gw, width = x.shape
    found = {} if features else None

    if self.variant == FACTORISED_TOKENS:
      x = self.encode_tokens(x, train, found)  # [B, t*n, D]
    elif self.variant in ("factorised_encoder", "frame_average"):
      # Every temporal index is a sequence of the spatial encoder (shared weights).
      x = x.reshape(batch * t, gh * gw, width)  # [B, t, gh, gw, D] -> [B*t, n, D]
      x = self.encode(x, "SpatialTransformer", "cls_SpatialTransformer",
                      self.num_layers, self.mlp_dim, self.num_heads, train,
                      patch_grid=(gh, gw) if self.options.rope is not None else None,
                      found=found)
      if found is not None:  # [B*t, n, D] -> [B, t*n, D]
        found["tokens"] = found["tokens"].reshape(batch, t * gh * gw, width)
      x = x.reshape(batch, t, width)  # [B*t, D] -> [B, t, D]
      if self.variant == "factorised_encoder":
        x = self.encode(
            x, "TemporalTransformer", "cls_TemporalTransformer",
            self.temporal_encoder_layers or DEFAULT_TEMPORAL_ENCODER_LAYERS,
            self.temporal_encoder_mlp_dim or self.mlp_dim,
            self.temporal_encoder_heads or self.num_heads, train)
      else:
        x = jnp.mean(x, axis=1)  # the paper's baseline: average the frame representations
    else:
      x = x.reshape(batch, t * gh * gw, width)  # [B, t, gh, gw, D] -> [B, t*n, D]
      extra = {}
      if self.posemb == "sincos1d":
        x = x + jnp.asarray(positions.sincos1d_posemb(t * gh * gw, width), x.dtype)
      else:
        prefix_rows = 0 if self.options.no_embed_class else self.options.num_prefix_tokens(
            self.classifier_in_use)  # no_embed_class: the table covers the patches only
        self.check_posemb_rows(t * gh * gw + prefix_rows, (t, gh, gw))
      divided = self.variant == DIVIDED  # its own position embedding on the (gh, gw) grid
      if divided:
        extra = dict(add_position_embedding=False)
      x = self.encode(x, "Transformer", "cls", self.num_layers, self.mlp_dim,
                      self.num_heads, train,
                      patch_grid=(gh, gw) if divided else positions.rope_token_grid(
                          self.options, t, gh, gw),
                      variant=self.variant, temporal_grid=t,
                      attention_order=self.attention_order or ATTENTION_ORDERS[0],
                      zero_init_time_attention=self.zero_init_time_attention, found=found,
                      **extra)

    out = layers.classifier_head(x, self.representation_size,
                                 None if features else self.num_classes, self.options,
                                 head_name="output_projection")
    return {"pooled": out, "patch_tokens": found["tokens"]} if features else out


def token_grid(model: VideoTransformer, video_shape: Sequence[int]) -> tuple[int, int, int]:
  """(t, gh, gw) of the tokens `model` makes from videos [B, T, H, W, C]."""
  _, frames, height, width, _ = video_shape
  ph, pw = model.patch_hw
  return frames // model.tubelet_size, height // ph, width // pw
