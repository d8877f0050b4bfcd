"""Reads attention weights out of a model for inspection.

The default forward pass uses the fused `jax.nn.dot_product_attention` and
keeps no weights; this helper re-runs the model with `sow_attention_weights`
so every attention layer stores its softmax in the 'intermediates' collection.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

_BLOCK = re.compile(r"encoderblock_(\d+)")


def _collect(tree: Mapping[str, Any], path: tuple[str, ...], found: dict) -> None:
  for key, value in tree.items():
    if key == "attention_weights":
      found[path] = value[0]  # sow stores a one-element tuple
    elif key.startswith("attention_weights_"):
      # One module with several attention patterns (ViViT's factorised
      # dot-product attention sows `attention_weights_time` and `_space`).
      found[path + (key.removeprefix("attention_weights_"),)] = value[0]
    elif isinstance(value, Mapping):
      _collect(value, path + (key,), found)


def _block_order(path: tuple[str, ...]) -> tuple:
  # encoderblock_10 must sort after encoderblock_2; numbered blocks come before named
  # modules of the same parent (V-JEPA 2's pooler: its blocks, then its cross-attention).
  return tuple((0, int(m.group(1)), "") if (m := _BLOCK.fullmatch(p)) else (1, 0, p)
               for p in path)


def attention_weights(model: nn.Module, params: Any, inputs: jax.Array,
                      **apply_kwargs: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Runs `model` in eval mode and returns (logits, weights).

  `weights` maps each attention module's path ("Transformer/encoderblock_0/
  MultiHeadDotProductAttention_0") to its softmax [B, H, Lq, Lk], in layer order;
  for scanned encoders the single entry is stacked [L, B, H, Lq, Lk]. A module
  that sows several patterns gets one entry each (".../MultiHeadDotProductAttention_0/
  time" and ".../space"); shapes are then those documented by the module.
  """
  probe = model.clone(sow_attention_weights=True)
  logits, state = probe.apply({"params": params}, inputs, train=False,
                              mutable=["intermediates"], **apply_kwargs)
  found: dict[tuple[str, ...], jax.Array] = {}
  _collect(state["intermediates"], (), found)
  return logits, {"/".join(k): found[k] for k in sorted(found, key=_block_order)}


def stack_encoder_weights(weights: Mapping[str, jax.Array], prefix: str = "Transformer") -> jax.Array:
  """The encoder's per-layer weights of `attention_weights` as one [L, B, H, Lq, Lk] array."""
  keys = [k for k in weights if k.startswith(prefix + "/encoderblock")]
  if len(keys) == 1 and keys[0].startswith(prefix + "/encoderblock/"):
    return weights[keys[0]]
  return jnp.stack([weights[k] for k in keys])
