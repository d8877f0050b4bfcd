"""Helpers shared by the tests: the repository root, config files, child processes, run outputs.

Fixtures (prepared datasets) live in tests/conftest.py; this module holds plain functions,
imported as `from tests import helpers`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import jax
import ml_collections
from absl import flags
from ml_collections import config_flags

from tests import tiny_digits_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")
TINY_DIGITS_CONFIG = "tests/tiny_digits_config.py"  # relative to REPO, as on a command line


def load_config(spec: str, *overrides: str) -> ml_collections.ConfigDict:
  """The config of `--config spec [--config.KEY=VALUE ...]` as vit_jax.main parses it.

  spec: "configs/NAME.py[:ARG]", relative to REPO. A `--config` flag of its own (the
  driver's DEFINE_config_file, locked) loads the file and calls get_config(ARG).
  """
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "Config file.", flag_values=flag_values,
                                  lock_config=True)
  flag_values(["test", f"--config={os.path.join(REPO, spec)}", *overrides])
  return flag_values.config


def tiny_config(data_dir, **overrides) -> ml_collections.ConfigDict:
  """tests/tiny_digits_config.py (ViT-Mu/2, 24 steps, checkpoints every 12) plus overrides.

  overrides: flattened keys, e.g. `**{"data.image_size": 16, "total_steps": 12}`.
  """
  c = tiny_digits_config.get_config()
  c.data.data_dir = str(data_dir)
  c.update_from_flattened_dict(overrides)
  return c


def overrides_as_flags(overrides: dict[str, Any]) -> list[str]:
  """{"total_steps": 8} -> ["--config.total_steps=8"]."""
  return [f"--config.{k}={v}" for k, v in overrides.items()]


def subprocess_env(devices: int | None = 8, data_dir=None, pythonpath=(),
                   **extra: str) -> dict[str, str]:
  """The environment of a child process of the tests: CPU only, the repository importable.

  Args:
    devices: forced CPU devices (XLA_FLAGS replaced); None drops XLA_FLAGS, so that the
      child sees jax's default of one CPU device (or a launcher sets its own).
    data_dir: VIT_JAX_DATA_DIR, the TFDS data dir the configs read.
    pythonpath: folders put before the repository on PYTHONPATH (a sitecustomize hook).
    **extra: further variables.
  """
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join([*map(str, pythonpath), REPO]))
  if devices is None:
    env.pop("XLA_FLAGS", None)
  else:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  if data_dir is not None:
    env["VIT_JAX_DATA_DIR"] = str(data_dir)
  env.update(extra)
  return env


def main_command(workdir, *flags: str, config: str = TINY_DIGITS_CONFIG,
                 compilation_cache: str = "") -> list[str]:
  """`python -m vit_jax.main` on `config` (the tiny digits run), no compilation cache."""
  return [sys.executable, "-m", "vit_jax.main", "--config", config, "--workdir", str(workdir),
          f"--compilation_cache={compilation_cache}", *flags]


def run_main(workdir, data_dir, *flags: str, devices: int = 8, timeout: int = 300,
             check: bool = True, **env: str) -> subprocess.CompletedProcess:
  """Runs the tiny digits config through `python -m vit_jax.main` on `devices` CPU devices."""
  cmd = main_command(workdir, *flags)
  proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(devices, data_dir, **env),
                        capture_output=True, text=True, timeout=timeout)
  if check and proc.returncode != 0:
    raise AssertionError(f"{cmd} failed:\n{proc.stderr[-4000:]}")
  return proc


def read_jsonl(path) -> list[dict[str, Any]]:
  """The records of a JSON-lines file (a run's metrics.jsonl)."""
  with open(path) as f:
    return [json.loads(line) for line in f]


def logged(path, key: str) -> list[Any]:
  """The values of `key` in the records of metrics.jsonl that have it, in order."""
  return [x[key] for x in read_jsonl(path) if key in x]


def restore_params(workdir, step: int) -> Any:
  """Parameters of a run's checkpoint written by any topology, restored onto one local device."""
  import orbax.checkpoint as ocp  # noqa: PLC0415 (only the tests that read checkpoints)

  from vit_jax.checkpoint.orbax_io import CHECKPOINTS_DIR, ITEM_NAME, PARAMS  # noqa: PLC0415

  mngr = ocp.CheckpointManager(
      os.path.join(workdir, CHECKPOINTS_DIR), item_names=(ITEM_NAME,),
      item_handlers={ITEM_NAME: ocp.StandardCheckpointHandler()})
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                        mngr.item_metadata(step)[ITEM_NAME])
  restored = mngr.restore(step, args=ocp.args.Composite(**{
      ITEM_NAME: ocp.args.StandardRestore(target)}))[ITEM_NAME]
  mngr.close()
  return restored[PARAMS]
