"""DeiT (Touvron et al. 2021): a ViT trained on ImageNet-1k, optionally with a
distillation token and a second head (`-distilled`; the output is the mean of both heads).

timm `deit_{tiny,small,base}[_distilled]_patch16_{224,384}`, transformers `deit`.
"""

from vit_jax.families import family as fam

OPTIONS = dict(fam.TORCH)

FAMILY = fam.Family(
    name="deit",
    models={
        **{f"DeiT-{s}_16": fam.Model(s, 16, dict(OPTIONS)) for s in ("Ti", "S", "B")},
        **{f"DeiT-{s}_16-distilled": fam.Model(s, 16, dict(OPTIONS, distilled=True))
           for s in ("Ti", "S", "B")},
    },
    preprocessing=fam.Preprocessing(fam.IMAGENET_MEAN, fam.IMAGENET_STD, crop_pct=0.9),
    timm=(fam.TimmArchitectures(
        r"deit_(?P<size>tiny|small|base)_(distilled_)?patch16_(224|384)", options=OPTIONS),),
    hf={"deit": fam.HfModelType("vit", dict(layer_norm_eps=1e-12, hidden_act="gelu"))},
)
