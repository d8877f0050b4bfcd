"""Transformer building blocks shared by ViT and ViViT.

Class names matter: Linen names sub-modules `<ClassName>_<index>`, and the released
checkpoints (docs/checkpoint_formats.md, 'ViT: vit_jax / AugReg .npz') expect
`MultiHeadDotProductAttention_0`, `MlpBlock_0` and `LayerNorm_{0,1}` inside each encoder
block. Token positions (RoPE angles, grids) live in `positions`, the CPU matmul numerics
in `numerics`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype

from vit_jax.models import numerics, positions
from vit_jax.models.options import EncoderOptions, OptionsClone

Initializer = Callable[..., jax.Array]

# Reference initialisers (docs/conventions.md, 'Numerics and initialisation').
KERNEL_INIT = nn.initializers.xavier_uniform()
BIAS_INIT = nn.initializers.normal(stddev=1e-6)

# Cosine attention's temperature starts at 10 and is capped at 100 (Swin V2's choices):
# cos is in [-1, 1], so without the temperature the softmax could not become peaked.
COSINE_INIT_TEMPERATURE = 10.0
COSINE_MAX_TEMPERATURE = 100.0


def pair(size: int | Sequence[int]) -> tuple[int, int]:
  """An int or an (h, w) pair as (h, w): patch sizes may be either."""
  if isinstance(size, int):
    return (size, size)
  return tuple(size)


def gelu(approximate: bool) -> Callable[[jax.Array], jax.Array]:
  """GELU; the released checkpoints were trained with the tanh approximation."""
  return lambda x: nn.gelu(x, approximate=approximate)


def quick_gelu(x: jax.Array) -> jax.Array:
  """OpenAI CLIP's GELU approximation x * sigmoid(1.702 x)."""
  return x * jax.nn.sigmoid(1.702 * x)


class RMSNorm(nn.RMSNorm):
  """flax's RMSNorm, auto-named `LayerNorm_<i>` as the LayerNorm it replaces: a block's
  tree (`LayerNorm_0`, `LayerNorm_1`) and what reads it (freeze / layer-decay patterns,
  readers) stay the same whichever norm a model uses."""


RMSNorm.__name__ = "LayerNorm"


def layer_norm(options: EncoderOptions, name: Optional[str] = None) -> nn.Module:
  """The options' norm (LayerNorm, or RMSNorm with `norm="rmsnorm"`) with their epsilon
  and dtypes. Both hold `scale` [D]; only LayerNorm has a `bias`."""
  if options.norm == "rmsnorm":
    return RMSNorm(epsilon=options.layernorm_epsilon, dtype=options.dtype,
                   param_dtype=options.param_dtype, name=name)
  return nn.LayerNorm(epsilon=options.layernorm_epsilon, dtype=options.dtype,
                      param_dtype=options.param_dtype, name=name)


def heads_first(x: jax.Array) -> jax.Array:
  """[B, L, h, hd] -> [B, h, L, hd]."""
  return jnp.swapaxes(x, 1, 2)


def attention_mask(token_mask: jax.Array) -> jax.Array:
  """Token ids [B, L] -> self-attention mask [B, 1, L, L] (True: the query may attend).

  0 marks padding; tokens with the same non-zero id attend to each other, so a boolean
  mask pads a sequence and ids 1, 2, ... pack several images into one sequence without
  attention crossing between them. A padding query attends to nothing real: its row is
  all False (the softmax then spreads evenly, keeping it finite); its output is garbage
  that nothing downstream may read (pool_tokens and MAPHead leave padding out).
  """
  ids = token_mask.astype(jnp.int32)
  return ((ids[:, :, None] == ids[:, None, :]) & (ids[:, None, :] != 0))[:, None]


def key_mask(token_mask: jax.Array) -> jax.Array:
  """Token ids [B, L] -> [B, 1, 1, L]: every query attends to the non-padding tokens."""
  return (token_mask != 0)[:, None, None, :]


class MlpBlock(OptionsClone, nn.Module):
  """Transformer MLP: Dense -> GELU -> Dropout -> Dense -> Dropout.

  Parameters: Dense_0 [D, mlp_dim], Dense_1 [mlp_dim, out]. With
  mlp_activation="swiglu" the first layer is two, `gate` and `up` [D, mlp_dim], and the
  hidden units are silu(gate(x)) * up(x); `mlp_inner_norm` adds a LayerNorm `inner_norm`
  [mlp_dim] before Dense_1; `proj_bias=False` drops every bias (AIMv2).

  Attributes:
    mlp_dim: hidden width.
    out_dim: output width; defaults to the input width.
    options: reads dropout_rate, gelu_approximate, mlp_activation, mlp_inner_norm,
      layernorm_epsilon, proj_bias, dtype, param_dtype.
  """
  mlp_dim: int
  out_dim: Optional[int] = None
  options: EncoderOptions = EncoderOptions()

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    """[..., D] -> [..., out_dim or D]."""
    o = self.options
    out_dim = self.out_dim or x.shape[-1]
    dense = lambda features, name=None: nn.Dense(
        features, kernel_init=KERNEL_INIT, bias_init=BIAS_INIT, use_bias=o.proj_bias,
        name=name, **numerics.linear_kwargs(o))
    if o.mlp_activation == "swiglu":
      x = nn.silu(dense(self.mlp_dim, name="gate")(x)) * dense(self.mlp_dim, name="up")(x)
    else:
      x = dense(self.mlp_dim)(x)
      x = quick_gelu(x) if o.mlp_activation == "quick_gelu" else gelu(o.gelu_approximate)(x)
    x = nn.Dropout(rate=o.dropout_rate)(x, deterministic=deterministic)
    if o.mlp_inner_norm:
      x = layer_norm(o, name="inner_norm")(x)
    x = dense(out_dim, name="Dense_1" if o.mlp_activation == "swiglu" else None)(x)
    return nn.Dropout(rate=o.dropout_rate)(x, deterministic=deterministic)


class LayerScale(nn.Module):
  """Learned per-channel scale of a residual branch (CaiT / DeiT III / DINOv2):
  [..., D] * scale [D], scale initialised to `init_value`."""
  init_value: float
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param("scale", nn.initializers.constant(self.init_value), (x.shape[-1],),
                       self.param_dtype)
    return x * scale.astype(x.dtype)


def apply_rope(x: jax.Array, angles: np.ndarray, options: EncoderOptions,
               num_prefix_tokens: int) -> jax.Array:
  """Rotates the patch tokens of x [B, P + N', H, hd] (P prefix tokens, left as they are).

  `angles` [N, hd/2] are tiled over the N' / N frames of a video. EVA-02 rotates
  interleaved pairs (2i, 2i+1) by angle i, DINOv3 the halves' pairs (i, i + hd/2).
  V-JEPA 2's angles are per channel, [N, hd] (positions._vjepa2_angles): channel 2i
  becomes x_2i cos a_2i - x_2i+1 sin a_2i, channel 2i+1 x_2i+1 cos a_2i+1 + x_2i sin a_2i+1.
  """
  prefix, patches = x[:, :num_prefix_tokens], x[:, num_prefix_tokens:]
  reps = patches.shape[1] // angles.shape[0]
  if reps * angles.shape[0] != patches.shape[1]:
    raise ValueError(f"RoPE: {patches.shape[1]} patch tokens are not frames of the "
                     f"{angles.shape[0]}-patch grid the angles were made for.")
  angles = np.tile(angles, (reps, 1))[None, :, None, :]  # [1, N', 1, hd/2]
  sin, cos = (jnp.asarray(f(angles), jnp.float32) for f in (np.sin, np.cos))
  rotated = rotate_pairs(patches.astype(jnp.float32), sin, cos, options.rope)
  return jnp.concatenate([prefix, rotated.astype(x.dtype)], axis=1)


def rotate_pairs(p: jax.Array, sin: jax.Array, cos: jax.Array, rope: str) -> jax.Array:
  """Float32 [..., hd] rotated by angles whose sin / cos broadcast to [..., hd/2], as the
  `rope` variant pairs channels: the interleaved pairs (2i, 2i+1) by angle i (EVA-02, PE,
  RoPE-ViT, RoPE-Mixed), DINOv3 the halves' pairs (i, i + hd/2); V-JEPA 2's sin / cos are
  per channel ([..., hd]): channel 2i becomes x_2i cos a_2i - x_2i+1 sin a_2i, channel
  2i+1 x_2i+1 cos a_2i+1 + x_2i sin a_2i+1."""
  if rope in ("eva02", "mixed"):
    x1, x2 = p[..., 0::2], p[..., 1::2]
    return jnp.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).reshape(p.shape)
  if rope == "vjepa2":  # per-channel angles [..., hd]
    x1, x2 = p[..., 0::2], p[..., 1::2]
    partner = jnp.stack([-x2, x1], axis=-1).reshape(p.shape)  # (-x_2i+1, x_2i) pairs
    return p * cos + partner * sin
  x1, x2 = jnp.split(p, 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def apply_rope_at(x: jax.Array, angles: jax.Array, options: EncoderOptions) -> jax.Array:
  """Rotates every token of x [B, L, H, hd] by its own angles [B, L, hd/2] (a packed
  sequence: positions.rope_angles_at of each token's coordinates; angle 0 leaves a token,
  e.g. a cls token, exactly as it is)."""
  angles = angles.astype(jnp.float32)[:, :, None, :]  # [B, L, 1, hd/2]
  rotated = rotate_pairs(x.astype(jnp.float32), jnp.sin(angles), jnp.cos(angles),
                         options.rope)
  return rotated.astype(x.dtype)


def apply_mixed_rope(x: jax.Array, angles: jax.Array, num_prefix_tokens: int) -> jax.Array:
  """RoPE-Mixed: rotates the patch tokens of x [B, P + N, H, hd] by per-head angles
  [N, H, hd/2] (positions.mixed_rope_angles), interleaved pairs; prefix tokens as they are."""
  prefix, patches = x[:, :num_prefix_tokens], x[:, num_prefix_tokens:]
  if patches.shape[1] != angles.shape[0]:
    raise ValueError(f"RoPE-Mixed: {patches.shape[1]} patch tokens, angles for "
                     f"{angles.shape[0]} (mixed RoPE of video frames is not supported).")
  sin, cos = jnp.sin(angles)[None], jnp.cos(angles)[None]  # [1, N, H, hd/2]
  rotated = rotate_pairs(patches.astype(jnp.float32), sin, cos, "mixed")
  return jnp.concatenate([prefix, rotated.astype(x.dtype)], axis=1)


def mixed_rope_init(base: float) -> Initializer:
  """timm's init_random_2d_freqs for one block: [2, H, hd/2] (x row, y row); each head's
  hd/4 magnitudes 1 / base^(4j / hd) point along a random direction a and a + pi/2."""

  def init(key: jax.Array, shape: tuple[int, int, int], dtype: Any = jnp.float32):
    _, heads, half = shape
    mag = 1.0 / base ** (jnp.arange(0, 2 * half, 4, dtype=jnp.float32) / (2 * half))
    a = jax.random.uniform(key, (heads, 1), jnp.float32) * 2 * jnp.pi
    fx = jnp.concatenate([mag * jnp.cos(a), mag * jnp.cos(a + jnp.pi / 2)], axis=-1)
    fy = jnp.concatenate([mag * jnp.sin(a), mag * jnp.sin(a + jnp.pi / 2)], axis=-1)
    return jnp.stack([fx, fy]).astype(dtype)

  return init


class DropPath(nn.Module):
  """Stochastic depth (timm calls the layer DropPath): drops the whole residual branch
  per example, rescaled by 1 / (1 - stochastic_depth).

  `stochastic_depth` is this block's rate; it may be a traced scalar (one per layer
  under `nn.scan`).
  """

  @nn.compact
  def __call__(self, x: jax.Array, stochastic_depth: Union[float, jax.Array],
               deterministic: bool) -> jax.Array:
    """[B, ...] -> [B, ...]."""
    rate = stochastic_depth
    if deterministic or (isinstance(rate, (int, float)) and rate == 0.0):
      return x
    keep_prob = 1.0 - jnp.asarray(rate, jnp.float32)
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    keep = jax.random.bernoulli(self.make_rng("dropout"), keep_prob, shape)
    return jnp.where(keep, x / keep_prob.astype(x.dtype), jnp.zeros_like(x))


class QKVParams(nn.Module):
  """The kernel [D, H, hd] and bias [H, hd] (None without) of one attention projection.

  Made exactly as nn.DenseGeneral(features=(H, hd)) makes them: the same names, shapes
  and initialisers (the kernel drawn as a flat [D, H*hd] Xavier-uniform matrix), and the
  same random streams, as those follow the module path and parameter names only. So
  `project_qkv` can multiply the three at once with the parameter tree, and the values
  `init` draws, of three separate DenseGenerals.
  """
  features: tuple[int, int]
  use_bias: bool
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, in_features: int) -> tuple[jax.Array, Optional[jax.Array]]:
    flat = int(np.prod(self.features))
    kernel = self.param(
        "kernel", lambda rng, shape, dtype: jnp.reshape(
            KERNEL_INIT(rng, (in_features, flat), dtype), shape),
        (in_features, *self.features), self.param_dtype)
    if not self.use_bias:
      return kernel, None
    return kernel, self.param("bias", nn.initializers.zeros, self.features, self.param_dtype)


class MultiHeadDotProductAttention(OptionsClone, nn.Module):
  """Multi-head attention with the released checkpoints' parameter layout.

  Parameters: query/key/value kernel [D, H, D/H], bias [H, D/H]; out kernel
  [H, D/H, D], bias [D]. Logits are scaled by 1/sqrt(head_dim).

  The fast path on GPUs and TPUs is `jax.nn.dot_product_attention`
  (`attention_implementation="cudnn"` picks the fused flash kernel on GPU). The explicit path
  (softmax materialised, head-major matmuls) runs when attention weights are
  requested (`sow_attention_weights`, stored in the 'intermediates' collection as
  `attention_weights` [B, H, Lq, Lk]), when attention dropout is active in training,
  and on CPUs when `attention_implementation` is None: XLA:CPU has no fused attention kernel,
  and there the explicit path is faster than jax's (benchmarks/README.md).

  `options.attention_score` picks the score function (options.ATTENTION_SCORES). "scaled_dot"
  (the default) is the code path and parameter tree above, unchanged. "dot",
  "bilinear" and "cosine" transform q and k and then take a dot product, so they
  keep the fused path; "additive" materialises a [B, Lq, Lk, H, hd] tanh and
  always takes the explicit path (memory B*H*Lq*Lk*hd: fine for short sequences,
  ~hd times the memory of the softmax for long ones). Their extra parameters sit
  next to query/key/value: `bilinear` [H, hd, hd], `additive_v` [H, hd],
  `log_temperature` [H].

  Architecture options: `qkv_bias` drops the key's (or every) projection bias, `qk_norm`
  adds LayerNorms `query_norm` / `key_norm` [hd] on queries and keys, `rope` rotates the
  queries and keys of the patch tokens (those after the first `num_prefix_tokens`) by
  their position on `patch_grid` (gh, gw); all act on q and k before `attend`, so the
  fused path stays available.

  The options read here: attention_dropout_rate, attention_implementation,
  attention_score, sow_attention_weights, qkv_bias, qk_norm, rope, attention_logit_cap,
  layernorm_epsilon, dtype and param_dtype.
  """
  num_heads: int
  # Zeros make the layer start as "no attention" (ViViT's temporal attention).
  out_kernel_init: Initializer = KERNEL_INIT
  num_prefix_tokens: int = 0
  patch_grid: Optional[tuple[int, int]] = None
  options: EncoderOptions = EncoderOptions()

  def head_dim(self, width: int) -> int:
    if width % self.num_heads:
      raise ValueError(
          f"Width {width} is not divisible by num_heads={self.num_heads}; "
          "choose a head count that divides the hidden size.")
    return width // self.num_heads

  def score_params(self, head_dim: int) -> dict[str, jax.Array]:
    """The score function's own parameters, each with the heads on axis 0.

    Created once per module; modules that split the heads between several
    `attend` calls (ViViT's factorised dot-product attention) slice them.
    """
    h = self.num_heads
    if self.options.attention_score == "bilinear":
      # W = I / sqrt(hd): the layer starts as scaled dot-product attention.
      init = lambda key, shape, dtype: jnp.broadcast_to(
          jnp.eye(head_dim, dtype=dtype) / jnp.sqrt(head_dim).astype(dtype), shape)
      return {"bilinear": self.param("bilinear", init, (h, head_dim, head_dim),
                                     self.options.param_dtype)}
    if self.options.attention_score == "additive":
      init = nn.initializers.normal(stddev=head_dim ** -0.5)
      return {"additive_v": self.param("additive_v", init, (h, head_dim),
                                     self.options.param_dtype)}
    if self.options.attention_score == "cosine":
      init = nn.initializers.constant(jnp.log(COSINE_INIT_TEMPERATURE))
      return {"log_temperature": self.param("log_temperature", init, (h,),
                                          self.options.param_dtype)}
    return {}

  def _dot_inputs(self, query: jax.Array, key: jax.Array,
                  params: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array, float]:
    """(q', k', scale) with logits = scale * q'.k' for the dot-product-like scores.

    [B, L, h, hd] in and out; the score's parameters are folded into q' so the
    fused kernel still applies.
    """
    if self.options.attention_score == "dot":
      return query, key, 1.0
    if self.options.attention_score == "bilinear":
      w = params["bilinear"].astype(query.dtype)  # [h, hd, hd]
      return jnp.einsum("bqhd,hde->bqhe", query, w), key, 1.0
    # cosine: unit vectors; float32 norms, as bf16 sums of squares lose precision.
    unit = lambda x: (x * jax.lax.rsqrt(jnp.maximum(
        jnp.sum(jnp.square(x.astype(jnp.float32)), -1, keepdims=True), 1e-12))
                      ).astype(x.dtype)
    log_tau = jnp.minimum(params["log_temperature"], jnp.log(COSINE_MAX_TEMPERATURE))
    tau = jnp.exp(log_tau).astype(query.dtype)[:, None]  # [h, 1]
    return unit(query) * tau, unit(key), 1.0

  def _logits(self, query: jax.Array, key: jax.Array,
              params: dict[str, jax.Array]) -> jax.Array:
    """Explicit attention logits [B, h, Lq, Lk] of a non-default score."""
    if self.options.attention_score == "additive":
      # [B, Lq, 1, h, hd] + [B, 1, Lk, h, hd] -> [B, Lq, Lk, h, hd]: the memory cost.
      hidden = jnp.tanh(query[:, :, None] + key[:, None])
      return jnp.einsum("bqkhd,hd->bhqk", hidden, params["additive_v"].astype(hidden.dtype))
    if self.options.attention_score == "scaled_dot":
      query, key, scale = query, key, query.shape[-1] ** -0.5
    else:
      query, key, scale = self._dot_inputs(query, key, params)
    # Head-major [B, h, L, hd] operands: XLA:CPU runs these batched matmuls ~1.5x faster
    # than the same contraction written on [B, L, h, hd] (benchmarks/README.md, attention).
    # Float32 logits (the softmax takes them so anyway): see accumulates_in_float32.
    return numerics.matmul(heads_first(query * jnp.asarray(scale, query.dtype)),
                           heads_first(key), jnp.float32, transpose_b=True)

  def use_bias(self, name: str) -> bool:
    """Whether the `name` projection (query, key or value) has a bias (options.qkv_bias)."""
    return {"qkv": True, "qv": name != "key", "none": False}[self.options.qkv_bias]

  def project(self, name: str, x: jax.Array, head_dim: int) -> jax.Array:
    """The `name` projection (query, key or value): [..., D] -> [..., H, hd]."""
    return nn.DenseGeneral(
        features=(self.num_heads, head_dim), axis=-1, kernel_init=KERNEL_INIT,
        bias_init=nn.initializers.zeros, use_bias=self.use_bias(name), name=name,
        **numerics.linear_kwargs(self.options))(x)

  def project_qkv(self, x: jax.Array, head_dim: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """query, key and value of self-attention: [..., D] -> 3 x [..., H, hd].

    One [D, 3, H, hd] matmul instead of three [D, H, hd] ones: one GEMM launch and one
    read of x on every backend (on a 2-core CPU the ViT-Ti/16 train step measured the
    same either way: benchmarks/README.md, 'Library API, driver and timm'). The
    parameters stay the three `query`, `key` and `value` DenseGenerals' (QKVParams),
    stacked at trace time, so the gradient lands in the same leaves and checkpoints are
    unchanged.
    """
    width = x.shape[-1]
    made = [QKVParams((self.num_heads, head_dim), self.use_bias(name),
                      self.options.param_dtype, name=name)(width)
            for name in ("query", "key", "value")]
    kernel = jnp.stack([k for k, _ in made], axis=1)  # [D, 3, H, hd]
    biases = [b for _, b in made]
    bias = None
    if any(b is not None for b in biases):  # a missing bias (qkv_bias="qv") adds zeros
      bias = jnp.stack([jnp.zeros((self.num_heads, head_dim), kernel.dtype) if b is None
                        else b for b in biases])  # [3, H, hd]
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.options.dtype)
    dot = (numerics.Float32Accumulation() if numerics.accumulates_in_float32(self.options.dtype)
           else jax.lax.dot_general)
    qkv = dot(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))  # [..., 3, H, hd]
    if bias is not None:
      qkv = qkv + bias
    return qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]

  def position_queries_keys(self, query: jax.Array, key: jax.Array, head_dim: int,
                            rope_angles: Optional[jax.Array] = None
                            ) -> tuple[jax.Array, jax.Array]:
    """QK-norm, then RoPE (timm's order): [B, L, H, hd] in and out.

    `rope_angles` [B, L, hd/2]: every token's own angles (a packed sequence), in place of
    those of `patch_grid`.
    """
    o = self.options
    if o.qk_norm:
      query = layer_norm(o, name="query_norm")(query)
      key = layer_norm(o, name="key_norm")(key)
    if o.rope is not None and rope_angles is not None:
      return apply_rope_at(query, rope_angles, o), apply_rope_at(key, rope_angles, o)
    if o.rope is not None:
      if self.patch_grid is None:
        raise ValueError("rope needs the patch grid: this attention layer was built without "
                         "patch_grid (the model must pass it).")
      if o.rope == "mixed":  # learned frequencies of this block: [2, H, hd/2]
        freqs = self.param("rope_freqs", mixed_rope_init(o.rope_base),
                           (2, self.num_heads, head_dim // 2), o.param_dtype)
        row, col = positions.grid_indices(self.patch_grid)
        coords = positions.rope_coordinates(o, row, col, np.int64(self.patch_grid[0]),
                                            np.int64(self.patch_grid[1]))  # [N, 2]
        angles = positions.mixed_rope_angles(coords, freqs)  # [N, H, hd/2]
        return (apply_mixed_rope(query, angles, self.num_prefix_tokens),
                apply_mixed_rope(key, angles, self.num_prefix_tokens))
      angles = positions.rope_angles(o, self.patch_grid, head_dim)
      query = apply_rope(query, angles, o, self.num_prefix_tokens)
      key = apply_rope(key, angles, o, self.num_prefix_tokens)
    return query, key

  def attend(self, query: jax.Array, key: jax.Array, value: jax.Array,
             deterministic: bool, weights_name: str = "attention_weights",
             score_params: Optional[dict[str, jax.Array]] = None,
             mask: Optional[jax.Array] = None) -> jax.Array:
    """Attention of [B, Lq, h, hd] over [B, Lk, h, hd] -> [B, Lq, h, hd].

    Sown weights ([B, h, Lq, Lk]) are stored as `weights_name`. `score_params`:
    the `score_params()` of the h heads attending here (none for the default).
    `mask`: boolean, broadcastable to [B, h, Lq, Lk] (attention_mask, key_mask); a
    masked key gets exactly zero weight on every path.
    """
    o = self.options
    params = score_params or {}
    use_dropout = not deterministic and o.attention_dropout_rate > 0.0
    implementation = o.attention_implementation
    fused = (not (o.sow_attention_weights or use_dropout) and o.attention_score != "additive"
             and not (implementation is None and jax.default_backend() == "cpu")
             and o.attention_logit_cap is None)
    if fused:
      # Without a mask the call is exactly the unmasked program's (fingerprints).
      masked = {} if mask is None else {"mask": mask}
      if o.attention_score == "scaled_dot":
        return jax.nn.dot_product_attention(query, key, value, implementation=implementation,
                                            **masked)
      query, key, scale = self._dot_inputs(query, key, params)
      return jax.nn.dot_product_attention(
          query, key, value, scale=scale, implementation=implementation, **masked)
    logits = self._logits(query, key, params)
    if o.attention_logit_cap is not None:  # soft cap (VideoPrism), before the mask
      cap = o.attention_logit_cap
      logits = cap * jnp.tanh(logits / cap)
    if mask is not None:  # float32 logits: exp(min - max) is exactly 0
      logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    # Softmax in float32 even under bf16: logits of long sequences overflow.
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    if o.sow_attention_weights:
      self.sow("intermediates", weights_name, weights)
    weights = nn.Dropout(rate=o.attention_dropout_rate)(weights, deterministic=deterministic)
    out = numerics.matmul(weights.astype(value.dtype), heads_first(value))  # [B, h, Lq, hd]
    return jnp.swapaxes(out, 1, 2)

  def project_out(self, x: jax.Array, width: int) -> jax.Array:
    """[..., H, hd] -> [..., width]."""
    return nn.DenseGeneral(
        features=width, axis=(-2, -1), kernel_init=self.out_kernel_init,
        bias_init=nn.initializers.zeros, use_bias=self.options.proj_bias, name="out",
        **numerics.linear_kwargs(self.options))(x)

  @nn.compact
  def __call__(self, inputs_q: jax.Array, inputs_kv: Optional[jax.Array] = None,
               deterministic: bool = True, mask: Optional[jax.Array] = None,
               rope_angles: Optional[jax.Array] = None) -> jax.Array:
    """inputs_q [B, Lq, D], inputs_kv [B, Lk, D] (defaults to inputs_q) -> [B, Lq, D].

    `mask`: boolean, broadcastable to [B, 1, Lq, Lk] (attention_mask / key_mask).
    `rope_angles` [B, L, hd/2]: per-token RoPE angles of a packed self-attention.
    """
    if inputs_kv is None:
      inputs_kv = inputs_q
    width = inputs_q.shape[-1]
    head_dim = self.head_dim(width)
    if inputs_kv is inputs_q:  # self-attention: one matmul
      query, key, value = self.project_qkv(inputs_q, head_dim)  # 3 x [B, L, H, hd]
    else:
      query = self.project("query", inputs_q, head_dim)  # [B, Lq, H, hd]
      key = self.project("key", inputs_kv, head_dim)  # [B, Lk, H, hd]
      value = self.project("value", inputs_kv, head_dim)  # [B, Lk, H, hd]
    if self.options.qk_norm or self.options.rope is not None:
      query, key = self.position_queries_keys(query, key, head_dim, rope_angles)
    out = self.attend(query, key, value, deterministic,
                      score_params=self.score_params(head_dim), mask=mask)
    return self.project_out(out, width)


class Encoder1DBlock(OptionsClone, nn.Module):
  """Pre-LN transformer block: x + Attn(LN(x)), then y + MLP(LN(y)).

  Parameters (Linen naming): LayerNorm_0, MultiHeadDotProductAttention_0,
  LayerNorm_1, MlpBlock_0; with `options.layer_scale` also LayerScale_0 (attention
  branch) and LayerScale_1 (MLP branch). `num_prefix_tokens` and `patch_grid` go to the
  attention (RoPE). The call signature `(x, stochastic_depth, deterministic)
  -> (x, None)` lets the same class run under a Python loop and under `nn.scan`;
  `stochastic_depth` is this block's rate (the encoder spreads `options.stochastic_depth`
  over the depth).
  """
  mlp_dim: int
  num_heads: int
  num_prefix_tokens: int = 0
  patch_grid: Optional[tuple[int, int]] = None
  options: EncoderOptions = EncoderOptions()

  def attention(self, **overrides: Any) -> nn.Module:
    """The block's self-attention; ViViT's factorised dot-product block swaps it."""
    kwargs = dict(num_prefix_tokens=self.num_prefix_tokens, patch_grid=self.patch_grid)
    return MultiHeadDotProductAttention(num_heads=self.num_heads, options=self.options,
                                        **dict(kwargs, **overrides))

  def norm(self, name: Optional[str] = None) -> nn.LayerNorm:
    return layer_norm(self.options, name)

  def layer_scale(self, y: jax.Array, name: Optional[str] = None) -> jax.Array:
    """y * LayerScale when `options.layer_scale` is set, else y."""
    if self.options.layer_scale is None:
      return y
    return LayerScale(self.options.layer_scale, self.options.param_dtype, name=name)(y)

  def residual(self, x: jax.Array, y: jax.Array, stochastic_depth: Union[float, jax.Array],
               deterministic: bool, layer_scale_name: Optional[str] = None) -> jax.Array:
    """x + DropPath(Dropout(LayerScale(y))): a residual branch's end, as every block has it."""
    y = self.layer_scale(y, layer_scale_name)
    y = nn.Dropout(rate=self.options.dropout_rate)(y, deterministic=deterministic)
    return x + DropPath()(y, stochastic_depth, deterministic)

  @nn.compact
  def __call__(self, x: jax.Array, stochastic_depth: Union[float, jax.Array] = 0.0,
               deterministic: bool = True, mask: Optional[jax.Array] = None,
               rope_angles: Optional[jax.Array] = None) -> tuple[jax.Array, None]:
    """[B, L, D] -> ([B, L, D], None); `mask` [B, 1, L, L] from attention_mask;
    `rope_angles` [B, L, hd/2] of a packed sequence (MultiHeadDotProductAttention)."""
    y = self.norm()(x)
    masked = {} if mask is None else {"mask": mask}
    if rope_angles is not None:
      masked["rope_angles"] = rope_angles
    y = self.attention()(y, deterministic=deterministic, **masked)
    x = self.residual(x, y, stochastic_depth, deterministic)

    y = self.norm()(x)
    y = MlpBlock(mlp_dim=self.mlp_dim, options=self.options)(y, deterministic=deterministic)
    y = self.layer_scale(y)
    return x + DropPath()(y, stochastic_depth, deterministic), None


def classifier_head(x: jax.Array, representation_size: Optional[int],
                    num_classes: Optional[int], options: EncoderOptions, *, head_name: str,
                    head_bias_init: float = 0.0) -> jax.Array:
  """Optional `pre_logits` (Dense + tanh), then the zero-initialised head `head_name`
  (without bias when `options.head_bias` is False).

  [B, ..., D] -> [B, ..., num_classes] (features when num_classes is None), in float32
  so losses are stable under bf16 compute. Call it inside the model's compact
  `__call__`: the Dense layers become its children `pre_logits` and `head_name`.
  """
  if representation_size is not None:
    x = nn.Dense(representation_size, name="pre_logits", **numerics.linear_kwargs(options))(x)
    x = jnp.tanh(x)
  if num_classes is not None:
    x = nn.Dense(num_classes, kernel_init=nn.initializers.zeros, use_bias=options.head_bias,
                 bias_init=nn.initializers.constant(head_bias_init), name=head_name,
                 **numerics.linear_kwargs(options))(x)
  return x.astype(jnp.float32)
