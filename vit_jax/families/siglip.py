"""SigLIP image towers (Zhai et al. 2023): no cls token, a MAP head, tanh GELU as
big_vision trained it; pixels to [-1, 1].

timm `vit_{base,large,so400m}_patch{14,16}_siglip_{224,256,384,512}` (read with the erf
GELU of timm's default `act_layer`), transformers `siglip`, `siglip_vision_model`.
"""

from vit_jax.families import family as fam

OPTIONS = dict(classifier="map", class_token=False)
_HF = dict(layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh")

FAMILY = fam.Family(
    name="siglip",
    models={"SigLIP-B_16": fam.Model("B", 16, dict(OPTIONS)),
            "SigLIP-So400m_14": fam.Model("So400m", 14, dict(OPTIONS))},
    preprocessing=fam.Preprocessing(fam.HALF, fam.HALF, crop_pct=0.9),
    timm=(fam.TimmArchitectures(
        r"vit_(?P<size>base|large|so400m)_patch(14|16)_siglip_(224|256|384|512)",
        options=fam.TORCH),),
    hf={"siglip": fam.HfModelType("clip", _HF, vision_config=True),
        "siglip_vision_model": fam.HfModelType("clip", _HF)},
)
