"""vit_jax.host_memory: `import vit_jax` stops XLA:CPU's per-call buffers being re-faulted.

The probe is written as a library user writes code: it imports vit_jax and jits its own
function; nothing calls host_memory. Whether the allocator was set is read from the page
faults of the calls, not from vit_jax's own record of it.
"""

import subprocess
import sys

import pytest

from tests.helpers import subprocess_env
from vit_jax import host_memory

# Prints the minor page faults of each of 20 calls of a jitted function whose temporary
# buffer (the 4096 x 4096 float32 product: 64 MiB) is above glibc's 32 MiB mmap threshold.
PROBE = """
import resource
import vit_jax
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.tanh(x @ x.T) @ x)
x = jnp.ones((4096, 64), jnp.float32)
for _ in range(20):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  jax.block_until_ready(f(x))
  print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults_per_call(**env: str) -> list[int]:
  env = subprocess_env(devices=None, **env)  # one device is enough
  out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                       text=True, check=True, timeout=300).stdout
  return [int(line) for line in out.split()]


@pytest.mark.slow
@pytest.mark.skipif(host_memory._glibc() is None, reason="the settings exist in glibc only")
def test_importing_vit_jax_makes_freed_buffers_reused_instead_of_faulted_in_again():
  default = _faults_per_call(VIT_JAX_REUSE_HOST_MEMORY="0")[4:]
  reuse = _faults_per_call(VIT_JAX_REUSE_HOST_MEMORY="auto")[4:]  # with JAX_PLATFORMS=cpu
  # glibc's defaults: every call maps the 64 MiB buffer afresh (16k pages of 4 KiB).
  assert min(default) > 10_000, default
  # Reused: once the first calls have grown the heap, calls touch no new page. Now and
  # then one still grows it by a buffer (a call's buffer can be allocated before the last
  # call's is freed; measured: 0-2 of 30 calls), so the test asserts the typical call and
  # the total, not every call.
  assert sorted(reuse)[len(reuse) // 2] < 500, reuse
  assert sum(reuse) < 0.3 * sum(default), (reuse, default)


@pytest.fixture
def no_settings(monkeypatch):
  """configure() runs, but glibc is not touched (the test process keeps its allocator)."""
  calls = []
  monkeypatch.setattr(host_memory, "state", host_memory.state)  # restored afterwards
  monkeypatch.setattr(host_memory, "reuse_freed_memory", lambda: calls.append(1) or True)
  for var in (host_memory.ENV, "JAX_PLATFORMS", "JAX_PLATFORM_NAME"):
    monkeypatch.delenv(var, raising=False)
  return calls


@pytest.mark.parametrize("platforms,applied", [
    ("cpu", True), ("cpu,cuda", True), ("cuda", False), ("tpu,cpu", False), ("rocm", False)])
def test_auto_follows_the_platform_jax_will_pick_first(no_settings, monkeypatch, platforms,
                                                      applied):
  monkeypatch.setenv("JAX_PLATFORMS", platforms)
  assert host_memory.configure() == ("on" if applied else "not the CPU")
  assert no_settings == ([1] if applied else [])


def test_auto_without_platforms_looks_for_accelerator_plugins(no_settings, monkeypatch):
  monkeypatch.setattr(host_memory, "_accelerator_plugins", lambda: [])
  assert host_memory.configure() == "on"
  monkeypatch.setattr(host_memory, "_accelerator_plugins", lambda: ["xla_cuda12"])
  assert host_memory.configure() == "not the CPU"
  assert no_settings == [1]


def test_explicit_choices_override_auto(no_settings, monkeypatch):
  monkeypatch.setenv("JAX_PLATFORMS", "cuda")
  monkeypatch.setenv(host_memory.ENV, "1")
  assert host_memory.configure() == "on"  # forced, even with an accelerator
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv(host_memory.ENV, "0")
  assert host_memory.configure() == "off"
  assert no_settings == [1]


def test_a_bad_value_names_the_variable_and_its_values(no_settings, monkeypatch):
  monkeypatch.setenv(host_memory.ENV, "yes please")
  with pytest.raises(ValueError, match=r"VIT_JAX_REUSE_HOST_MEMORY='yes please': use 1 .* 0 "):
    host_memory.configure()
  assert no_settings == []


def test_plugin_discovery_sees_this_machine_has_none():
  # The test machines have CPU-only jaxlib: no plugin (auto turns reuse on here), and the
  # suite itself runs with glibc's allocator (tests/conftest.py).
  assert host_memory._accelerator_plugins() == []
  assert host_memory.computes_on_cpu()
  assert host_memory.state == "off"
