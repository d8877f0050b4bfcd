"""Scenic checkpoints: flax msgpack files (`checkpoint_<step>`) of a Scenic TrainState.

Scenic's trainers save their whole train state with
`flax.training.checkpoints.save_checkpoint`, one msgpack-serialised state dict
per step:

  flax.optim era  {"global_step", "optimizer": {"target": PARAMS, "state": ...},
                   "model_state", "rng", "accum_train_time"}
  optax era       {"global_step", "params": PARAMS, "opt_state", "model_state", "rng", ...}

Only PARAMS is kept. Scenic's ViViT uses the parameter names of
`vit_jax.models.VideoTransformer` (docs/checkpoint_formats.md, 'ViViT: Scenic': `embedding`,
`Transformer/...` or `SpatialTransformer/...` + `TemporalTransformer/...`,
`cls*`, `output_projection`), so the params are returned as they are, in the
per-layer layout. Scenic's GELU is flax's tanh approximation, as ours.
"""

from __future__ import annotations

import os
import re
from typing import Any, Optional

import numpy as np

from vit_jax.checkpoint.errors import CheckpointError

# Where a Scenic train state keeps the params, in the order tried.
PARAMS_PATHS = (("optimizer", "target"), ("params",))
# flax.training.checkpoints names the file of step N `checkpoint_N` (prefix "checkpoint_").
_STEP_FILE = re.compile(r"^checkpoint_(\d+)$")


def looks_like_msgpack_map(head: bytes) -> bool:
  """True when `head` starts a msgpack map (fixmap 0x80-0x8f, map16 0xde, map32 0xdf)."""
  return bool(head) and (0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF))


def latest_in_dir(directory: str) -> Optional[str]:
  """The `checkpoint_<step>` file of the highest step in `directory`, or None."""
  steps = [(int(m.group(1)), name) for name in os.listdir(directory)
           if (m := _STEP_FILE.match(name)) and os.path.isfile(os.path.join(directory, name))]
  return os.path.join(directory, max(steps)[1]) if steps else None


def _find_params(state: Any, path: str) -> dict[str, Any]:
  for keys in PARAMS_PATHS:
    node = state
    for key in keys:
      node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict) and node:
      # Some train states hold the whole variables dict {"params": ...}.
      if set(node) == {"params"} and isinstance(node["params"], dict):
        node = node["params"]
      return node
  found = sorted(state) if isinstance(state, dict) else type(state).__name__
  raise CheckpointError(
      f"{path}: a flax msgpack file without model params: expected a Scenic train state with "
      f"`optimizer/target` or `params`; its top-level entries are {found}.")


def load_scenic(path: str) -> tuple[dict[str, Any], str]:
  """Reads a Scenic msgpack checkpoint (a file, or a directory of `checkpoint_<step>` files).

  Returns:
    (params as a nested dict of numpy arrays, "scenic").
  """
  from flax import serialization  # noqa: PLC0415 (only Scenic users need it)

  if os.path.isdir(path):
    latest = latest_in_dir(path)
    if latest is None:
      raise CheckpointError(f"{path}: no `checkpoint_<step>` file in this directory.")
    path = latest
  with open(path, "rb") as f:
    data = f.read()
  try:
    state = serialization.msgpack_restore(data)
  except Exception as e:  # msgpack raises several types for truncated or foreign data
    raise CheckpointError(
        f"{path}: cannot read it as a flax msgpack checkpoint ({type(e).__name__}: {e}). "
        "The file is truncated or corrupt, or not a Scenic/flax checkpoint.") from e
  params = _find_params(state, path)
  return _to_numpy(params), "scenic"


def _to_numpy(tree: Any) -> Any:
  if isinstance(tree, dict):
    return {k: _to_numpy(v) for k, v in tree.items()}
  return np.asarray(tree)
