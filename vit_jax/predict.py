"""`python -m vit_jax.predict`: top-k classes of images or videos (vit_jax/tools/predict.py)."""

from vit_jax.tools import predict as _predict

if __name__ == "__main__":
  _predict.run()
