"""JAX's persistent compilation cache, as every vit_jax command uses it.

A second `python -m vit_jax.main`, `predict` or `visualize` with the same model and shapes
loads its compiled programs from DEFAULT_DIR instead of compiling them again (on a 2-core
CPU, most of a one-image `predict`'s time is compilation: benchmarks/README.md, 'predict
latency'). `--compilation_cache ''` disables it.
"""

from __future__ import annotations

import os

import jax

DEFAULT_DIR = os.path.expanduser("~/.cache/vit_jax/xla")
HELP = "Persistent XLA compilation cache directory ('' disables)."


def use(directory: str) -> None:
  """Caches every program that took at least a second to compile in `directory`."""
  if directory:
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
