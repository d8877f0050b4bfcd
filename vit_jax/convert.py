"""`python -m vit_jax.convert`: checkpoint format conversion (vit_jax/checkpoint/convert.py)."""

import sys

from vit_jax.checkpoint import convert as _convert

if __name__ == "__main__":
  sys.exit(_convert.main())
