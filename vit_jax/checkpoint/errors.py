"""The one exception type the checkpoint package raises for bad files and mismatches."""

from vit_jax.errors import CheckpointError

__all__ = ["CheckpointError"]
