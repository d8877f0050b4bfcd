"""`python -m vit_jax.main`: train, fine-tune and evaluate (vit_jax/driver/main.py)."""

from vit_jax.driver import main as _main

if __name__ == "__main__":
  _main.run()
