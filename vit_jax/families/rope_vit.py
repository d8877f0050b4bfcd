"""RoPE-ViT (Heo et al. 2024, naver-ai/rope-vit), as timm builds it in eva.py: DeiT III
ViTs (cls token pooled, LayerScale 1e-5, fused qkv with biases) whose attention rotates
the patch tokens' queries and keys:

  RoPE-Axial  fixed frequencies 1 / 100^(j / (hd/4)) of the column (first half of the
              angles) and the row, interleaved pairs (timm RotaryEmbeddingCat, "xy")
  RoPE-Mixed  learned frequencies per block and head, `rope_freqs` [2, H, hd/2] in each
              attention (timm's `rope.freqs` [2, depth, H, hd/2]); angle = col fx + row fy
  `_ape`      and a learned absolute position embedding of the patches (no cls row)

timm `vit_{small,base,large}_patch16_rope[_mixed][_ape]_224`.
"""

from vit_jax.families import family as fam

AXIAL = dict(fam.TORCH, layer_scale=1e-5, rope="eva02", rope_temperature=100.0,
             rope_grid_indexing="xy")
MIXED = dict(fam.TORCH, layer_scale=1e-5, rope="mixed", rope_temperature=10.0,
             rope_grid_indexing="xy")
APE = dict(no_embed_class=True)
SIZES = "(?P<size>small|base|large)"

FAMILY = fam.Family(
    name="rope_vit",
    models={"RoPE-Mixed-S_16": fam.Model("S", 16, dict(MIXED, classifier="token",
                                                      posemb="none"))},
    preprocessing=fam.Preprocessing(fam.IMAGENET_MEAN, fam.IMAGENET_STD, crop_pct=0.9),
    timm=(fam.TimmArchitectures(rf"vit_{SIZES}_patch16_rope_224", options=AXIAL,
                                global_pool="token"),
          fam.TimmArchitectures(rf"vit_{SIZES}_patch16_rope_ape_224", options=dict(AXIAL, **APE),
                                global_pool="token"),
          fam.TimmArchitectures(rf"vit_{SIZES}_patch16_rope_mixed_224", options=MIXED,
                                global_pool="token"),
          fam.TimmArchitectures(rf"vit_{SIZES}_patch16_rope_mixed_ape_224",
                                options=dict(MIXED, **APE), global_pool="token")),
)
