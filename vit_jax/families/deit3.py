"""DeiT III (Touvron et al. 2022): LayerScale (init 1e-6) and a position embedding that
covers the patches only (timm's `no_embed_class`).

timm `deit3_{small,base,large}_patch16_{224,384}[_in21ft1k]`.
"""

from vit_jax.families import family as fam

OPTIONS = dict(fam.TORCH, layer_scale=1e-6, no_embed_class=True)

FAMILY = fam.Family(
    name="deit3",
    models={f"DeiT3-{s}_16": fam.Model(s, 16, dict(OPTIONS)) for s in ("S", "B", "L")},
    preprocessing=fam.Preprocessing(fam.IMAGENET_MEAN, fam.IMAGENET_STD, crop_pct=0.9),
    timm=(fam.TimmArchitectures(
        r"deit3_(?P<size>small|base|large)_patch16_(224|384)(_in21ft1k)?", options=OPTIONS),),
)
