"""Device mesh and sharding rules.

One 2-D mesh over every device of every host: axis "data" (pure data parallel)
and axis "fsdp" (data parallel whose members also shard parameters and optimizer
state). The batch is split over both axes. Parameters follow one rule: with
fsdp > 1, each array is split along its largest dimension that the fsdp size
divides; everything else (and everything when fsdp == 1) is replicated.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vit_jax.errors import ConfigError

BATCH_AXES = ("data", "fsdp")


def create_mesh(fsdp: int = 1, devices: list[Any] | None = None) -> Mesh:
  """A ("data", "fsdp") mesh over `devices` (default: all devices of all hosts)."""
  devices = list(jax.devices() if devices is None else devices)
  if len(devices) % fsdp:
    raise ConfigError(f"mesh.fsdp={fsdp} does not divide the {len(devices)} devices; "
                     "pick a divisor of the device count.")
  grid = np.asarray(devices).reshape(len(devices) // fsdp, fsdp)
  return Mesh(grid, BATCH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over every device; other dims replicated."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def param_spec(shape: tuple[int, ...], fsdp: int) -> P:
  """The sharding rule for one parameter or optimizer-state array."""
  if fsdp == 1 or not shape:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp == 0 and shape[dim] >= fsdp:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return P(*spec)
  return P()


def tree_shardings(mesh: Mesh, abstract_tree: Any) -> Any:
  """NamedShardings for a tree of arrays / ShapeDtypeStructs, by `param_spec`."""
  fsdp = mesh.shape["fsdp"]
  return jax.tree.map(lambda x: NamedSharding(mesh, param_spec(tuple(x.shape), fsdp)),
                      abstract_tree)
