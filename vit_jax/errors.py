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
