"""The one exception type the checkpoint package raises for bad files and mismatches."""


class CheckpointError(ValueError):
  """A checkpoint cannot be read or does not fit the target model.

  The message names the file or key at fault, what was expected, and the fix.
  """
