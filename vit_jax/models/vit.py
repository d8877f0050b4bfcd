"""Vision Transformer (Dosovitskiy et al., 2020) in Flax linen.

The parameter tree is that of the released vit_jax checkpoints in Linen naming
(docs/checkpoint_formats.md, 'ViT: vit_jax / AugReg .npz'):

  embedding/{kernel [p, p, 3, D], bias}        strided conv patch embedding
  cls [1, 1, D]                                 only with classifier="token"
  Transformer/posembed_input/pos_embedding      [1, N(+1), D], added after cls
  Transformer/encoderblock_{i}/...              or Transformer/encoderblock/... [L, ...]
  Transformer/encoder_norm/{scale, bias}
  MAPHead_0/...                                 only with classifier="map"
  pre_logits/{kernel, bias}                     only with representation_size
  head/{kernel, bias}                           zero-initialised
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.models import layers
from vit_jax.models.options import EncoderOptions, OptionsClone

Dtype = Any

CLASSIFIERS = ("token", "gap", "map", "unpooled")
POSEMB_TYPES = ("learn", "sincos2d")


def sincos2d_posemb(grid_h: int, grid_w: int, width: int,
                    temperature: float = 10_000.0) -> np.ndarray:
  """Fixed 2-D sin-cos position embedding (MoCo v3 / big_vision), [1, gh*gw, D]."""
  if width % 4:
    raise ValueError(f"sincos2d position embeddings need width % 4 == 0, got {width}.")
  y, x = np.mgrid[:grid_h, :grid_w]
  omega = 1.0 / temperature ** (np.arange(width // 4) / (width // 4 - 1 or 1))
  y = np.einsum("n,d->nd", y.reshape(-1), omega)
  x = np.einsum("n,d->nd", x.reshape(-1), omega)
  pe = np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)
  return pe[None].astype(np.float32)


class AddPositionEmbs(nn.Module):
  """Adds a learned position embedding `pos_embedding` [1, L, D] to [B, L, D]."""
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    # Checked before self.param, whose own shape error does not say what to do.
    if self.has_variable("params", "pos_embedding"):
      stored = self.get_variable("params", "pos_embedding").shape
      if tuple(stored[1:]) != tuple(x.shape[1:]):
        raise ValueError(
            f"pos_embedding has {stored[1]} tokens of width {stored[2]}, the input gives "
            f"{x.shape[1]} tokens of width {x.shape[2]}: resize the position embeddings "
            "with vit_jax.checkpoint.adapt(...) or feed the image size the parameters "
            "were made for.")
    posemb = self.param("pos_embedding", nn.initializers.normal(stddev=0.02),
                        (1,) + x.shape[1:], self.param_dtype)
    return x + posemb.astype(x.dtype)


class Encoder(OptionsClone, nn.Module):
  """Position embedding, dropout, `num_layers` blocks, final LayerNorm.

  [B, L, D] -> [B, L, D]. With `options.scan_layers` the blocks run under `nn.scan`
  and their parameters are stacked on a leading axis under `encoderblock`;
  otherwise they live under `encoderblock_{i}`. `vit_jax.models.layout`
  converts between the two.
  """
  num_layers: int
  mlp_dim: int
  num_heads: int
  add_position_embedding: bool = True
  options: EncoderOptions = EncoderOptions()

  def block(self) -> tuple[type[nn.Module], dict[str, Any]]:
    """The block class and its attributes; ViViT's factorised encoders override this.

    The class must take `(x, stochastic_depth, deterministic)` and return `(x, None)`.
    """
    return layers.Encoder1DBlock, dict(mlp_dim=self.mlp_dim, num_heads=self.num_heads,
                                       options=self.options)

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    o = self.options
    if self.add_position_embedding:
      x = AddPositionEmbs(param_dtype=o.param_dtype, name="posembed_input")(x)
    x = nn.Dropout(rate=o.dropout_rate)(x, deterministic=deterministic)

    # Stochastic depth grows linearly from 0 (first block) to the configured rate.
    rates = [o.stochastic_depth * i / max(self.num_layers - 1, 1)
             for i in range(self.num_layers)]
    rates_are_static = o.stochastic_depth == 0.0 or not o.scan_layers
    block_cls, block_kwargs = self.block()
    if o.remat:
      block_cls = nn.remat(
          block_cls, prevent_cse=not o.scan_layers,
          # `self` counts as argument 0: (x=1, stochastic_depth=2, deterministic=3).
          static_argnums=(2, 3) if rates_are_static else (3,),
          policy=o.remat_policy_fn)

    if o.scan_layers:
      if rates_are_static:
        rate_arg, rate_axis = 0.0, nn.broadcast
      else:
        rate_arg, rate_axis = jnp.asarray(rates, jnp.float32), 0
      x, _ = nn.scan(
          block_cls,
          variable_axes={"params": 0, "intermediates": 0},
          split_rngs={"params": True, "dropout": True},
          in_axes=(rate_axis, nn.broadcast),
          length=self.num_layers)(name="encoderblock", **block_kwargs)(
              x, rate_arg, deterministic)
    else:
      for i in range(self.num_layers):
        x, _ = block_cls(name=f"encoderblock_{i}", **block_kwargs)(
            x, rates[i], deterministic)
    return nn.LayerNorm(epsilon=layers.LAYERNORM_EPSILON, dtype=o.dtype,
                        param_dtype=o.param_dtype, name="encoder_norm")(x)


class MAPHead(OptionsClone, nn.Module):
  """Multihead attention pooling (big_vision): a learned probe attends to the tokens.

  [B, L, D] -> [B, D]. Parameters: probe [1, 1, D], MultiHeadDotProductAttention_0,
  LayerNorm_0, MlpBlock_0. As in big_vision the head has no dropout and keeps
  scaled dot-product attention whatever the encoder's `attention_score`.
  """
  mlp_dim: int
  num_heads: int
  options: EncoderOptions = EncoderOptions()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    o = self.options.replace(dropout_rate=0.0, attention_dropout_rate=0.0,
                             attention_score="scaled_dot")
    batch, _, width = x.shape
    probe = self.param("probe", nn.initializers.xavier_uniform(), (1, 1, width),
                       o.param_dtype)
    probe = jnp.tile(probe.astype(x.dtype), [batch, 1, 1])  # [B, 1, D]
    x = layers.MultiHeadDotProductAttention(num_heads=self.num_heads, options=o)(probe, x)
    y = nn.LayerNorm(epsilon=layers.LAYERNORM_EPSILON, dtype=o.dtype,
                     param_dtype=o.param_dtype)(x)
    x = x + layers.MlpBlock(mlp_dim=self.mlp_dim, options=o)(y)
    return x[:, 0]


class TransformerModel(OptionsClone, nn.Module):
  """The fields ViT and ViViT share: the registered size, the patch, the head, options.

  Attributes:
    num_classes: size of the zero-initialised head; None returns the features.
    patch_size: (h, w) or one int for square patches.
    hidden_size, num_layers, mlp_dim, num_heads: the size (registry.VIT_SIZES).
    representation_size: width of the `pre_logits` layer (Dense + tanh); None: none.
    options: EncoderOptions for every layer (dropout, stochastic depth, attention,
      scan/remat, dtypes); `create_model` and `clone` take its fields flat.
  """
  num_classes: Optional[int]
  patch_size: Union[int, Sequence[int]]
  hidden_size: int
  num_layers: int
  mlp_dim: int
  num_heads: int
  representation_size: Optional[int] = None
  options: EncoderOptions = EncoderOptions()

  @property
  def patch_hw(self) -> tuple[int, int]:
    return layers.pair(self.patch_size)


class VisionTransformer(TransformerModel):
  """ViT classifier: images [B, H, W, 3] in [-1, 1] -> logits [B, num_classes].

  H and W must be multiples of the patch size; the learned position embedding
  fixes the token count at init time (resize it to fine-tune at another size).
  With classifier="unpooled" the output keeps the tokens: [B, N, num_classes]
  (or [B, N, D] features when num_classes is None).

  The fields shared with ViViT are TransformerModel's.
  """
  classifier: str = "token"
  posemb: str = "learn"
  head_bias_init: float = 0.0

  def check_config(self) -> None:
    if self.classifier not in CLASSIFIERS:
      raise ValueError(f"Unknown classifier {self.classifier!r}; choose one of {CLASSIFIERS}.")
    if self.posemb not in POSEMB_TYPES:
      raise ValueError(f"Unknown posemb {self.posemb!r}; choose one of {POSEMB_TYPES}.")

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    self.check_config()
    if images.ndim != 4:
      raise ValueError(f"Expected images [B, H, W, C], got shape {images.shape}.")
    ph, pw = self.patch_hw
    _, h, w, _ = images.shape
    if h % ph or w % pw:
      raise ValueError(
          f"Image size {h}x{w} is not divisible by the patch size {ph}x{pw}; resize "
          f"the images to a multiple of the patch size (e.g. {h // ph * ph}x{w // pw * pw}).")

    o = self.options
    x = nn.Conv(self.hidden_size, (ph, pw), strides=(ph, pw), padding="VALID",
                dtype=o.dtype, param_dtype=o.param_dtype,
                name="embedding")(images.astype(o.dtype))
    batch, gh, gw, width = x.shape
    x = jnp.reshape(x, (batch, gh * gw, width))  # [B, gh, gw, D] -> [B, N, D]

    if self.posemb == "sincos2d":
      x = x + jnp.asarray(sincos2d_posemb(gh, gw, width), o.dtype)
    if self.classifier == "token":
      cls = self.param("cls", nn.initializers.zeros, (1, 1, width), o.param_dtype)
      cls = jnp.tile(cls.astype(x.dtype), [batch, 1, 1])
      x = jnp.concatenate([cls, x], axis=1)  # [B, N+1, D]

    x = Encoder(
        num_layers=self.num_layers, mlp_dim=self.mlp_dim, num_heads=self.num_heads,
        add_position_embedding=self.posemb == "learn", options=o,
        name="Transformer")(x, deterministic=not train)

    if self.classifier == "token":
      x = x[:, 0]
    elif self.classifier == "gap":
      x = jnp.mean(x, axis=1)
    elif self.classifier == "map":
      x = MAPHead(mlp_dim=self.mlp_dim, num_heads=self.num_heads, options=o)(x)

    return layers.classifier_head(x, self.representation_size, self.num_classes, o,
                                  head_name="head", head_bias_init=self.head_bias_init)
