"""vit_jax.driver.host_memory: XLA:CPU's per-call buffers stop being re-faulted on every call."""

import subprocess
import sys

import pytest

from tests.helpers import subprocess_env
from vit_jax.driver import host_memory

# Prints the minor page faults of each of 20 calls of a jitted function whose temporary
# buffer (the 4096 x 4096 float32 product: 64 MiB) is above glibc's 32 MiB mmap threshold.
PROBE = """
import resource, sys
from vit_jax.driver import host_memory
if sys.argv[1] == "reuse":
  assert host_memory.reuse_freed_memory()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.tanh(x @ x.T) @ x)
x = jnp.ones((4096, 64), jnp.float32)
for _ in range(20):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  jax.block_until_ready(f(x))
  print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults_per_call(mode: str) -> list[int]:
  env = subprocess_env(devices=None)  # one device is enough
  out = subprocess.run([sys.executable, "-c", PROBE, mode], env=env, capture_output=True,
                       text=True, check=True, timeout=300).stdout
  return [int(line) for line in out.split()]


@pytest.mark.slow
@pytest.mark.skipif(host_memory._glibc() is None, reason="the settings exist in glibc only")
def test_freed_buffers_are_reused_instead_of_faulted_in_again():
  default, reuse = _faults_per_call("default")[4:], _faults_per_call("reuse")[4:]
  # glibc's defaults: every call maps the 64 MiB buffer afresh (16k pages of 4 KiB).
  assert min(default) > 10_000, default
  # Reused: once the first calls have grown the heap, calls touch no new page. Now and
  # then one still grows it by a buffer (a call's buffer can be allocated before the last
  # call's is freed; measured: 0-2 of 30 calls), so the test asserts the typical call and
  # the total, not every call.
  assert sorted(reuse)[len(reuse) // 2] < 500, reuse
  assert sum(reuse) < 0.3 * sum(default), (reuse, default)
