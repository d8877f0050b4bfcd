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
rose from 403 to 531 MiB over the first 50 calls, then not at all in 250 more). The costs:
the process keeps its peak heap size, as PyTorch's and JAX's GPU caching allocators do,
and XLA's compiler threads share one arena, which made compiling that train step ~25%
slower (3.3-3.6 s -> 4.3 s at 112 px; `benchmarks/train_throughput.py`, compile s).
Training and scoring folders win (a 100-image `predict`: 21.7 -> 20.5 s); a job that is
mostly compilation, such as the test suite, is better off with 0.

Who gets it: `import vit_jax` (any of its modules) calls `configure()`, so a library user's
jitted steps, `predict`, `visualize`, notebooks and `python -m vit_jax.main` all run the
same way. `VIT_JAX_REUSE_HOST_MEMORY` decides:

  auto (unset)  on when XLA will compute on the CPU: JAX_PLATFORMS names cpu first, or
                names nothing and no accelerator plugin (jax_plugins: CUDA, ROCm; libtpu)
                is installed. With an accelerator the host heap is left alone: device
                buffers do not live there, and a many-core host's input pipeline keeps
                glibc's per-thread arenas.
  1             on wherever glibc runs.
  0             glibc's defaults.

The settings must reach glibc before JAX starts its CPU client, whose threads take their
arenas then: import vit_jax before the first JAX computation (a later import still stops
the mmap/unmap of the main arena's buffers, not those of the threads' own arenas). Only
glibc has these options: elsewhere (macOS, musl) nothing changes. The whole process is
affected, including TensorFlow or PyTorch running in it.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import pkgutil
import sys

ENV = "VIT_JAX_REUSE_HOST_MEMORY"

# mallopt parameters, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8

# What configure() decided for this process (for logs and tests): "on", "off", "not the
# CPU" or "not glibc"; None until it ran.
state: str | None = None


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


def _accelerator_plugins() -> list[str]:
  """The installed PJRT plugins JAX would pick before the CPU (without importing jax)."""
  found = [ep.name for ep in importlib.metadata.entry_points(group="jax_plugins")]
  spec = importlib.util.find_spec("jax_plugins")  # the namespace package of plugin modules
  if spec is not None and spec.submodule_search_locations:
    found += [m.name for m in pkgutil.iter_modules(spec.submodule_search_locations)]
  if importlib.util.find_spec("libtpu") is not None:
    found.append("libtpu")
  return found


def computes_on_cpu() -> bool:
  """Whether JAX's default backend in this process will be the CPU, as far as the
  environment tells before JAX starts."""
  platforms = os.environ.get("JAX_PLATFORMS") or os.environ.get("JAX_PLATFORM_NAME") or ""
  if platforms.strip():
    return platforms.split(",")[0].strip().lower() == "cpu"  # the first one is the default
  return not _accelerator_plugins()


def configure() -> str:
  """Applies VIT_JAX_REUSE_HOST_MEMORY (module docstring); returns and records the outcome."""
  global state
  choice = os.environ.get(ENV, "auto").strip().lower() or "auto"
  if choice not in ("auto", "1", "0"):
    raise ValueError(f"{ENV}={os.environ[ENV]!r}: use 1 (reuse freed host memory), 0 (glibc's "
                     "defaults) or auto (on when JAX computes on the CPU).")
  if choice == "0":
    state = "off"
  elif choice == "auto" and not computes_on_cpu():
    state = "not the CPU"
  else:
    state = "on" if reuse_freed_memory() else "not glibc"
  return state
