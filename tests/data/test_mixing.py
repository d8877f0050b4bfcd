"""Mixup / CutMix: label weights, lambda semantics, pixels vs labels."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.data import mixing


def _batch(b=6, shape=(8, 8, 3), classes=5):
  images = jnp.arange(b, dtype=jnp.float32).reshape(b, *[1] * len(shape)) * jnp.ones((b, *shape))
  labels = jax.nn.one_hot(jnp.arange(b) % classes, classes)
  return images, labels


_jit_mixup = jax.jit(lambda r, x, y: mixing.mix(r, x, y, mixup_alpha=0.4))


def test_disabled_is_identity():
  images, labels = _batch()
  out_images, out_labels = mixing.mix(jax.random.key(0), images, labels)
  assert out_images is images and out_labels is labels


@pytest.mark.parametrize("seed", range(3))
def test_mixup_lambda(seed):
  images, labels = _batch()
  out_images, out_labels = _jit_mixup(jax.random.key(seed), images, labels)
  np.testing.assert_allclose(out_labels.sum(-1), 1.0, rtol=1e-6)
  lam = float(out_labels[1, 1])  # Example 1 (class 1) pairs with example 4 (class 4).
  assert 0.0 <= lam <= 1.0
  np.testing.assert_allclose(out_labels[1, 4], 1 - lam, rtol=1e-5)
  expected = lam * images + (1 - lam) * images[::-1]
  np.testing.assert_allclose(out_images, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_cutmix_labels_match_pixels(seed):
  images, labels = _batch(shape=(2, 16, 12, 3))  # Video [B, T, H, W, C].
  out_images, out_labels = mixing.mix(jax.random.key(seed), images, labels, cutmix_alpha=1.0)
  kept_fractions = []
  np.testing.assert_allclose(out_labels.sum(-1), 1.0, rtol=1e-6)
  for i in range(6):
    partner = 5 - i
    from_self = np.asarray(out_images[i] == images[i, 0, 0, 0, 0])
    # One box for all frames and channels.
    assert (from_self == from_self[:1, :, :, :1]).all()
    kept = from_self.mean()
    kept_fractions.append(kept)
    expected = kept * np.asarray(labels[i]) + (1 - kept) * np.asarray(labels[partner])
    np.testing.assert_allclose(out_labels[i], expected, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(out_images[i])[~from_self],
                                  np.asarray(images[partner])[~from_self])
  assert 0 < kept_fractions[0] < 1  # A box was pasted (the same box for every example).

def test_switch_and_mix_prob():
  images, labels = _batch()
  out_images, out_labels = mixing.mix(jax.random.key(0), images, labels, mixup_alpha=1.0,
                                      cutmix_alpha=1.0, mix_prob=0.0)
  np.testing.assert_array_equal(out_images, images)
  np.testing.assert_array_equal(out_labels, labels)
  kinds = set()
  for seed in range(20):
    out, _ = mixing.mix(jax.random.key(seed), images, labels, mixup_alpha=1.0, cutmix_alpha=1.0)
    # Cutmix keeps only original pixel values; mixup blends them.
    kinds.add(bool(np.isin(np.asarray(out), np.arange(6)).all()))
  assert kinds == {True, False}
