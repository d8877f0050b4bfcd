"""`python -m vit_jax.evaluate`: evaluators on any source, without training (vit_jax/evals/cli.py)."""

from vit_jax.evals import cli as _cli

if __name__ == "__main__":
  _cli.run()
