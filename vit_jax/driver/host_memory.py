"""Keeps XLA:CPU's per-call buffers in the process heap instead of fresh mmaps.

XLA:CPU allocates an executable's temporary buffer (for a ViT-Ti/16 train step at batch
8: 562 MB) with malloc on every call and frees it when the call ends. glibc serves an
allocation that large with mmap (always from a worker thread's own arena, and from the
main arena above its 32 MiB mmap threshold) and gives it back with munmap, so on every
step the kernel maps, faults in and zeroes every page again: 150k page faults and ~20%
of the step time of that train step, measured with `perf` on a 2-core machine.

`reuse_freed_memory()` tells glibc to serve every thread from the main arena, never to
use mmap and never to trim the heap: freed buffers stay mapped and the next call reuses
them (0 page faults per step once warm; the ViT-Ti/16 step goes from ~560 to ~450 ms).
Now and then a call's buffer is allocated before the previous call's is freed and the heap
grows by one more buffer; that stops after a few (a 64 MiB temporary: the resident size
rose from 403 to 531 MiB over the first 50 calls, then not at all in 250 more). The cost
is that the process keeps its peak heap size, as PyTorch's and JAX's GPU caching
allocators do. It must run before JAX starts its CPU client (whose threads would otherwise already
own arenas); `vit_jax.main` and the benchmarks call it first. Only glibc has these
options: elsewhere (macOS, musl) it does nothing and says so.
"""

from __future__ import annotations

import ctypes
import sys

# mallopt parameters, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8


def _glibc():
  if not sys.platform.startswith("linux"):
    return None
  try:
    libc = ctypes.CDLL("libc.so.6")
  except OSError:
    return None
  # gnu_get_libc_version exists only in glibc (musl also ships a stub mallopt).
  return libc if hasattr(libc, "gnu_get_libc_version") else None


def reuse_freed_memory() -> bool:
  """Makes freed heap memory stay mapped for reuse; True if glibc took the settings."""
  libc = _glibc()
  if libc is None:
    return False
  settings = (
      (M_ARENA_MAX, 1),  # worker threads share the main arena, which can grow with brk
      (M_MMAP_MAX, 0),  # no allocation is served by mmap (so none is unmapped on free)
      # glibc reads the int as size_t: -1 is SIZE_MAX, so the heap top is never trimmed.
      (M_TRIM_THRESHOLD, -1),
  )
  return all(libc.mallopt(param, value) == 1 for param, value in settings)
