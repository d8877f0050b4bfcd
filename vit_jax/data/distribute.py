"""Splitting data between processes and turning host batches into global jax arrays."""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from vit_jax.errors import DataError


def host_range(num_examples: int, process_index: int, process_count: int) -> tuple[int, int]:
  """[start, end) of the examples that process `process_index` reads.

  Contiguous shares that differ by at most one example, the first
  `num_examples % process_count` processes taking one more: the same split as
  `tfds.even_splits(..., drop_remainder=False)` (11 examples, 3 processes -> 4, 4, 3).
  """
  if not 0 <= process_index < process_count:
    raise DataError(f"process_index={process_index} outside [0, {process_count}).")
  base, extra = divmod(num_examples, process_count)
  start = process_index * base + min(process_index, extra)
  return start, start + base + (process_index < extra)


def num_eval_batches(host_counts: Iterable[int], local_batch_size: int) -> int:
  """Batches every process runs in one evaluation pass: enough for the largest share.

  All processes must run the same number of steps (each step is a collective
  over the global batch), so smaller shares are padded with masked examples.
  """
  return max(math.ceil(n / local_batch_size) for n in host_counts)


def batch_sharding(sharding: jax.sharding.Sharding) -> jax.sharding.Sharding:
  """`sharding`'s split of the leading (batch) dimension, other dimensions replicated.

  Lets one NamedSharding (e.g. P(("data",))) serve images [B, H, W, 3] and labels [B].
  """
  if isinstance(sharding, NamedSharding):
    spec = sharding.spec
    return NamedSharding(sharding.mesh, PartitionSpec(spec[0] if len(spec) else None))
  return sharding


def num_batch_shards(sharding: jax.sharding.Sharding) -> int:
  """How many pieces the batch dimension is cut into."""
  if isinstance(sharding, NamedSharding):
    spec = sharding.spec
    axes = spec[0] if len(spec) else None
    if axes is None:
      return 1
    axes = (axes,) if isinstance(axes, str) else axes
    return math.prod(sharding.mesh.shape[a] for a in axes)
  return len(sharding.device_set)


def local_batch_size(global_batch_size: int, sharding: jax.sharding.Sharding,
                     process_count: int | None = None) -> int:
  """This process's share of `global_batch_size`; raises when it cannot be split evenly."""
  process_count = jax.process_count() if process_count is None else process_count
  shards = num_batch_shards(sharding)
  if global_batch_size <= 0 or global_batch_size % shards:
    lower = max(shards, global_batch_size // shards * shards)
    raise DataError(f"Global batch size {global_batch_size} is not divisible by the {shards} "
                     f"devices that share the batch dimension: use a multiple of {shards}, "
                     f"e.g. {lower} or {lower + shards}.")
  if global_batch_size % process_count:
    raise DataError(f"Global batch size {global_batch_size} is not divisible by the "
                     f"{process_count} processes: use a multiple of {process_count}.")
  return global_batch_size // process_count


def to_global(batch: dict[str, np.ndarray], sharding: jax.sharding.Sharding,
              global_batch_size: int) -> dict[str, jax.Array]:
  """Host-local numpy batch [b, ...] -> global jax arrays [B, ...] sharded on dimension 0."""
  return {
      k: jax.make_array_from_process_local_data(batch_sharding(sharding), v,
                                                (global_batch_size, *v.shape[1:]))
      for k, v in batch.items()
  }


def prefetch_to_device(batches: Iterator[dict[str, np.ndarray]], sharding: jax.sharding.Sharding,
                       global_batch_size: int, size: int) -> Iterator[dict[str, jax.Array]]:
  """Transfers `size` batches ahead; transfers are asynchronous, so they overlap compute."""
  queue = collections.deque()
  for batch in batches:
    queue.append(to_global(batch, sharding, global_batch_size))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
