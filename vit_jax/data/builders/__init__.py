"""Bundled TFDS builders that prepare offline from files shipped inside installed packages.

Importing this package registers `digits` and `moving_digits` with TFDS, so
`tfds.builder("digits", data_dir=...)` (or "digits/canvas", "moving_digits/tiny") works
like for any catalogue dataset.
"""

from vit_jax.data.builders.digits import Digits, DigitsConfig
from vit_jax.data.builders.moving_digits import MovingDigits, MovingDigitsConfig

BUNDLED = ("digits", "moving_digits")

__all__ = ["BUNDLED", "Digits", "DigitsConfig", "MovingDigits", "MovingDigitsConfig"]
