"""Mixup and CutMix as a pure jax function, applied on device inside the train step.

    images, labels = mix(rng, images, jax.nn.one_hot(labels, n), mixup_alpha=0.8, cutmix_alpha=1.0)

Batch-level mixing as timm's `Mixup` in "batch" mode: one lambda per batch,
each example mixed with its mirror in the batch (example i with B-1-i), so no
extra randomness is needed to pair examples. With lambda ~ Beta(alpha, alpha):
  mixup:  x = lam * x + (1 - lam) * x[::-1]
  cutmix: a box covering ~(1 - lam) of the image is pasted from x[::-1]; lam is
          then set to the exact kept fraction, so that labels match pixels.
  labels: lam * y + (1 - lam) * y[::-1] (each row still sums to 1).
Works for images [B, H, W, C] and clips [B, T, H, W, C] (one box for all frames).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def mix(rng: jax.Array, images: jax.Array, labels_onehot: jax.Array, *,
        mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, switch_prob: float = 0.5,
        mix_prob: float = 1.0) -> tuple[jax.Array, jax.Array]:
  """Mixes a batch with its reverse by mixup or cutmix.

  Args:
    rng: a jax PRNG key.
    images: [B, H, W, C] or [B, T, H, W, C].
    labels_onehot: [B, num_classes], rows summing to 1 (one-hot or smoothed).
    mixup_alpha, cutmix_alpha: Beta parameters; 0 disables that method.
    switch_prob: with both enabled, the probability to use cutmix for this batch.
    mix_prob: probability to mix this batch at all.

  Returns:
    (images, labels): the same shapes and dtypes as the inputs.
  """
  if mixup_alpha <= 0 and cutmix_alpha <= 0:
    return images, labels_onehot
  apply_rng, switch_rng, lam_rng, box_rng = jax.random.split(rng, 4)
  use_cutmix = (jax.random.uniform(switch_rng) < switch_prob if mixup_alpha > 0 and cutmix_alpha > 0
                else jnp.asarray(cutmix_alpha > 0))
  alpha = jnp.where(use_cutmix, max(cutmix_alpha, 1e-8), max(mixup_alpha, 1e-8))
  lam = jax.random.beta(lam_rng, alpha, alpha)
  lam = jnp.where(jax.random.uniform(apply_rng) < mix_prob, lam, 1.0)

  partner = images[::-1]
  h, w = images.shape[-3], images.shape[-2]
  keep, lam_cut = cutmix_mask(box_rng, h, w, lam)
  keep = keep[..., None]  # [H, W, 1], broadcasts over the batch (and time).
  mixed_cut = jnp.where(keep, images, partner)
  mixed_up = (lam * images + (1 - lam) * partner).astype(images.dtype)
  images = jnp.where(use_cutmix, mixed_cut, mixed_up)
  lam = jnp.where(use_cutmix, lam_cut, lam).astype(labels_onehot.dtype)
  labels = lam * labels_onehot + (1 - lam) * labels_onehot[::-1]
  return images, labels


def cutmix_mask(rng: jax.Array, height: int, width: int,
                lam: jax.Array) -> tuple[jax.Array, jax.Array]:
  """A box of about (1 - lam) of the area, its centre uniform, clipped at the borders.

  Returns:
    keep: bool [height, width], False inside the box (pixels taken from the partner);
    lam: the exact fraction of pixels kept.
  """
  cy_rng, cx_rng = jax.random.split(rng)
  ratio = jnp.sqrt(1.0 - lam)
  cut_h, cut_w = jnp.round(height * ratio), jnp.round(width * ratio)
  cy = jax.random.randint(cy_rng, (), 0, height)
  cx = jax.random.randint(cx_rng, (), 0, width)
  top = jnp.clip(cy - cut_h // 2, 0, height)
  bottom = jnp.clip(cy + cut_h // 2 + cut_h % 2, 0, height)
  left = jnp.clip(cx - cut_w // 2, 0, width)
  right = jnp.clip(cx + cut_w // 2 + cut_w % 2, 0, width)
  rows = jnp.arange(height)[:, None]
  cols = jnp.arange(width)[None, :]
  inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
  lam_exact = 1.0 - jnp.mean(inside.astype(jnp.float32))
  return ~inside, lam_exact
