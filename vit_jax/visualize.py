"""`python -m vit_jax.visualize`: attention figures (vit_jax/tools/visualize.py)."""

from vit_jax.tools import visualize as _visualize

if __name__ == "__main__":
  _visualize.run()
