"""DeiT (Touvron et al. 2021): a ViT trained on ImageNet-1k, optionally with a
distillation token and a second head (`-distilled`; the output is the mean of both heads).

timm `deit_{tiny,small,base}[_distilled]_patch16_{224,384}`, transformers `deit`.
"""

from vit_jax.families.family import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TORCH,
    Family,
    HfModelType,
    Model,
    Preprocessing,
    TimmArchitectures,
)

OPTIONS = dict(TORCH)

FAMILY = Family(
    name="deit",
    models={
        **{f"DeiT-{s}_16": Model(s, 16, dict(OPTIONS)) for s in ("Ti", "S", "B")},
        **{f"DeiT-{s}_16-distilled": Model(s, 16, dict(OPTIONS, distilled=True))
           for s in ("Ti", "S", "B")},
    },
    preprocessing=Preprocessing(IMAGENET_MEAN, IMAGENET_STD, crop_pct=0.9),
    timm=(TimmArchitectures(r"deit_(?P<size>tiny|small|base)_(distilled_)?patch16_(224|384)",
                            options=OPTIONS),),
    hf={"deit": HfModelType("vit", dict(layer_norm_eps=1e-12, hidden_act="gelu"))},
)
