"""Transformer building blocks shared by ViT and ViViT.

Class names matter: Linen names sub-modules `<ClassName>_<index>`, and the released
checkpoints (docs/checkpoint_formats.md, 'ViT: vit_jax / AugReg .npz') expect `MultiHeadDotProductAttention_0`,
`MlpBlock_0` and `LayerNorm_{0,1}` inside each encoder block.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.models.options import EncoderOptions, OptionsClone

Initializer = Callable[..., jax.Array]

# Reference initialisers (docs/conventions.md, 'Numerics and initialisation').
KERNEL_INIT = nn.initializers.xavier_uniform()
BIAS_INIT = nn.initializers.normal(stddev=1e-6)
LAYERNORM_EPSILON = 1e-6

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


def heads_first(x: jax.Array) -> jax.Array:
  """[B, L, h, hd] -> [B, h, L, hd]."""
  return jnp.swapaxes(x, 1, 2)


class MlpBlock(OptionsClone, nn.Module):
  """Transformer MLP: Dense -> GELU -> Dropout -> Dense -> Dropout.

  Attributes:
    mlp_dim: hidden width.
    out_dim: output width; defaults to the input width.
    options: reads dropout_rate, gelu_approximate, dtype, param_dtype.
  """
  mlp_dim: int
  out_dim: Optional[int] = None
  options: EncoderOptions = EncoderOptions()

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    """[..., D] -> [..., out_dim or D]."""
    o = self.options
    out_dim = self.out_dim or x.shape[-1]
    dense = lambda features: nn.Dense(
        features, dtype=o.dtype, param_dtype=o.param_dtype,
        kernel_init=KERNEL_INIT, bias_init=BIAS_INIT)
    x = dense(self.mlp_dim)(x)
    x = gelu(o.gelu_approximate)(x)
    x = nn.Dropout(rate=o.dropout_rate)(x, deterministic=deterministic)
    x = dense(out_dim)(x)
    return nn.Dropout(rate=o.dropout_rate)(x, deterministic=deterministic)


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

  The options read here: attention_dropout_rate, attention_implementation,
  attention_score, sow_attention_weights, dtype and param_dtype.
  """
  num_heads: int
  # Zeros make the layer start as "no attention" (ViViT's temporal attention).
  out_kernel_init: Initializer = KERNEL_INIT
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
    return heads_first(query * jnp.asarray(scale, query.dtype)) @ jnp.swapaxes(
        heads_first(key), -1, -2)

  def project(self, name: str, x: jax.Array, head_dim: int) -> jax.Array:
    """The `name` projection (query, key or value): [..., D] -> [..., H, hd]."""
    return nn.DenseGeneral(
        features=(self.num_heads, head_dim), axis=-1, dtype=self.options.dtype,
        param_dtype=self.options.param_dtype, kernel_init=KERNEL_INIT,
        bias_init=nn.initializers.zeros, name=name)(x)

  def attend(self, query: jax.Array, key: jax.Array, value: jax.Array,
             deterministic: bool, weights_name: str = "attention_weights",
             score_params: Optional[dict[str, jax.Array]] = None) -> jax.Array:
    """Attention of [B, Lq, h, hd] over [B, Lk, h, hd] -> [B, Lq, h, hd].

    Sown weights ([B, h, Lq, Lk]) are stored as `weights_name`. `score_params`:
    the `score_params()` of the h heads attending here (none for the default).
    """
    o = self.options
    params = score_params or {}
    use_dropout = not deterministic and o.attention_dropout_rate > 0.0
    implementation = o.attention_implementation
    fused = (not (o.sow_attention_weights or use_dropout) and o.attention_score != "additive"
             and not (implementation is None and jax.default_backend() == "cpu"))
    if fused:
      if o.attention_score == "scaled_dot":
        return jax.nn.dot_product_attention(query, key, value, implementation=implementation)
      query, key, scale = self._dot_inputs(query, key, params)
      return jax.nn.dot_product_attention(
          query, key, value, scale=scale, implementation=implementation)
    logits = self._logits(query, key, params)
    # Softmax in float32 even under bf16: logits of long sequences overflow.
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    if o.sow_attention_weights:
      self.sow("intermediates", weights_name, weights)
    weights = nn.Dropout(rate=o.attention_dropout_rate)(weights, deterministic=deterministic)
    out = weights.astype(value.dtype) @ heads_first(value)  # [B, h, Lq, hd]
    return jnp.swapaxes(out, 1, 2)

  def project_out(self, x: jax.Array, width: int) -> jax.Array:
    """[..., H, hd] -> [..., width]."""
    return nn.DenseGeneral(
        features=width, axis=(-2, -1), dtype=self.options.dtype,
        param_dtype=self.options.param_dtype, kernel_init=self.out_kernel_init, bias_init=nn.initializers.zeros, name="out")(x)

  @nn.compact
  def __call__(self, inputs_q: jax.Array, inputs_kv: Optional[jax.Array] = None,
               deterministic: bool = True) -> jax.Array:
    """inputs_q [B, Lq, D], inputs_kv [B, Lk, D] (defaults to inputs_q) -> [B, Lq, D]."""
    if inputs_kv is None:
      inputs_kv = inputs_q
    width = inputs_q.shape[-1]
    head_dim = self.head_dim(width)
    query = self.project("query", inputs_q, head_dim)  # [B, Lq, H, hd]
    key = self.project("key", inputs_kv, head_dim)  # [B, Lk, H, hd]
    value = self.project("value", inputs_kv, head_dim)  # [B, Lk, H, hd]
    out = self.attend(query, key, value, deterministic,
                      score_params=self.score_params(head_dim))
    return self.project_out(out, width)


class Encoder1DBlock(OptionsClone, nn.Module):
  """Pre-LN transformer block: x + Attn(LN(x)), then y + MLP(LN(y)).

  Parameters (Linen naming): LayerNorm_0, MultiHeadDotProductAttention_0,
  LayerNorm_1, MlpBlock_0. The call signature `(x, stochastic_depth, deterministic)
  -> (x, None)` lets the same class run under a Python loop and under `nn.scan`;
  `stochastic_depth` is this block's rate (the encoder spreads `options.stochastic_depth`
  over the depth).
  """
  mlp_dim: int
  num_heads: int
  options: EncoderOptions = EncoderOptions()

  def attention(self, **overrides: Any) -> nn.Module:
    """The block's self-attention; ViViT's factorised dot-product block swaps it."""
    return MultiHeadDotProductAttention(num_heads=self.num_heads, options=self.options,
                                        **overrides)

  def norm(self, name: Optional[str] = None) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LAYERNORM_EPSILON, dtype=self.options.dtype,
                        param_dtype=self.options.param_dtype, name=name)

  def residual(self, x: jax.Array, y: jax.Array, stochastic_depth: Union[float, jax.Array],
               deterministic: bool) -> jax.Array:
    """x + DropPath(Dropout(y)): a residual branch's end, as every block has it."""
    y = nn.Dropout(rate=self.options.dropout_rate)(y, deterministic=deterministic)
    return x + DropPath()(y, stochastic_depth, deterministic)

  @nn.compact
  def __call__(self, x: jax.Array, stochastic_depth: Union[float, jax.Array] = 0.0,
               deterministic: bool = True) -> tuple[jax.Array, None]:
    """[B, L, D] -> ([B, L, D], None)."""
    y = self.norm()(x)
    y = self.attention()(y, deterministic=deterministic)
    x = self.residual(x, y, stochastic_depth, deterministic)

    y = self.norm()(x)
    y = MlpBlock(mlp_dim=self.mlp_dim, options=self.options)(y, deterministic=deterministic)
    return x + DropPath()(y, stochastic_depth, deterministic), None


def classifier_head(x: jax.Array, representation_size: Optional[int],
                    num_classes: Optional[int], options: EncoderOptions, *, head_name: str,
                    head_bias_init: float = 0.0) -> jax.Array:
  """Optional `pre_logits` (Dense + tanh), then the zero-initialised head `head_name`.

  [B, ..., D] -> [B, ..., num_classes] (features when num_classes is None), in float32
  so losses are stable under bf16 compute. Call it inside the model's compact
  `__call__`: the Dense layers become its children `pre_logits` and `head_name`.
  """
  if representation_size is not None:
    x = nn.Dense(representation_size, dtype=options.dtype, param_dtype=options.param_dtype,
                 name="pre_logits")(x)
    x = jnp.tanh(x)
  if num_classes is not None:
    x = nn.Dense(num_classes, dtype=options.dtype, param_dtype=options.param_dtype,
                 kernel_init=nn.initializers.zeros,
                 bias_init=nn.initializers.constant(head_bias_init), name=head_name)(x)
  return x.astype(jnp.float32)
