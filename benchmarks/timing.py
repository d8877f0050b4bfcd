"""Timing shared by the benchmark scripts; stdlib only (timm_compare's torch side uses it).

Both frameworks are timed the same way: untimed warm-up runs of `steps` calls (at least
WARMUP calls and WARMUP_SECONDS), then the median over REPEATS timed runs of `steps` calls. The warm-up is long because the host heap needs several calls to reach its steady
size: until then XLA:CPU's (and torch's) buffers land on fresh pages, which the kernel
must fault in and zero, and a ViT-Ti/16 train step measured 1.5x slower. The minor page
faults per timed call are returned too, so a table can show whether that happened.

The scripts that import vit_jax get its host allocator setting (vit_jax/host_memory.py);
`VIT_JAX_REUSE_HOST_MEMORY=0 python benchmarks/...` measures glibc's defaults instead.
This module imports nothing of vit_jax, so that timm_compare's torch side keeps glibc's.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable

WARMUP = 4
WARMUP_SECONDS = 10.0
REPEATS = 3


def _minor_faults() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def seconds_per_call(call: Callable[[], object], wait: Callable[[object], object], steps: int,
                     repeats: int = REPEATS, warmup: int | None = None,
                     warmup_seconds: float | None = None) -> tuple[float, float]:
  """(median seconds per call, minor page faults per timed call).

  `call()` runs one step and returns what `wait` blocks on (the last result). `warmup`
  and `warmup_seconds` shorten the warm-up where no host heap has to settle (a GPU's
  buffers live on the device: benchmarks/gpu_check.py); None reads WARMUP and
  WARMUP_SECONDS when called, so a caller may set those module-wide.
  """
  warmup = WARMUP if warmup is None else warmup
  warmup_seconds = WARMUP_SECONDS if warmup_seconds is None else warmup_seconds
  # Warm up in the pattern that is timed (runs of `steps` calls without waiting between
  # them): with several calls in flight the heap needs room for several calls' buffers.
  start, calls = time.perf_counter(), 0
  while calls < warmup or time.perf_counter() - start < warmup_seconds:
    for _ in range(steps):
      out = call()
    wait(out)
    calls += steps
  times, faults = [], _minor_faults()
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      out = call()
    wait(out)
    times.append((time.perf_counter() - start) / steps)
  return statistics.median(times), (_minor_faults() - faults) / (repeats * steps)
