"""CLIP image towers (Radford et al. 2021): a LayerNorm before the encoder, no patch bias,
LayerNorm 1e-5; OpenAI's weights use QuickGELU, OpenCLIP's own (LAION) the erf GELU.

timm `vit_{base,large,huge}_patch{14,16,32}_clip[_quickgelu]_{224,336}`, transformers
`clip`, `clip_vision_model`, and OpenCLIP `visual.*` towers.
"""

from vit_jax.families import family as fam

OPTIONS = dict(pre_norm=True, patch_bias=False, layernorm_epsilon=1e-5,
               mlp_activation="quick_gelu")
OPENCLIP_GELU = dict(OPTIONS, mlp_activation="gelu", **fam.TORCH)
# OpenCLIP's towers: the projection `visual.proj` has no bias.
OPENCLIP = dict({k: OPTIONS[k] for k in ("pre_norm", "patch_bias", "layernorm_epsilon")},
                head_bias=False, posemb_resize=fam.TIMM_POSEMB_RESIZE)  # resize_pos_embed
_HF = dict(layer_norm_eps=1e-5, hidden_act="quick_gelu")

FAMILY = fam.Family(
    name="clip",
    models={"CLIP-B_32": fam.Model("B", 32, dict(OPTIONS)),
            "CLIP-B_16": fam.Model("B", 16, dict(OPTIONS)),
            "CLIP-L_14": fam.Model("L", 14, dict(OPTIONS))},
    preprocessing=fam.Preprocessing(fam.OPENAI_CLIP_MEAN, fam.OPENAI_CLIP_STD, crop_pct=0.9),
    timm=(fam.TimmArchitectures(
        r"vit_(?P<size>base|large)_patch(14|16|32)_clip_quickgelu_(224|336)", options=OPTIONS),
          fam.TimmArchitectures(r"vit_(?P<size>base|large|huge)_patch(14|16|32)_clip_(224|336)",
                                options=OPENCLIP_GELU)),
    hf={"clip": fam.HfModelType("clip", _HF, vision_config=True),
        "clip_vision_model": fam.HfModelType("clip", _HF)},
    openclip=OPENCLIP,
)
