"""SigLIP image towers (Zhai et al. 2023): no cls token, a MAP head, tanh GELU as
big_vision trained it; pixels to [-1, 1].

timm `vit_{base,large,so400m}_patch{14,16}_siglip_{224,256,384,512}` (read with the erf
GELU of timm's default `act_layer`), transformers `siglip`, `siglip_vision_model`.
"""

from vit_jax.families.family import (
    HALF,
    TORCH,
    Family,
    HfModelType,
    Model,
    Preprocessing,
    TimmArchitectures,
)

OPTIONS = dict(classifier="map", class_token=False)
_HF = dict(layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh")

FAMILY = Family(
    name="siglip",
    models={"SigLIP-B_16": Model("B", 16, dict(OPTIONS)),
            "SigLIP-So400m_14": Model("So400m", 14, dict(OPTIONS))},
    preprocessing=Preprocessing(HALF, HALF, crop_pct=0.9),
    timm=(TimmArchitectures(
        r"vit_(?P<size>base|large|so400m)_patch(14|16)_siglip_(224|256|384|512)",
        options=TORCH),),
    hf={"siglip": HfModelType("clip", _HF, vision_config=True),
        "siglip_vision_model": HfModelType("clip", _HF)},
)
