"""Registry tests: every registered ViT has the published parameter count."""

import jax
import jax.numpy as jnp
import pytest

from vit_jax import models

# At 224 px (Mu/Nano at 32 px), 1000 classes, classifier token, no representation layer.
# Ti/16, S/16, B/16, L/16, H/14: docs/published_results.md. Other patch sizes differ only in the
# patch kernel (p*p*3*D) and the position embedding ((224/p)^2 + 1) * D.
EXPECTED_PARAMS = {
    "ViT-Ti_16": 5_717_416,
    "ViT-S_16": 22_050_664,
    "ViT-S_32": 22_878_952,
    "ViT-B_8": 86_576_872,
    "ViT-B_16": 86_567_656,
    "ViT-B_32": 88_224_232,
    "ViT-L_16": 304_326_632,
    "ViT-L_32": 306_535_400,
    "ViT-H_14": 632_045_800,
}


def formula(width, depth, mlp, patch, image, classes=1000):
  """Parameter count of a ViT written out by hand, independent of the module code."""
  tokens = (image // patch) ** 2 + 1
  embed = patch * patch * 3 * width + width + width + tokens * width  # conv, cls, posemb
  block = 2 * 2 * width + 4 * (width * width + width) + 2 * width * mlp + mlp + width
  return embed + depth * block + 2 * width + width * classes + classes


def count(name, image):
  model = models.create_model(name, num_classes=1000)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, image, image, 3))))
  return sum(x.size for x in jax.tree.leaves(shapes["params"]))


# ViViT sizes are counted in tests/models/test_vivit.py.
@pytest.mark.parametrize("name", [n for n in models.list_models() if n.startswith("ViT-")])
def test_every_registered_vit_has_its_expected_parameter_count(name):
  kw = models.model_kwargs(name)
  image = 32 if name.split("-")[1].startswith(("Mu", "Nano")) else 224
  by_hand = formula(kw["hidden_size"], kw["num_layers"], kw["mlp_dim"], kw["patch_size"], image)
  assert count(name, image) == by_hand
  if image == 224:
    assert name in EXPECTED_PARAMS, f"{name} is registered without a published count"
    assert count(name, image) == EXPECTED_PARAMS[name]


def test_published_names_are_registered():
  assert set(EXPECTED_PARAMS) <= set(models.list_models())


def test_big_vision_spelling_and_overrides():
  model = models.create_model("B/16", num_classes=10, dropout_rate=0.1, classifier="gap")
  assert (model.hidden_size, model.patch_size, model.num_classes) == (768, 16, 10)
  assert model.dropout_rate == 0.1 and model.classifier == "gap"


def test_unknown_model_and_option_are_clear_errors():
  with pytest.raises(ValueError, match=r"Unknown model 'ViT-X_16'.*ViT-B_16"):
    models.create_model("ViT-X_16")
  with pytest.raises(TypeError, match=r"no option\(s\) \['dropout'\].*dropout_rate"):
    models.create_model("ViT-B_16", dropout=0.1)


# timm's count of the same configuration without a head (`sum(p.numel() for p in
# timm.create_model(name, num_classes=0).parameters())`, timm 1.x, at the published input
# size: 518 px for DINOv2, whose position embedding covers 37x37 patches).
TIMM_PARAMS = {
    "DeiT-Ti_16": 5_524_416,  # deit_tiny_patch16_224
    "DeiT-S_16": 21_665_664,
    "DeiT-B_16": 85_798_656,
    "DeiT-Ti_16-distilled": 5_524_800,  # deit_tiny_distilled_patch16_224
    "DeiT-S_16-distilled": 21_666_432,
    "DeiT-B_16-distilled": 85_800_192,
    "DeiT3-S_16": 21_674_496,  # deit3_small_patch16_224
    "DeiT3-B_16": 85_816_320,
    "DeiT3-L_16": 303_349_760,
    "DINOv2-S_14": 22_056_192,  # vit_small_patch14_dinov2
    "DINOv2-B_14": 86_579_712,
    "DINOv2-L_14": 304_367_616,
    "DINOv2-g_14": 1_136_479_232,
    "DINOv2-S_14-reg4": 22_057_344,  # vit_small_patch14_reg4_dinov2
    "DINOv2-B_14-reg4": 86_582_016,
    "DINOv2-L_14-reg4": 304_370_688,
    "DINOv2-g_14-reg4": 1_136_483_840,
    "DINOv3-S_16": 21_586_944,  # vit_small_patch16_dinov3
    "DINOv3-B_16": 85_641_216,
    "DINOv3-L_16": 303_079_424,
    "DINOv3-S+_16": 28_683_264,  # vit_small_plus_patch16_dinov3
    "DINOv3-H+_16": 840_509_440,
    "DINOv3-7B_16": 6_716_030_976,
    "DINOv3-S_16-qkvb": 21_596_160,  # vit_small_patch16_dinov3_qkvb
    "DINOv3-S+_16-qkvb": 28_692_480,
    "DINOv3-B_16-qkvb": 85_659_648,
    "DINOv3-L_16-qkvb": 303_128_576,
    "DINOv3-H+_16-qkvb": 840_591_360,
    "CLIP-B_32": 87_456_000,  # vit_base_patch32_clip_quickgelu_224
    "CLIP-B_16": 85_799_424,
    "CLIP-L_14": 303_179_776,
    "SigLIP-B_16": 92_884_224,  # vit_base_patch16_siglip_224
    "SigLIP-So400m_14": 427_680_704,  # vit_so400m_patch14_siglip_224
    "SigLIP-L_16": 315_956_224,  # vit_large_patch16_siglip_256
    "SigLIP-B_32": 94_552_320,  # vit_base_patch32_siglip_256
    "SigLIP-So400m_16": 427_888_064,  # vit_so400m_patch16_siglip_256
    "SigLIP-gopt_16": 1_163_168_256,  # vit_giantopt_patch16_siglip_256
    "MAE-B_16": 85_798_656,  # vit_base_patch16_224 (.mae weights)
    "MAE-L_16": 303_301_632,
    "MAE-H_14": 630_764_800,
    "EVA02-Ti_14": 5_502_144,  # eva02_tiny_patch14_224
    "EVA02-S_14": 21_621_120,
    "EVA02-B_14": 85_758_720,
    "EVA02-L_14": 303_268_800,
    "SigLIP2-NaFlex-B_16": 92_930_304,  # naflexvit_base_patch16_siglip (16x16 position grid)
    "SigLIP2-NaFlex-So400m_16": 427_888_064,  # naflexvit_so400m_patch16_siglip
    "PE-Core-Ti_16": 6_042_240,  # vit_pe_core_tiny_patch16_384
    "AIMv2-L_14": 309_197_824,  # aimv2_large_patch14_224
    "So150m2_16": 135_226_560,  # vit_so150m2_patch16_reg1_gap_256
    "RoPE-Mixed-S_16": 21_603_840,  # vit_small_patch16_rope_mixed_224
    "IJEPA-H_14": 630_762_240,  # vit_huge_patch14_gap_224 (.in1k_ijepa weights)
    "IJEPA-H_16": 631_668_480,  # vit_huge_patch16_gap_448
    "IJEPA-g_16": 1_011_368_576,  # vit_giant_patch16_gap_224
}


@pytest.mark.parametrize("name", sorted(TIMM_PARAMS))
def test_family_sizes_have_the_reference_parameter_count(name):
  # Scanned: the block is traced once (the count is that of the per-layer tree).
  model = models.create_model(name, num_classes=None, scan_layers=True)
  size = models.image_size(name)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))
  assert sum(x.size for x in jax.tree.leaves(shapes["params"])) == TIMM_PARAMS[name]


def test_every_registered_family_has_a_reference_count():
  assert set(models.FAMILIES) == set(TIMM_PARAMS)
