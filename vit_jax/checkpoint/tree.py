"""Flat `/`-joined keys <-> nested dicts, the two shapes every format passes through."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """{"a": {"b": x}} -> {"a/b": x}; leaves keep their type."""
  flat = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(flatten(value, path + "/"))
    else:
      flat[path] = value
  return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  """{"a/b": x} -> {"a": {"b": x}}."""
  tree: dict[str, Any] = {}
  for path, value in flat.items():
    *parents, leaf = path.split("/")
    node = tree
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return tree


def to_numpy(tree: Mapping[str, Any]) -> dict[str, Any]:
  """Nested dict of host numpy arrays (device arrays are fetched)."""
  return unflatten({k: np.asarray(v) for k, v in flatten(tree).items()})


def shape_of(x: Any) -> tuple[int, ...]:
  return tuple(getattr(x, "shape", np.shape(x)))
