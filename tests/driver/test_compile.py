"""Compilation: the train step compiles once per run, and a second run loads it from the
persistent compilation cache (`--compilation_cache`) instead of compiling again."""

import subprocess

import pytest

from tests.helpers import REPO, main_command, subprocess_env

FLAGS = ["--config.total_steps=8", "--config.eval_every_steps=4", "--config.log_every_steps=2",
         "--config.checkpoint.every_steps=100"]


def run_logging_compiles(workdir, data_dir, cache_dir):
  """stderr of a tiny 2-device run, with jax logging every compilation and cache lookup."""
  env = subprocess_env(2, data_dir, JAX_LOG_COMPILES="1")
  cmd = main_command(workdir, *FLAGS, compilation_cache=str(cache_dir))
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc.stderr


@pytest.mark.slow
def test_train_step_compiles_once_then_comes_from_the_persistent_cache(tmp_path,
                                                                         digits_data_dir):
  cache = tmp_path / "xla_cache"
  first = run_logging_compiles(tmp_path / "first", digits_data_dir, cache)
  # 8 steps, 4 logging steps, 2 evaluations: one compilation of each step function.
  assert first.count("Compiling jit(train_step)") == 1
  assert first.count("Finished XLA compilation of jit(train_step)") == 1
  assert first.count("Compiling jit(eval_step)") == 1
  assert [p.name for p in cache.glob("jit_train_step-*")]  # written for the next run

  # Another run of the same config (new workdir): the executable comes from the cache.
  second = run_logging_compiles(tmp_path / "second", digits_data_dir, cache)
  assert "Persistent compilation cache hit for 'jit_train_step'" in second
  assert second.count("Compiling jit(train_step)") == 1
