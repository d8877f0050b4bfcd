"""ViT (vit_jax / AugReg, big_vision): the released JAX checkpoints and timm's ports of them.

Registered as `ViT-{size}_{patch}` (the released names; `B/16` is accepted too), tanh GELU
and LayerNorm 1e-6 as the JAX models were trained. timm's `vit_*_patch*_{224,384}` ports
run the erf GELU; transformers' `vit` model_type likewise. Preprocessing: pixels to
[-1, 1], crop 0.9 (timm's augreg2 configs).
"""

from vit_jax.families import family as fam

PATCHES = {"Mu": (2, 4, 16), "Nano": (2, 4, 16), "Ti": (16,), "S": (16, 32), "B": (8, 16, 32),
           "L": (16, 32), "H": (14,)}

FAMILY = fam.Family(
    name="vit",
    models={f"ViT-{size}_{patch}": fam.Model(size, patch, {})
            for size, patches in PATCHES.items() for patch in patches},
    preprocessing=fam.Preprocessing(fam.HALF, fam.HALF, crop_pct=0.9),
    timm=(fam.TimmArchitectures(
        r"vit_(?P<size>tiny|small|base|large|huge)_patch(8|14|16|32)_(224|384)(_in21k)?",
        options=fam.TORCH),),
    hf={"vit": fam.HfModelType("vit", dict(layer_norm_eps=1e-12, hidden_act="gelu"))},
)
