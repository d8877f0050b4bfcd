"""MAE (He et al. 2022): a plain ViT encoder pretrained by masked autoencoding (its
decoder is not part of the image model and is left out when a file holds it).

timm's `vit_{base,large}_patch16_224.mae`, `vit_huge_patch14_224.mae` (the tag selects
MAE over ViT), transformers `vit_mae`.
"""

from vit_jax.families import family as fam

OPTIONS = dict(fam.TORCH)

FAMILY = fam.Family(
    name="mae",
    models={"MAE-B_16": fam.Model("B", 16, dict(OPTIONS)),
            "MAE-L_16": fam.Model("L", 16, dict(OPTIONS)),
            "MAE-H_14": fam.Model("H", 14, dict(OPTIONS))},
    preprocessing=fam.Preprocessing(fam.IMAGENET_MEAN, fam.IMAGENET_STD, crop_pct=0.9),
    timm=(fam.TimmArchitectures(r"vit_(?P<size>base|large|huge)_patch(14|16)_224",
                                options=OPTIONS, tag="mae"),),
    hf={"vit_mae": fam.HfModelType("vit", dict(layer_norm_eps=1e-12, hidden_act="gelu"))},
)
