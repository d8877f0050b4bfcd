"""The errors vit_jax raises on purpose, for input a user can fix.

Every one of them subclasses `UserError`; its message names the problem and the fix.
The commands (`python -m vit_jax.main|predict|visualize|convert`) print such an error
as one message block on stderr and exit with status 1, without a traceback
(`--verbose`, or VIT_JAX_VERBOSE=1, shows it). Any other exception is a bug and keeps
its traceback.

Each subclass also derives from the built-in type it refines, so callers that catch
ValueError (or FloatingPointError, RuntimeError) keep working.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import NoReturn


class UserError(Exception):
  """Bad input: a config, data, checkpoint or workdir problem, or a diverged run."""


class ConfigError(UserError, ValueError):
  """An unknown config key, an impossible value, or options that do not fit together."""


class WorkdirError(UserError, ValueError):
  """The workdir does not fit the run: another model's checkpoints, nothing to evaluate."""


class DataError(UserError, ValueError):
  """A dataset, split, file or example the input pipeline cannot use."""


class MissingFileError(UserError, FileNotFoundError):
  """A file or folder the user named does not exist."""


class CheckpointError(UserError, ValueError):
  """A checkpoint cannot be read or does not fit the target model.

  The message names the file or key at fault, what was expected, and the fix. Defined
  here rather than in `vit_jax.checkpoint` because `vit_jax.models.positions` raises it
  for position embeddings that fit no grid, and models import nothing from checkpoint.
  """


VERBOSE_ENV = "VIT_JAX_VERBOSE"


def verbose_requested(flag: bool = False) -> bool:
  """--verbose, or VIT_JAX_VERBOSE set to anything but '' / '0'."""
  return flag or os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def format_error(program: str, error: BaseException) -> str:
  """The message block a command prints for a UserError."""
  lines = str(error).strip().splitlines() or [type(error).__name__]
  body = "\n".join("  " + line for line in lines)
  return (f"{program}: error: {type(error).__name__}\n{body}\n"
          f"(--verbose or {VERBOSE_ENV}=1 shows the traceback)\n")


@contextlib.contextmanager
def reported(program: str, verbose: bool = False) -> Iterator[None]:
  """Prints a UserError raised inside as one block on stderr and exits with status 1.

  With `verbose` (or VIT_JAX_VERBOSE=1) the error propagates with its traceback;
  other exceptions always do. `finally` blocks inside run first (SystemExit), so
  checkpoints being written are completed.
  """
  try:
    yield
  except UserError as e:
    if verbose_requested(verbose):
      raise
    sys.stdout.flush()
    sys.stderr.write(format_error(program, e))
    sys.stderr.flush()
    raise SystemExit(1) from None


def exit_now(status: int) -> NoReturn:
  """Flushes the logs and the standard streams, then ends the process at once with `status`.

  The last step of a command that failed, after its own cleanup (pending checkpoints
  written, metrics flushed). Why not `sys.exit`: interpreter shutdown destroys the input
  pipeline's tf.data iterators, and the destructor of one whose parallel map has a
  `tf.numpy_function` (a file decoder, a record check) in flight waits for that call
  while holding the GIL the call needs, so the process never exits: seen after a
  corrupted TFRecord, an undecodable evaluation file and a too-short video. A failed job
  that hangs burns its allocation and is never requeued.
  """
  for handler in logging.getLogger().handlers:
    with contextlib.suppress(Exception):
      handler.flush()
  for stream in (sys.stdout, sys.stderr):
    with contextlib.suppress(Exception):
      stream.flush()
  os._exit(status)
