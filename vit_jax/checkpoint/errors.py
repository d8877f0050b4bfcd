"""The one exception type the checkpoint package raises for bad files and mismatches."""

from vit_jax.errors import UserError


class CheckpointError(UserError, ValueError):
  """A checkpoint cannot be read or does not fit the target model.

  The message names the file or key at fault, what was expected, and the fix.
  """
