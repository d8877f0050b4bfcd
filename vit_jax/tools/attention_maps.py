"""Where a ViT or ViViT looks: attention rollout and raw attention maps, as arrays.

    maps = attention_maps.compute(model, params, images)   # or videos
    maps.rollout       # images [B, gh, gw]; videos [B, t, gh, gw]
    maps.layer_heads   # images [L, B, H, gh, gw]; videos [L, B, H, t, gh, gw]

Attention rollout (Abnar & Zuidema, 2020; docs/conventions.md, 'Attention rollout'): per layer,
average the heads' attention matrices, add the identity (the residual path),
renormalise the rows, and multiply the layers' matrices in order,
R = A_L ... A_2 A_1, so R[i, j] is how much output token i draws on input
token j. The map is the pooling query's row of R over the patch tokens:

  classifier "token":  the cls token's row;
  classifier "gap":    the mean of all tokens' rows (the pooled output is their mean);
  classifier "map":    the MAP head's probe attention (averaged over heads, no
                       identity: the head has no residual from the probe) times R.

`layer_heads` is the other common view: every layer's and head's raw attention
from the same query (the cls row, the mean row, or the probe-weighted rows for
"map") over the patch tokens, without rollout.

Maps are not renormalised: with a cls token part of the mass stays on the cls
column, so a map sums to at most 1 (exactly 1 without a cls token).

Videos (ViViT; t temporal indices of `tubelet_size` frames each, gh x gw patches):
  spatio_temporal: rollout over all t*gh*gw tokens, reshaped to [t, gh, gw].
  factorised_self_attention / factorised_dot_product: each layer's time and space
    attention embedded in the full [t*n, t*n] token-to-token matrix (time
    attention only connects tokens of one spatial position, space attention
    tokens of one temporal index), then rolled out like the joint model; a
    factorised self-attention block is two residual stages, so two matrices.
  divided_space_time (TimeSformer): like factorised_self_attention, time then space
    per block; the cls token skips the time stage (an identity row) and its space row
    is the mean over frames of its per-frame rows, as the block averages it.
  factorised_encoder_tokens (VideoPrism): the spatial encoder's layers (within each
    frame) then the temporal encoder's (within each spatial position) in token space,
    rolled out; the query is the attention pool's probe (classifier "map", its heads
    in `pool_heads` [B, H, t, gh, gw]) or the mean token ("gap").
  factorised_encoder / frame_average: the spatial encoder's rollout of each
    temporal index (its own cls token) gives the per-frame spatial maps; the
    temporal encoder's rollout of its cls over the t frame tokens is `temporal`
    [B, t] (uniform for frame_average, which averages the frames).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import models
from vit_jax.models import vit, vivit


@dataclasses.dataclass(frozen=True)
class AttentionMaps:
  """Attention maps of a batch (numpy arrays; see the module docstring).

  Attributes:
    logits: [B, num_classes].
    rollout: images [B, gh, gw]; videos [B, t, gh, gw] (per temporal index).
    layer_heads: raw attention of the pooling query per layer and head:
      images [L, B, H, gh, gw]; videos [L, B, H, t, gh, gw]. For the factorised
      attention models, the heads' time and space attention combined into token
      space (one entry per attention stage, so 2L for factorised_self_attention).
    pool_heads: classifier "map": the probe's attention per head [B, H, gh, gw].
    temporal: factorised_encoder / frame_average: the temporal cls's rollout over
      the t frame tokens [B, t] (sums to at most 1).
    temporal_layer_heads: factorised_encoder: [Lt, B, Ht, t] raw attention of the
      temporal cls per layer and head.
    grid: (t, gh, gw) for videos, (gh, gw) for images.
  """

  logits: np.ndarray
  rollout: np.ndarray
  layer_heads: np.ndarray
  grid: tuple[int, ...]
  pool_heads: Optional[np.ndarray] = None
  temporal: Optional[np.ndarray] = None
  temporal_layer_heads: Optional[np.ndarray] = None


def rollout(weights: jax.Array, residual: bool = True) -> jax.Array:
  """Attention rollout of per-layer attention [L, B, H, N, N] -> [B, N, N].

  Heads are averaged; with `residual` the identity is added and rows are
  renormalised before the layers' matrices are multiplied in order
  (R = A_L ... A_1). Rows of the result sum to 1.
  """
  a = jnp.mean(weights.astype(jnp.float32), axis=2)  # [L, B, N, N]
  if residual:
    a = a + jnp.eye(a.shape[-1], dtype=a.dtype)
    a = a / jnp.sum(a, axis=-1, keepdims=True)

  def step(r, layer):
    return jnp.einsum("bij,bjk->bik", layer, r), None

  r, _ = jax.lax.scan(step, a[0], a[1:])
  return r


def encoder_layers(weights: Mapping[str, jax.Array], prefix: str,
                   suffix: str = "MultiHeadDotProductAttention_0") -> jax.Array:
  """The `prefix` encoder's weights ending in `suffix`, stacked [L, ...] in layer order.

  Works for per-layer (`prefix/encoderblock_{i}/...`) and scanned
  (`prefix/encoderblock/...`, already [L, ...]) encoders.
  """
  keys = [k for k in weights
          if k.startswith(prefix + "/encoderblock") and k.endswith("/" + suffix)]
  if not keys:
    raise ValueError(f"No attention weights {prefix}/encoderblock*/{suffix}; found "
                     f"{sorted(weights)}.")
  if len(keys) == 1 and keys[0].startswith(prefix + "/encoderblock/"):
    return weights[keys[0]]
  return jnp.stack([weights[k] for k in keys])


def _query(classifier: str, num_tokens: int, batch: int,
           probe: Optional[jax.Array] = None) -> jax.Array:
  """The pooled output's weights over the encoder's output tokens [B, N]."""
  if classifier == "token":
    return jnp.zeros((batch, num_tokens)).at[:, 0].set(1.0)
  if classifier == "map":
    return jnp.mean(probe[:, :, 0, :], axis=1)  # [B, H, 1, N] -> [B, N]
  return jnp.full((batch, num_tokens), 1.0 / num_tokens)


def _pooled(layers: jax.Array, query: jax.Array, has_cls: bool) -> tuple[jax.Array, jax.Array]:
  """(rollout map [B, n], per-layer/head raw maps [L, B, H, n]) over the n patch tokens."""
  start = 1 if has_cls else 0
  rolled = jnp.einsum("bi,bij->bj", query, rollout(layers))[:, start:]
  raw = jnp.einsum("bi,lbhij->lbhj", query, layers.astype(jnp.float32))[..., start:]
  return rolled, raw


def _image_maps(model: vit.VisionTransformer, images: jax.Array, logits: jax.Array,
                weights: Mapping[str, jax.Array]) -> dict[str, Any]:
  if model.classifier == "unpooled":
    raise ValueError("classifier='unpooled' has no pooled output to explain; attention maps "
                     "need 'token', 'gap' or 'map'.")
  ph, pw = model.patch_hw
  batch, h, w = images.shape[:3]
  gh, gw = h // ph, w // pw
  layers = encoder_layers(weights, "Transformer")  # [L, B, H, P + N, P + N]
  probe = weights.get("MAPHead_0/MultiHeadDotProductAttention_0",
                      weights.get("MAPHead_0"))  # [B, H, 1, N] (map_attention_only: its own)
  # Prefix tokens (cls, distillation, registers) take part in attention but are not
  # drawn: the maps cover the N patches. The pooled output's query: the cls row, the
  # mean of the cls and distillation rows (a distilled model averages both heads), the
  # mean patch row (gap), or the probe's weights over the patches (map).
  prefix = model.options.num_prefix_tokens(model.classifier)
  total = layers.shape[-1]
  if model.options.distilled:
    query = jnp.zeros((batch, total)).at[:, :2].set(0.5)
  elif model.classifier == "token":
    query = _query("token", total, batch)
  elif model.classifier == "map" and probe.shape[-1] == total:  # map_prefix_tokens (PE)
    query = jnp.mean(probe[:, :, 0, :], axis=1)
    probe = probe[..., prefix:]
  elif model.classifier == "map":
    query = jnp.zeros((batch, total)).at[:, prefix:].set(jnp.mean(probe[:, :, 0, :], axis=1))
  else:
    query = jnp.zeros((batch, total)).at[:, prefix:].set(1.0 / (total - prefix))
  rolled = jnp.einsum("bi,bij->bj", query, rollout(layers))[:, prefix:]
  raw = jnp.einsum("bi,lbhij->lbhj", query, layers.astype(jnp.float32))[..., prefix:]
  out = dict(logits=logits, rollout=rolled.reshape(batch, gh, gw),
             layer_heads=raw.reshape(raw.shape[:3] + (gh, gw)), grid=(gh, gw))
  if probe is not None:
    out["pool_heads"] = probe[:, :, 0, :].reshape(batch, -1, gh, gw)
  return out


def _embed_factorised(time: Optional[jax.Array], space: Optional[jax.Array], t: int,
                      n: int, batch: int) -> jax.Array:
  """Time [L, B*n, Ht, t, t] and space [L, B*t, Hs, n, n] attention -> [L, B, Ht+Hs, N, N].

  Token i = (ti, si) in time-major order; time attention connects (ti, s) to
  (tj, s), space attention (t, si) to (t, sj). Either may be None.
  """
  eye_t, eye_n = jnp.eye(t), jnp.eye(n)
  parts = []
  if time is not None:
    tm = time.reshape(time.shape[0], batch, n, time.shape[2], t, t)  # [L, B, n, Ht, t, t]
    # [L, B, Ht, ti, si, tj, sj]
    parts.append(jnp.einsum("lbshij,sr->lbhisjr", tm, eye_n))
  if space is not None:
    sm = space.reshape(space.shape[0], batch, t, space.shape[2], n, n)  # [L, B, t, Hs, n, n]
    parts.append(jnp.einsum("lbthij,tr->lbhtirj", sm, eye_t))
  full = jnp.concatenate(parts, axis=2)
  return full.reshape(full.shape[:3] + (t * n, t * n))


def _embed_divided(time: jax.Array, space: jax.Array, t: int, n: int, batch: int,
                   prefix: int) -> tuple[jax.Array, jax.Array]:
  """Time [L, B*n, H, t, t] and space [L, B*t, H, P+n, P+n] attention of the divided
  block -> its two stages in token space, each [L, B, H, P+N, P+N] (N = t*n).

  The P prefix tokens skip the time stage (identity rows); in the space stage their row
  is the mean over frames of their per-frame rows (the block averages their outputs).
  """
  p = prefix
  time_full = _embed_factorised(time, None, t, n, batch)  # [L, B, H, N, N]
  eye = jnp.broadcast_to(jnp.eye(p), time_full.shape[:3] + (p, p))
  zeros = jnp.zeros(time_full.shape[:3] + (p, t * n))
  time_full = jnp.concatenate([jnp.concatenate([eye, zeros], -1),
                               jnp.concatenate([jnp.swapaxes(zeros, -1, -2), time_full], -1)],
                              axis=-2)
  layers, heads = space.shape[0], space.shape[2]
  sm = space.reshape(layers, batch, t, heads, p + n, p + n)
  patches = _embed_factorised(None, space[..., p:, p:], t, n, batch)  # [L, B, H, N, N]
  # [L, B, t, H, n, P] -> [L, B, H, t, n, P] -> [L, B, H, N, P]
  patch_prefix = sm[..., p:, :p].transpose(0, 1, 3, 2, 4, 5).reshape(
      layers, batch, heads, t * n, p)
  prefix_prefix = jnp.mean(sm[..., :p, :p], axis=2)  # [L, B, H, P, P]
  # [L, B, t, H, P, n] / t -> [L, B, H, P, t, n] -> [L, B, H, P, N]
  prefix_patch = (sm[..., :p, p:] / t).transpose(0, 1, 3, 4, 2, 5).reshape(
      layers, batch, heads, p, t * n)
  space_full = jnp.concatenate([jnp.concatenate([prefix_prefix, prefix_patch], -1),
                                jnp.concatenate([patch_prefix, patches], -1)], axis=-2)
  return time_full, space_full


def _video_maps(model: vivit.VideoTransformer, videos: jax.Array, logits: jax.Array,
                weights: Mapping[str, jax.Array]) -> dict[str, Any]:
  t, gh, gw = vivit.token_grid(model, videos.shape)
  n, batch = gh * gw, videos.shape[0]
  has_cls = model.classifier_in_use == "token"
  out: dict[str, Any] = dict(logits=logits, grid=(t, gh, gw))

  if model.variant in ("factorised_encoder", "frame_average"):
    spatial = encoder_layers(weights, "SpatialTransformer")  # [L, B*t, H, n(+1), n(+1)]
    query = _query(model.classifier_in_use, spatial.shape[-1], batch * t)
    rolled, raw = _pooled(spatial, query, has_cls)  # [B*t, n], [L, B*t, H, n]
    out["rollout"] = rolled.reshape(batch, t, gh, gw)
    # [L, B*t, H, n] -> [L, B, t, H, gh, gw] -> [L, B, H, t, gh, gw]
    raw = raw.reshape(raw.shape[0], batch, t, raw.shape[2], gh, gw)
    out["layer_heads"] = raw.transpose(0, 1, 3, 2, 4, 5)
    if model.variant == "frame_average":
      out["temporal"] = jnp.full((batch, t), 1.0 / t)
    else:
      temporal = encoder_layers(weights, "TemporalTransformer")  # [Lt, B, Ht, t(+1), t(+1)]
      query = _query(model.classifier_in_use, temporal.shape[-1], batch)
      out["temporal"], out["temporal_layer_heads"] = _pooled(temporal, query, has_cls)
    return out

  if model.variant == vivit.FACTORISED_TOKENS:
    # Spatial [Ls, B*t, H, n, n] then temporal [Lt, B*n, H, t, t] layers -> [Ls+Lt, B, H, N, N]
    layers = jnp.concatenate([
        _embed_factorised(None, encoder_layers(weights, "SpatialTransformer"), t, n, batch),
        _embed_factorised(encoder_layers(weights, "TemporalTransformer"), None, t, n, batch)])
    if model.classifier_in_use == "map":
      probe = weights["AttentionPool"]  # [B, H, 1, N]
      out["pool_heads"] = probe[:, :, 0].reshape(batch, -1, t, gh, gw)
      query = jnp.mean(probe[:, :, 0, :], axis=1)  # [B, N]
    else:
      query = _query("gap", layers.shape[-1], batch)
    rolled, raw = _pooled(layers, query, False)
    out["rollout"] = rolled.reshape(batch, t, gh, gw)
    out["layer_heads"] = raw.reshape(raw.shape[:3] + (t, gh, gw))
    return out

  if model.variant == "spatio_temporal":
    layers = encoder_layers(weights, "Transformer")  # [L, B, H, N(+1), N(+1)]
  elif model.variant == vivit.DIVIDED:
    time_full, space_full = _embed_divided(
        encoder_layers(weights, "Transformer", "MultiHeadDotProductAttention_time"),
        encoder_layers(weights, "Transformer", "MultiHeadDotProductAttention_space"),
        t, n, batch, int(has_cls))
    layers = jnp.stack([time_full, space_full], axis=1)  # [L, 2, B, H, N', N']
    layers = layers.reshape((-1,) + layers.shape[2:])  # -> [2L, ...], in block order
  elif model.variant == "factorised_dot_product":
    layers = _embed_factorised(
        encoder_layers(weights, "Transformer", "MultiHeadDotProductAttention_0/time"),
        encoder_layers(weights, "Transformer", "MultiHeadDotProductAttention_0/space"),
        t, n, batch)
  else:  # factorised_self_attention: two residual stages per block, in attention_order.
    stages = {axis: _embed_factorised(
        *((encoder_layers(weights, "Transformer", f"MultiHeadDotProductAttention_{axis}"),
           None) if axis == "time" else
          (None, encoder_layers(weights, "Transformer", f"MultiHeadDotProductAttention_{axis}"))),
        t, n, batch) for axis in ("time", "space")}
    order = (model.attention_order or vivit.ATTENTION_ORDERS[0]).split("_")
    # [L, B, H, N, N] x 2 -> [2L, B, H, N, N], interleaved in the blocks' order.
    layers = jnp.stack([stages[order[0]], stages[order[1]]], axis=1)
    layers = layers.reshape((-1,) + layers.shape[2:])
  query = _query(model.classifier_in_use, layers.shape[-1], batch)
  rolled, raw = _pooled(layers, query, has_cls)
  out["rollout"] = rolled.reshape(batch, t, gh, gw)
  out["layer_heads"] = raw.reshape(raw.shape[:3] + (t, gh, gw))
  return out


def compute(model: nn.Module, params: Any, inputs: jax.Array, jit: bool = True) -> AttentionMaps:
  """Attention maps of `model` (VisionTransformer or VideoTransformer) on a batch.

  Args:
    model: the module (any attention_score; maps read the softmax weights).
    params: its parameters.
    inputs: images [B, H, W, 3] or videos [B, T, H, W, 3], preprocessed as in evaluation.
    jit: compile the forward pass (faster for anything but one tiny input).

  Returns:
    AttentionMaps of numpy arrays.
  """
  def run(p, x):
    logits, weights = models.attention_weights(model, p, x)
    if isinstance(model, vivit.VideoTransformer):
      return _video_maps(model, x, logits, weights)
    if isinstance(model, vit.VisionTransformer):
      return _image_maps(model, x, logits, weights)
    raise TypeError(f"Attention maps support VisionTransformer and VideoTransformer, "
                    f"not {type(model).__name__}.")

  grid: tuple[int, ...] = ()

  def arrays_only(p, x):
    nonlocal grid
    out = run(p, x)
    grid = out.pop("grid")
    return out

  fn = jax.jit(arrays_only) if jit else arrays_only
  out = jax.device_get(fn(params, jnp.asarray(inputs)))
  return AttentionMaps(grid=grid, **{k: np.asarray(v) for k, v in out.items()})
