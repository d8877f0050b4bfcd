"""Inference tools for trained models.

  inference       a trained model from a run's workdir or a checkpoint file
  predict         `python -m vit_jax.predict`: top-k classes of images and videos
  attention_maps  attention rollout and raw attention (arrays; no TensorFlow needed)
  visualize       `python -m vit_jax.visualize`: PNG figures of the maps

Nothing is imported eagerly: `vit_jax.tools.attention_maps` needs only the models.
"""
