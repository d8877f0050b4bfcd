"""DINOv3 (Siméoni et al. 2025): 4 registers, RoPE (DINOv3's convention, no absolute
position embedding), no q/k/v bias, LayerScale 1e-5, LayerNorm 1e-5.

Registered pooling the cls token (as upstream and Hugging Face); timm's default is "avg".
timm `vit_{small,base,large}_patch16_dinov3`.
"""

from vit_jax.families import family as fam

OPTIONS = dict(fam.TORCH, layer_scale=1e-5, num_registers=4, posemb="none", rope="dinov3",
               qkv_bias="none", layernorm_epsilon=1e-5)

FAMILY = fam.Family(
    name="dinov3",
    models={f"DINOv3-{s}_16": fam.Model(s, 16, dict(OPTIONS)) for s in ("S", "B", "L")},
    preprocessing=fam.Preprocessing(fam.IMAGENET_MEAN, fam.IMAGENET_STD, crop_pct=1.0),
    timm=(fam.TimmArchitectures(r"vit_(?P<size>small|base|large)_patch16_dinov3",
                                options=OPTIONS, global_pool="avg"),),
)
