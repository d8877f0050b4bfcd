"""Converts encoder parameters between per-layer and scanned (stacked) layouts.

Per-layer:  {..., "encoderblock_0": tree, "encoderblock_1": tree, ...}
Scanned:    {..., "encoderblock": tree with every leaf stacked on axis 0 [L, ...]}

Both functions walk the whole tree, so they serve any encoder that follows the
naming (ViT's `Transformer`, ViViT's `SpatialTransformer`/`TemporalTransformer`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PER_LAYER_KEY = re.compile(r"^encoderblock_(\d+)$")
STACKED_KEY = "encoderblock"


def _as_dict(tree: Mapping[str, Any]) -> dict[str, Any]:
  return {k: (_as_dict(v) if isinstance(v, Mapping) else v) for k, v in tree.items()}


def _stack(*xs):
  # Host arrays stay on the host; device arrays are stacked on device.
  return np.stack(xs) if isinstance(xs[0], np.ndarray) else jnp.stack(xs)


def is_stacked(params: Mapping[str, Any]) -> bool:
  """True when any encoder in `params` uses the scanned layout."""
  for key, value in params.items():
    if key == STACKED_KEY:
      return True
    if isinstance(value, Mapping) and is_stacked(value):
      return True
  return False


def stack_layers(params: Mapping[str, Any]) -> dict[str, Any]:
  """Per-layer -> scanned layout (leaves of `encoderblock_{i}` stacked on axis 0)."""
  out = {}
  blocks = {}
  for key, value in params.items():
    match = PER_LAYER_KEY.match(key)
    if match:
      blocks[int(match.group(1))] = value
    elif isinstance(value, Mapping):
      out[key] = stack_layers(value)
    else:
      out[key] = value
  if blocks:
    if sorted(blocks) != list(range(len(blocks))):
      raise ValueError(f"Encoder blocks are not numbered 0..{len(blocks) - 1}: "
                       f"found {sorted(blocks)}.")
    ordered = [_as_dict(blocks[i]) for i in range(len(blocks))]
    out[STACKED_KEY] = jax.tree.map(_stack, *ordered)
  return out


def unstack_layers(params: Mapping[str, Any]) -> dict[str, Any]:
  """Scanned -> per-layer layout (axis 0 of `encoderblock` split into blocks)."""
  out = {}
  for key, value in params.items():
    if key == STACKED_KEY:
      leaves = jax.tree.leaves(value)
      depth = leaves[0].shape[0]
      for i in range(depth):
        out[f"encoderblock_{i}"] = jax.tree.map(lambda x, i=i: x[i], _as_dict(value))
    elif isinstance(value, Mapping):
      out[key] = unstack_layers(value)
    else:
      out[key] = value
  return out
