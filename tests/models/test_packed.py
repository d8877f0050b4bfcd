"""Packed sequences (NaViT / NaFlex): each image's result equals running it alone.

Images of four sizes and aspect ratios are packed greedily into rows of 32 patches with
padding; the model (learned position embedding with posemb_resize, gap or MAP pooling;
a cls token and registers per image; DINOv3-like RoPE from each image's own grid)
gives, for each image, the logits and pooled features of that image run alone at its own
size (1e-5), and padding changes nothing.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.models import create_model, positions
from vit_jax.models.packed import pack_images, patchify

PATCH = (4, 4)
SIZES = [(8, 12), (16, 8), (12, 20), (20, 20), (4, 4)]  # grids 2x3, 4x2, 3x5, 5x5, 1x1


def _images():
  rng = np.random.default_rng(0)
  return [rng.uniform(-1, 1, (h, w, 3)).astype(np.float32) for h, w in SIZES]


@pytest.mark.parametrize("classifier,resize", [("gap", "bilinear_antialias"),
                                               ("map", "bicubic")])
def test_each_packed_image_equals_its_run_alone(classifier, resize):
  model = create_model("ViT-Mu_4", num_classes=5, classifier=classifier, posemb_resize=resize)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))["params"]
  params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.PRNGKey(1), p.shape),
                        params)  # a non-zero head
  images = _images()
  packed, slots = pack_images(images, PATCH, seq_len=32, max_images=3)
  assert packed.patches.shape[0] < len(images)  # some rows hold several images
  assert (packed.image_ids == 0).any()  # and there is padding
  apply = jax.jit(model.apply, static_argnames="features")  # one program per input shape
  logits = apply({"params": params}, packed)
  feats = apply({"params": params}, packed, features=True)["pooled"]
  assert logits.shape == (packed.patches.shape[0], 3, 5)
  for image, slot in zip(images, slots):
    alone = apply({"params": params}, image[None])
    alone_feats = apply({"params": params}, image[None], features=True)["pooled"]
    np.testing.assert_allclose(logits[slot], alone[0], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(feats[slot], alone_feats[0], atol=1e-5, rtol=1e-5)
  used = {slot for slot in slots}
  for b in range(logits.shape[0]):
    for k in range(3):
      if (b, k) not in used:
        np.testing.assert_array_equal(logits[b, k], 0)


def test_in_graph_weights_equal_the_interpolation_matrices():
  weights = jax.jit(positions.interpolation_weights, static_argnums=(2, 3, 4))
  for method in ("bilinear", "bicubic"):
    for antialias in (False, True):
      for g, n in [(7, 3), (7, 12), (5, 5), (4, 1), (6, 11)]:
        rows = weights(jnp.arange(n), jnp.full((n,), n), g, method, antialias)
        np.testing.assert_allclose(
            rows, positions.interpolation_matrix(g, n, method, antialias), atol=2e-6,
            err_msg=f"{method} antialias={antialias} {g}->{n}")


def test_patchify_and_packing_refusals():
  image = np.arange(8 * 12 * 3, dtype=np.float32).reshape(8, 12, 3)
  tokens = patchify(image, PATCH)
  np.testing.assert_array_equal(tokens[4], image[4:8, 4:8].reshape(-1))  # row 1, col 1 of 2x3
  with pytest.raises(ValueError, match="more than the sequence length"):
    pack_images([np.zeros((20, 20, 3))], PATCH, seq_len=16, max_images=2)
  with pytest.raises(ValueError, match="whole number of 4x4 patches"):
    patchify(np.zeros((3, 8, 3)), PATCH)
  model = create_model("ViT-Mu_4", num_classes=5, posemb="sincos2d")
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))["params"]
  packed, _ = pack_images(_images()[:2], PATCH, seq_len=32, max_images=2)
  with pytest.raises(ValueError, match="posemb='sincos2d'"):
    model.apply({"params": params}, packed)
  with pytest.raises(ValueError, match="smaller than one 4x4 patch"):
    model.apply({"params": params}, jnp.zeros((1, 2, 16, 3)))
  fixed = create_model("ViT-Mu_4", num_classes=5, classifier="gap")  # no posemb_resize
  params = fixed.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))["params"]
  with pytest.raises(ValueError, match="need posemb_resize"):
    fixed.apply({"params": params}, packed)


# A cls token and registers per image, with their own position rows (token pooling); a
# cls token and a register without position rows (DINOv2-reg's no_embed_class) and MAP
# pooling of the patches only; DINOv3's layout: cls + registers, no learned position
# embedding, RoPE from each image's grid, average pooling of the patches only.
PREFIX_MODELS = {
    "cls_registers": dict(classifier="token", num_registers=2, posemb_resize="bicubic"),
    "map_reg_no_embed_class": dict(classifier="map", class_token=True, num_registers=1,
                                   no_embed_class=True, posemb_resize="bilinear_antialias"),
    "dinov3_rope": dict(classifier="gap", class_token=True, num_registers=2, posemb="none",
                        rope="dinov3", qkv_bias="none", layer_scale=1e-5),
}


@pytest.mark.parametrize("name", sorted(PREFIX_MODELS))
def test_prefix_tokens_and_rope_per_packed_image(name):
  model = create_model("ViT-Mu_4", num_classes=None, **PREFIX_MODELS[name])
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))["params"]
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(1), p.shape),
                        params)  # tokens and position rows that differ from their init
  images = _images()[:4]
  packed, slots = pack_images(images, PATCH, seq_len=32, max_images=3)
  assert len({row for row, _ in slots}) < len(images)  # some rows hold several images
  apply = jax.jit(model.apply)
  pooled = apply({"params": params}, packed)  # [B, 3, D]
  for image, slot in zip(images, slots):
    np.testing.assert_allclose(pooled[slot], apply({"params": params}, image[None])[0],
                               atol=1e-5, rtol=1e-5)
  # Padding changes nothing: other values in the padding give the same outputs.
  noisy = packed.replace(patches=np.where(packed.image_ids[..., None] == 0, 7.0,
                                          packed.patches))
  np.testing.assert_array_equal(apply({"params": params}, noisy), pooled)
