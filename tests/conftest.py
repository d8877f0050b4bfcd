"""Test set-up: 8 forced CPU devices, so multi-device code runs on any machine.

XLA reads the flag when the backend starts, so it must be set before jax is
imported anywhere; pytest imports this file first.

The suite runs with glibc's allocator (VIT_JAX_REUSE_HOST_MEMORY=0, here and in the child
processes, which inherit it): it is bound by compilation, which the single malloc arena of
the host-memory setting slows by ~25% (vit_jax/host_memory.py), while the setting pays off
only in steady-state steps. tests/test_host_memory.py runs it explicitly.
"""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("VIT_JAX_REUSE_HOST_MEMORY", "0")
# One persistent compilation cache for the whole session, every program however fast it
# compiled: the suite compiles the same tiny models' steps in many tests and in their
# child processes (which inherit these variables; the pytest-xdist workers inherit the
# controller's directory). A test that checks compiling passes its own --compilation_cache.
_SESSION_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import tempfile  # noqa: E402

  _SESSION_CACHE = tempfile.mkdtemp(prefix="vit_jax_test_xla_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _SESSION_CACHE
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

import pytest  # noqa: E402


def pytest_sessionfinish(session):
  """The process that made the session's compilation cache removes it at the end."""
  if _SESSION_CACHE is not None:
    import shutil  # noqa: PLC0415

    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def digits_data_dir(tmp_path_factory) -> str:
  """A TFDS data dir with the bundled `digits` dataset prepared (once per session)."""
  from vit_jax.data import sources  # noqa: PLC0415 (after the XLA flags above)

  path = str(tmp_path_factory.mktemp("tfds_digits"))
  sources.tfds_builder("digits", path)
  return path


@pytest.fixture(scope="session")
def video_data_dir(digits_data_dir) -> str:
  """digits_data_dir with the bundled `moving_digits/tiny` (80 train / 30 test clips) too."""
  from vit_jax.data import sources  # noqa: PLC0415

  sources.tfds_builder("moving_digits/tiny", digits_data_dir)  # prepares it once
  return digits_data_dir


@pytest.fixture(scope="session")
def canvas_data_dir(digits_data_dir) -> str:
  """digits_data_dir with the bundled `digits/canvas` (5,748 train / 360 test images) too."""
  from vit_jax.data import sources  # noqa: PLC0415

  sources.tfds_builder("digits/canvas", digits_data_dir)  # prepares it once
  return digits_data_dir
