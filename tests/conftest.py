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

import pytest  # noqa: E402


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
