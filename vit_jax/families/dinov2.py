"""DINOv2 (Oquab et al. 2023), with or without 4 registers (Darcet et al. 2024).

LayerScale (init 1e-5); the giant size has a packed SwiGLU MLP; the register models'
position embedding covers the patches only. Published at 518 px (37x37 patches).
timm `vit_{small,base,large,giant}_patch14[_reg4]_dinov2`, transformers `dinov2`,
`dinov2_with_registers`.
"""

from vit_jax.families import family as fam

OPTIONS = dict(fam.TORCH, layer_scale=1e-5)
REG4 = dict(OPTIONS, num_registers=4, no_embed_class=True)
GIANT = dict(mlp_activation="swiglu")
IMAGE_SIZE = 518
_HF = fam.HfModelType("vit", dict(layer_norm_eps=1e-6, hidden_act="gelu"))

FAMILY = fam.Family(
    name="dinov2",
    models={
        **{f"DINOv2-{s}_14": fam.Model(s, 14, dict(OPTIONS, **(GIANT if s == "g" else {})),
                                       IMAGE_SIZE) for s in ("S", "B", "L", "g")},
        **{f"DINOv2-{s}_14-reg4": fam.Model(s, 14, dict(REG4, **(GIANT if s == "g" else {})),
                                            IMAGE_SIZE) for s in ("S", "B", "L", "g")},
    },
    preprocessing=fam.Preprocessing(fam.IMAGENET_MEAN, fam.IMAGENET_STD, crop_pct=1.0),
    timm=(fam.TimmArchitectures(r"vit_(?P<size>small|base|large|giant)_patch14_dinov2",
                                options=OPTIONS),
          fam.TimmArchitectures(r"vit_(?P<size>small|base|large|giant)_patch14_reg4_dinov2",
                                options=REG4)),
    hf={"dinov2": _HF,
        # Its interpolate_pos_encoding antialiases (Dinov2Model's does not).
        "dinov2_with_registers": fam.HfModelType(_HF.keys, _HF.config_defaults,
                                                 posemb_resize="bicubic_antialias")},
)
