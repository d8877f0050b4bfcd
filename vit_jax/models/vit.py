"""Vision Transformer (Dosovitskiy et al., 2020) in Flax linen.

The parameter tree is that of the released vit_jax checkpoints in Linen naming
(docs/checkpoint_formats.md, 'ViT: vit_jax / AugReg .npz'):

  embedding/{kernel [p, p, 3, D], bias}        strided conv patch embedding
  cls [1, 1, D]                                 with a cls token (classifier="token",
                                                or options.class_token=True)
  Transformer/posembed_input/pos_embedding      [1, N(+1), D], added after cls
  Transformer/encoderblock_{i}/...              or Transformer/encoderblock/... [L, ...]
  Transformer/encoder_norm/{scale, bias}
  MAPHead_0/...                                 only with classifier="map"
  pre_logits/{kernel, bias}                     only with representation_size
  head/{kernel, bias}                           zero-initialised

and, with the architecture options of EncoderOptions (docs/conventions.md, 'Architecture
options'): `dist` [1, 1, D] and `head_dist` (distilled), `registers` [1, R, D],
`Transformer/pre_norm` (pre_norm), `fc_norm` in place of `Transformer/encoder_norm`
(fc_norm), LayerScale_{0,1} in the blocks, no `embedding/bias` (patch_bias=False), no
`head/bias` (head_bias=False), no position embedding with rope and posemb="none";
`embedding_norm` (patch_norm), no final norm at all (final_norm=False), `rope_freqs`
[2, H, hd/2] in each block's attention (rope="mixed"), RMSNorms holding `scale` only
(norm="rmsnorm") and no attention-output / MLP biases (proj_bias=False).

Token order: [cls, dist, registers, patches]; the position embedding covers all of them,
or only the patches with `no_embed_class`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.models import layers, numerics, positions
from vit_jax.models import packed as packed_lib
from vit_jax.models.options import EncoderOptions, OptionsClone
from vit_jax.models.positions import sincos2d_posemb

Dtype = Any

CLASSIFIERS = ("token", "gap", "map", "unpooled")
# "none": no absolute position embedding (DINOv3, which has only RoPE).
POSEMB_TYPES = ("learn", "sincos2d", "none")


class AddPositionEmbs(nn.Module):
  """Adds a learned position embedding `pos_embedding` [1, L, D] to [B, L, D].

  With `resize` (options.POSEMB_RESIZE) an input of another length is served too: the
  stored rows after the first `num_prefix_rows` form a square grid, which is resized in
  the graph to the input's patch `grid` (gh, gw) (positions.resize_posemb_grid).
  """
  param_dtype: Dtype = jnp.float32
  resize: Optional[str] = None
  num_prefix_rows: int = 0
  grid: Optional[tuple[int, int]] = None

  @nn.compact
  def __call__(self, x: jax.Array,
               token_positions: Optional[tuple[jax.Array, ...]] = None) -> jax.Array:
    """[B, L, D] -> [B, L, D]. `token_positions` (coords, grids[, prefix_rows]): a packed
    sequence (models.packed; packed_posemb), each token taking the row of its own image's
    resized grid."""
    if token_positions is not None:
      return x + self.packed_posemb(x, *token_positions)
    # Checked before self.param, whose own shape error does not say what to do.
    stored = (self.get_variable("params", "pos_embedding").shape
              if self.has_variable("params", "pos_embedding") else (1,) + x.shape[1:])
    if stored[2] != x.shape[2] or (stored[1] != x.shape[1] and self.resize is None):
      raise ValueError(
          f"pos_embedding has {stored[1]} tokens of width {stored[2]}, the input gives "
          f"{x.shape[1]} tokens of width {x.shape[2]}: resize the position embeddings "
          "with vit_jax.checkpoint.adapt(...), feed the image size the parameters "
          "were made for, or build the model with posemb_resize (e.g. 'bicubic').")
    posemb = self.param("pos_embedding", nn.initializers.normal(stddev=0.02), stored,
                        self.param_dtype)
    if stored[1] != x.shape[1]:
      if self.grid is None or self.grid[0] * self.grid[1] + self.num_prefix_rows != x.shape[1]:
        raise ValueError(f"posemb_resize needs the input's patch grid: {x.shape[1]} tokens "
                         f"are not {self.num_prefix_rows} prefix rows and a grid "
                         f"{self.grid} (video position embeddings are not resized here).")
      old_grid = positions.grid_from_rows(stored[1], self.num_prefix_rows)
      prefix = posemb[:, :self.num_prefix_rows]
      grid = positions.resize_posemb_grid(posemb[:, self.num_prefix_rows:], old_grid,
                                          self.grid, self.resize)
      posemb = jnp.concatenate([prefix, grid], axis=1)
    return x + posemb.astype(x.dtype)

  def packed_posemb(self, x: jax.Array, coords: jax.Array, grids: jax.Array,
                    prefix_rows: Optional[jax.Array] = None) -> jax.Array:
    """[B, L, D] of a packed sequence's position embeddings (positions.posemb_at).

    coords, grids [B, L, 2] (models.packed.PackedPatches); `prefix_rows` [B, L]: for a
    prefix token (cls, registers) the index of its row among the first `num_prefix_rows`
    (none with no_embed_class: it then gets no position embedding), -1 for a patch.
    """
    if not self.has_variable("params", "pos_embedding"):
      raise ValueError("A packed batch does not say the size of the learned position "
                       "embedding: initialise the model with images of its size, then apply "
                       "it to packed batches.")
    if self.resize is None:
      raise ValueError("Packed sequences need posemb_resize (each image's grid is resized "
                       "from the stored one): build the model with posemb_resize, e.g. "
                       "'bilinear_antialias'.")
    posemb = self.get_variable("params", "pos_embedding")  # [1, P + GH * GW, D]
    gh, gw = positions.grid_from_rows(posemb.shape[1], self.num_prefix_rows)
    table = posemb[0, self.num_prefix_rows:].reshape(gh, gw, posemb.shape[-1])  # [GH, GW, D]
    out = positions.posemb_at(table, coords, grids, self.resize)  # [B, L, D]
    if prefix_rows is not None:
      is_prefix = (prefix_rows >= 0)[..., None]
      prefix = (posemb[0, jnp.clip(prefix_rows, 0, self.num_prefix_rows - 1)].astype(out.dtype)
                if self.num_prefix_rows else jnp.zeros_like(out))
      out = jnp.where(is_prefix, prefix, out)
    return out.astype(x.dtype)


class Encoder(OptionsClone, nn.Module):
  """Position embedding, dropout, (pre_norm), `num_layers` blocks, final LayerNorm.

  [B, L, D] -> [B, L, D], L = num_prefix_tokens + patch tokens. With
  `options.no_embed_class` the position embedding covers only the tokens after the
  first `num_prefix_tokens`; `patch_grid` (gh, gw) is the grid of the patch tokens, which
  the blocks' RoPE rotates by and `options.posemb_resize` resizes the position embedding
  to. With `options.fc_norm` the final LayerNorm is left to the model (after
  pooling). With `options.scan_layers` the blocks run under `nn.scan`
  and their parameters are stacked on a leading axis under `encoderblock`;
  otherwise they live under `encoderblock_{i}`. `vit_jax.models.layout`
  converts between the two.
  """
  num_layers: int
  mlp_dim: int
  num_heads: int
  add_position_embedding: bool = True
  num_prefix_tokens: int = 0
  patch_grid: Optional[tuple[int, int]] = None
  options: EncoderOptions = EncoderOptions()

  def block(self) -> tuple[type[nn.Module], dict[str, Any]]:
    """The block class and its attributes; ViViT's factorised encoders override this.

    The class must take `(x, stochastic_depth, deterministic)` and return `(x, None)`.
    """
    return layers.Encoder1DBlock, dict(
        mlp_dim=self.mlp_dim, num_heads=self.num_heads, num_prefix_tokens=self.num_prefix_tokens,
        patch_grid=self.patch_grid, options=self.options)

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True,
               token_mask: Optional[jax.Array] = None,
               token_positions: Optional[tuple[jax.Array, ...]] = None) -> jax.Array:
    """[B, L, D] -> [B, L, D].

    `token_mask` [B, L] (layers.attention_mask): 0 marks padding, which no real token
    attends to, so the real tokens' outputs are those of the sequence without the
    padding; equal non-zero ids form the images of a packed sequence. None compiles
    to the unmasked program. `token_positions` (coords, grids[, prefix_rows]): the
    positions of a packed sequence's tokens, coords and grids [B, L, 2] each and
    prefix_rows [B, L] (-1: a patch; j: the j-th prefix token of its image); they give
    each token its position embedding (AddPositionEmbs.packed_posemb) and RoPE angles
    (prefix tokens are not rotated), in place of `patch_grid`.
    """
    o = self.options
    mask = None if token_mask is None else layers.attention_mask(token_mask)  # [B, 1, L, L]
    if self.add_position_embedding:
      add = functools.partial(AddPositionEmbs, param_dtype=o.param_dtype,
                              resize=o.posemb_resize, grid=self.patch_grid,
                              name="posembed_input")
      if token_positions is not None:
        rows = 0 if o.no_embed_class else self.num_prefix_tokens
        x = add(num_prefix_rows=rows)(x, token_positions)
      elif o.no_embed_class and self.num_prefix_tokens:
        prefix, patches = x[:, :self.num_prefix_tokens], x[:, self.num_prefix_tokens:]
        x = jnp.concatenate([prefix, add()(patches)], axis=1)
      else:
        x = add(num_prefix_rows=self.num_prefix_tokens)(x)
    x = nn.Dropout(rate=o.dropout_rate)(x, deterministic=deterministic)
    if o.pre_norm:
      x = layers.layer_norm(o, name="pre_norm")(x)

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

    # The mask rides as a 4th argument only when there is one: the unmasked call (and so
    # its compiled program) is the one the blocks had before masks existed. A packed
    # sequence's per-token RoPE angles ride as a 5th.
    masked = () if mask is None else (mask,)
    if token_positions is not None and o.rope is not None:
      if mask is None:
        raise ValueError("A packed sequence needs its token_mask (image ids).")
      masked += (packed_rope_angles(o, token_positions, x.shape[-1] // self.num_heads),)
    if o.scan_layers:
      if rates_are_static:
        rate_arg, rate_axis = 0.0, nn.broadcast
      else:
        rate_arg, rate_axis = jnp.asarray(rates, jnp.float32), 0
      x, _ = nn.scan(
          block_cls,
          variable_axes={"params": 0, "intermediates": 0},
          split_rngs={"params": True, "dropout": True},
          in_axes=(rate_axis, nn.broadcast) + (nn.broadcast,) * len(masked),
          length=self.num_layers)(name="encoderblock", **block_kwargs)(
              x, rate_arg, deterministic, *masked)
    else:
      for i in range(self.num_layers):
        x, _ = block_cls(name=f"encoderblock_{i}", **block_kwargs)(
            x, rates[i], deterministic, *masked)
    if o.fc_norm or not o.final_norm:
      return x
    return layers.layer_norm(o, name="encoder_norm")(x)


def packed_rope_angles(options: EncoderOptions, token_positions: tuple[jax.Array, ...],
                       head_dim: int) -> jax.Array:
  """RoPE angles [B, L, hd/2] of a packed sequence's tokens, each from its (row, col) in
  its own image's grid (positions.rope_coordinates); prefix tokens get angle 0 (not
  rotated), as in a single image's sequence."""
  coords, grids = token_positions[:2]
  at = positions.rope_coordinates(options, coords[..., 0], coords[..., 1], grids[..., 0],
                                  grids[..., 1])  # [B, L, 2]
  angles = positions.rope_angles_at(options, at, head_dim)  # [B, L, hd/2]
  if len(token_positions) > 2:
    angles = jnp.where((token_positions[2] >= 0)[..., None], 0.0, angles)
  return angles


class MAPHead(OptionsClone, nn.Module):
  """Multihead attention pooling (big_vision): a learned probe attends to the tokens.

  [B, L, D] -> [B, D]. Parameters: probe [1, 1, D], MultiHeadDotProductAttention_0,
  LayerNorm_0, MlpBlock_0. As in big_vision the head has no dropout and keeps
  scaled dot-product attention whatever the encoder's `attention_score`, and (as timm's
  AttentionPoolLatent) plain attention with biases, without QK-norm or RoPE, and a GELU
  MLP (the encoder's GELU form, or QuickGELU), with biases. `options.map_num_heads` /
  `map_mlp_dim` replace `num_heads` / `mlp_dim` where the head has its own (PE).
  """
  mlp_dim: int
  num_heads: int
  options: EncoderOptions = EncoderOptions()

  @nn.compact
  def __call__(self, x: jax.Array, token_mask: Optional[jax.Array] = None,
               max_images: Optional[int] = None) -> jax.Array:
    """[B, L, D] -> [B, D]; `token_mask` [B, L]: the probe leaves the 0 (padding) out.

    With `max_images` M, the probe pools each image k = 1..M of a packed row
    (`token_mask` holds the image ids) on its own: [B, L, D] -> [B, M, D].
    """
    if self.options.map_attention_only:
      return self.attention_only(x, token_mask, max_images)
    o = self.options.replace(dropout_rate=0.0, attention_dropout_rate=0.0,
                             attention_score="scaled_dot")
    if o.qkv_bias != "qkv" or o.qk_norm or o.rope is not None or o.mlp_inner_norm or (
        o.mlp_activation == "swiglu") or not o.proj_bias:
      o = o.replace(qkv_bias="qkv", qk_norm=False, rope=None, rope_temperature=None,
                    rope_reference_grid=None, rope_grid_offset=0.0, rope_grid_indexing="ij",
                    mlp_inner_norm=False, proj_bias=True,
                    mlp_activation="gelu" if o.mlp_activation == "swiglu" else o.mlp_activation)
    batch, _, width = x.shape
    probe = self.param("probe", nn.initializers.xavier_uniform(), (1, 1, width),
                       o.param_dtype)
    queries = max_images or 1
    probe = jnp.tile(probe.astype(x.dtype), [batch, queries, 1])  # [B, M, D]
    if max_images:  # query k attends to image k + 1's tokens: [B, 1, M, L]
      masked = {"mask": token_mask[:, None, None, :] == jnp.arange(1, queries + 1)[:, None]}
    else:
      masked = {} if token_mask is None else {"mask": layers.key_mask(token_mask)}
    x = layers.MultiHeadDotProductAttention(num_heads=o.map_num_heads or self.num_heads,
                                            options=o)(probe, x, **masked)
    y = layers.layer_norm(o)(x)
    x = x + layers.MlpBlock(mlp_dim=o.map_mlp_dim or self.mlp_dim, options=o)(y)
    return x if max_images else x[:, 0]

  def attention_only(self, x: jax.Array, token_mask: Optional[jax.Array],
                     max_images: Optional[int]) -> jax.Array:
    """`options.map_attention_only`: [B, L, D] -> [B, D] ([B, M, D] per packed image).

    The probe [1, 1, D], split into heads, is the query; `key` / `value` [D, H, hd] (with
    biases unless qkv_bias="none") project the tokens; `out` [H, hd, D] (with bias)."""
    o = self.options
    batch, _, width = x.shape
    heads = o.map_num_heads or self.num_heads
    linear = numerics.linear_kwargs(o)
    probe = self.param("probe", nn.initializers.xavier_uniform(), (1, 1, width), o.param_dtype)
    queries = max_images or 1
    query = jnp.tile(probe.astype(x.dtype), [batch, queries, 1]).reshape(
        batch, queries, heads, width // heads)  # [B, M, H, hd]
    key, value = (nn.DenseGeneral((heads, width // heads), use_bias=o.qkv_bias != "none",
                                  kernel_init=layers.KERNEL_INIT, name=name, **linear)(x)
                  for name in ("key", "value"))  # [B, L, H, hd]
    mask = None
    if max_images:  # query k attends to image k + 1's tokens: [B, 1, M, L]
      mask = token_mask[:, None, None, :] == jnp.arange(1, queries + 1)[:, None]
    elif token_mask is not None:
      mask = layers.key_mask(token_mask)
    if o.sow_attention_weights:  # explicit softmax, stored as `attention_weights` here
      logits = jnp.einsum("bqhd,bkhd->bhqk", query, key,
                          preferred_element_type=jnp.float32) / jnp.sqrt(width // heads)
      if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
      weights = jax.nn.softmax(logits, axis=-1)  # [B, H, M, L]
      self.sow("intermediates", "attention_weights", weights)
      out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(value.dtype), value)
    else:
      out = jax.nn.dot_product_attention(query, key, value, mask=mask)  # [B, M, H, hd]
    out = nn.DenseGeneral(width, axis=(-2, -1), name="out", **linear)(out)  # [B, M, D]
    return out if max_images else out[:, 0]


def check_token_options(options: EncoderOptions, classifier: str,
                        representation_size: Optional[int]) -> None:
  """Raises on prefix-token and pooling options that do not fit together."""
  if classifier == "token" and not options.has_class_token(classifier):
    raise ValueError("classifier='token' pools the cls token, but class_token=False: "
                     "choose classifier 'gap' or 'map', or drop class_token=False.")
  if options.distilled and classifier != "token":
    raise ValueError(f"distilled=True reads the cls and distillation tokens (DeiT); it needs "
                     f"classifier='token', not {classifier!r}.")
  if options.distilled and representation_size is not None:
    raise ValueError("distilled=True has two heads on the tokens and no pre_logits layer: "
                     "drop representation_size.")


def add_prefix_tokens(module: nn.Module, x: jax.Array, classifier: str,
                      names: tuple[str, str, str] = ("cls", "dist", "registers")) -> jax.Array:
  """[B, N, D] -> [B, P + N, D]: the cls, distillation and register tokens in front.

  Call it inside `module`'s compact `__call__`; the tokens become its parameters `names`
  (cls and dist [1, 1, D], registers [1, R, D]), zero- resp. normal(0.02)-initialised.
  """
  o = module.options
  batch, _, width = x.shape
  tokens = []
  if o.has_class_token(classifier):
    tokens.append(module.param(names[0], nn.initializers.zeros, (1, 1, width), o.param_dtype))
  if o.distilled:
    tokens.append(module.param(names[1], nn.initializers.zeros, (1, 1, width), o.param_dtype))
  if o.num_registers:
    tokens.append(module.param(names[2], nn.initializers.normal(stddev=0.02),
                               (1, o.num_registers, width), o.param_dtype))
  if not tokens:
    return x
  tokens = [jnp.tile(t.astype(x.dtype), [batch, 1, 1]) for t in tokens]
  return jnp.concatenate(tokens + [x], axis=1)


def pool_tokens(x: jax.Array, classifier: str, options: EncoderOptions,
                map_head: Optional[nn.Module] = None,
                token_mask: Optional[jax.Array] = None) -> jax.Array:
  """Encoder output [B, P + N, D] -> [B, D] ([B, P + N, D] for "unpooled").

  "token" takes the cls token; "gap" and "map" pool the N patch tokens only (the
  cls / distillation / register tokens are left out, as timm's average pooling does), and
  with `token_mask` [B, P + N] only those that are not padding (0). With
  `options.map_prefix_tokens` the MAP head reads the prefix tokens too (timm's attn_pool).
  """
  prefix = options.num_prefix_tokens(classifier)
  if classifier == "token":
    return x[:, 0]
  patches = x[:, prefix:] if prefix else x
  patch_mask = None if token_mask is None else token_mask[:, prefix:]  # [B, N]
  if classifier == "gap":
    if patch_mask is None:
      return jnp.mean(patches, axis=1)
    weights = (patch_mask != 0).astype(patches.dtype)[..., None]  # [B, N, 1]
    return jnp.sum(patches * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1)
  if classifier == "map" and options.map_prefix_tokens:
    return map_head(x) if token_mask is None else map_head(x, token_mask)
  if classifier == "map":
    return map_head(patches) if patch_mask is None else map_head(patches, patch_mask)
  return x


def pool_images(x: jax.Array, image_ids: jax.Array, max_images: int, classifier: str,
                map_head: Optional[nn.Module] = None) -> jax.Array:
  """Packed encoder output [B, L, D] -> one pooled vector per image, [B, M, D].

  Image k (ids 1..M) of row b lands at [b, k - 1]; a slot without an image is zeros.
  "gap" averages each image's tokens, "map" runs the probe once per image.
  """
  slots = image_ids[:, :, None] == jnp.arange(1, max_images + 1)  # [B, L, M]
  counts = jnp.sum(slots, axis=1)[..., None]  # [B, M, 1]
  if classifier == "gap":
    pooled = jnp.einsum("blm,bld->bmd", slots.astype(x.dtype), x) / jnp.maximum(counts, 1)
  elif classifier == "map":
    pooled = map_head(x, image_ids, max_images)
  else:
    raise ValueError(f"pool_images pools each image's patches with classifier 'gap' or "
                     f"'map', not {classifier!r} (VisionTransformer.packed reads each "
                     "image's cls token itself).")
  return jnp.where(counts > 0, pooled, 0)


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
  fixes the token count at init time (resize it to fine-tune at another size), unless
  `options.posemb_resize` resizes it in the graph to any input's grid. A
  `models.packed.PackedPatches` batch (images of any sizes in rows) goes to `packed`.
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
    check_token_options(self.options, self.classifier, self.representation_size)

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False,
               features: bool = False) -> jax.Array | dict[str, jax.Array]:
    """images [B, H, W, C] -> logits [B, num_classes] (pooled [B, D] without a head).

    features=True returns {"pooled": the representation the head reads, [B, D] (after
    pre_logits when there is one), "patch_tokens": the encoder's output for the patches,
    cls / distillation / register tokens left out, [B, gh * gw, D]} from one pass, for
    downstream use (linear probes, dense heads, retrieval).
    """
    self.check_config()
    if isinstance(images, packed_lib.PackedPatches):
      return self.packed(images, train, features)
    if images.ndim != 4:
      raise ValueError(f"Expected images [B, H, W, C], got shape {images.shape}.")
    ph, pw = self.patch_hw
    _, h, w, _ = images.shape
    if h < ph or w < pw:
      raise ValueError(f"Image size {h}x{w} is smaller than one {ph}x{pw} patch: resize the "
                       f"images to at least {ph}x{pw} (a multiple of the patch size).")
    if h % ph or w % pw:
      raise ValueError(
          f"Image size {h}x{w} is not divisible by the patch size {ph}x{pw}; resize "
          f"the images to a multiple of the patch size (e.g. {h // ph * ph}x{w // pw * pw}).")

    o = self.options
    x = nn.Conv(self.hidden_size, (ph, pw), strides=(ph, pw), padding="VALID",
                use_bias=o.patch_bias, name="embedding", **numerics.conv_kwargs(o))(
                    images.astype(o.dtype))
    batch, gh, gw, width = x.shape
    x = jnp.reshape(x, (batch, gh * gw, width))  # [B, gh, gw, D] -> [B, N, D]
    if o.patch_norm:
      x = layers.layer_norm(o, name="embedding_norm")(x)

    if self.posemb == "sincos2d":
      x = x + jnp.asarray(sincos2d_posemb(gh, gw, width), o.dtype)
    x = add_prefix_tokens(self, x, self.classifier)  # [B, P + N, D]

    x = Encoder(
        num_layers=self.num_layers, mlp_dim=self.mlp_dim, num_heads=self.num_heads,
        add_position_embedding=self.posemb == "learn",
        num_prefix_tokens=o.num_prefix_tokens(self.classifier),
        patch_grid=(gh, gw), options=o,
        name="Transformer")(x, deterministic=not train)

    patch_tokens = x[:, o.num_prefix_tokens(self.classifier):]  # [B, P + N, D] -> [B, N, D]
    if o.distilled:
      out = self.distilled_heads(x, pooled_only=features)
      return {"pooled": out, "patch_tokens": patch_tokens} if features else out
    map_head = (MAPHead(mlp_dim=self.mlp_dim, num_heads=self.num_heads, options=o)
                if self.classifier == "map" else None)
    x = pool_tokens(x, self.classifier, o, map_head)
    if o.fc_norm:
      x = layers.layer_norm(o, name="fc_norm")(x)
    out = layers.classifier_head(x, self.representation_size,
                                 None if features else self.num_classes, o,
                                 head_name="head", head_bias_init=self.head_bias_init)
    return {"pooled": out, "patch_tokens": patch_tokens} if features else out

  def packed(self, batch: packed_lib.PackedPatches, train: bool,
             features: bool) -> jax.Array | dict[str, jax.Array]:
    """A packed batch (models.packed) -> logits [B, M, num_classes] (pooled [B, M, D]).

    The same parameters as for images: each patch goes through the patch embedding
    alone; each image gets its own prefix tokens (cls, registers), appended after the
    row's L patches in M groups of P ([B, L, D] -> [B, L + M * P, D]; image k's at
    L + (k - 1) P, with id k, or 0 when the row has no image k); the position embedding
    is each image's own resize of the stored grid (prefix tokens: their own rows), RoPE
    rotates each patch by its coordinates in its own grid; the encoder masks attention to
    each image, and pooling is per image ("token": its cls token; "gap" / "map": its
    patches). So each image's output equals running it alone at its size
    (tests/models/test_packed.py). features=True: "patch_tokens" are the row's L patch
    tokens [B, L, D].
    """
    o = self.options
    prefix = o.num_prefix_tokens(self.classifier)
    if self.posemb == "sincos2d" or o.distilled or self.classifier == "unpooled":
      raise ValueError(
          "Packed sequences take models with a learned position embedding (with "
          "posemb_resize) or RoPE only, and one pooled output per image ('token', 'gap' or "
          f"'map', not distilled); this model has posemb={self.posemb!r}, classifier="
          f"{self.classifier!r}, distilled={o.distilled}.")
    ph, pw = self.patch_hw
    b, length, dim = batch.patches.shape
    channels = dim // (ph * pw)
    if channels * ph * pw != dim:
      raise ValueError(f"Packed patches of {dim} values are not {ph}x{pw} patches.")
    pixels = jnp.reshape(batch.patches, (b * length, ph, pw, channels))  # one patch each
    x = nn.Conv(self.hidden_size, (ph, pw), strides=(ph, pw), padding="VALID",
                use_bias=o.patch_bias, name="embedding", **numerics.conv_kwargs(o))(
                    pixels.astype(o.dtype))
    x = jnp.reshape(x, (b, length, self.hidden_size))  # [B*L, 1, 1, D] -> [B, L, D]
    if o.patch_norm:
      x = layers.layer_norm(o, name="embedding_norm")(x)
    ids, coords, grids = batch.image_ids, batch.coords, batch.grids
    m = batch.max_images
    images = jnp.arange(1, m + 1)
    present = jnp.any(ids[:, :, None] == images, axis=1)  # [B, M]
    positions_of = (coords, grids)
    if prefix:
      tokens = add_prefix_tokens(self, jnp.zeros((b * m, 0, self.hidden_size), x.dtype),
                                 self.classifier)  # [B*M, P, D]
      x = jnp.concatenate([x, tokens.reshape(b, m * prefix, self.hidden_size)], axis=1)
      prefix_ids = jnp.repeat(jnp.where(present, images, 0), prefix, axis=1)  # [B, M*P]
      ids = jnp.concatenate([ids, prefix_ids], axis=1)  # [B, L + M*P]
      pad = lambda a, value: jnp.concatenate(
          [a, jnp.full((b, m * prefix, 2), value, a.dtype)], axis=1)
      rows = jnp.concatenate([jnp.full((b, length), -1, jnp.int32),
                              jnp.tile(jnp.arange(prefix, dtype=jnp.int32), (b, m))], axis=1)
      positions_of = (pad(coords, 0), pad(grids, 1), rows)
    x = Encoder(num_layers=self.num_layers, mlp_dim=self.mlp_dim, num_heads=self.num_heads,
                add_position_embedding=self.posemb == "learn", num_prefix_tokens=prefix,
                options=o, name="Transformer")(
                    x, deterministic=not train, token_mask=ids, token_positions=positions_of)
    patch_tokens = x[:, :length]  # [B, L + M*P, D] -> [B, L, D]
    if self.classifier == "token":
      pooled = x[:, length + prefix * jnp.arange(m)]  # each image's cls token: [B, M, D]
    else:
      map_head = (MAPHead(mlp_dim=self.mlp_dim, num_heads=self.num_heads, options=o)
                  if self.classifier == "map" else None)
      pooled = pool_images(patch_tokens, batch.image_ids, m, self.classifier,
                           map_head)  # [B, M, D]
    if o.fc_norm:
      pooled = layers.layer_norm(o, name="fc_norm")(pooled)
    out = layers.classifier_head(pooled, self.representation_size,
                                 None if features else self.num_classes, o,
                                 head_name="head", head_bias_init=self.head_bias_init)
    out = jnp.where(present[..., None], out, 0)  # slots without an image: zeros
    return {"pooled": out, "patch_tokens": patch_tokens} if features else out

  def distilled_heads(self, x: jax.Array, pooled_only: bool = False) -> jax.Array:
    """DeiT distilled: mean of `head` on the cls token and `head_dist` on the
    distillation token, [B, P + N, D] -> [B, num_classes] (as timm evaluates it; the
    mean of both tokens when num_classes is None)."""
    o = self.options
    tokens = x[:, 0], x[:, 1]
    if o.fc_norm:
      norm = layers.layer_norm(o, name="fc_norm")
      tokens = tuple(norm(t) for t in tokens)
    if self.num_classes is None or pooled_only:
      return ((tokens[0] + tokens[1]) / 2).astype(jnp.float32)
    logits = [layers.classifier_head(t, None, self.num_classes, o, head_name=name,
                                     head_bias_init=self.head_bias_init)
              for t, name in zip(tokens, ("head", "head_dist"))]
    return (logits[0] + logits[1]) / 2
