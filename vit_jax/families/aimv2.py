"""AIMv2 image encoders (Fini et al. 2025), as timm builds them: no cls token, a learned
position embedding after an RMSNorm on the patch embedding (`patch_embed.norm`), RMSNorm
(eps 1e-5) everywhere, SwiGLU MLPs, and no bias in q/k/v, the attention output or the
MLP (the patch embedding and the head keep theirs); average pooling after the final norm.

timm `aimv2_{large,huge,1b,3b}_patch14_{224,336,448}`; transformers `aimv2_vision_model`
(Aimv2VisionModel), whose output is its attention-pooling head's when the folder has one
(`use_head`: the cls token queries the tokens through bias-free k/v projections, then an
output projection: MAPHead with `map_attention_only`), else the average of the tokens.
"""

from vit_jax.families import family as fam

OPTIONS = dict(norm="rmsnorm", layernorm_epsilon=1e-5, mlp_activation="swiglu",
               qkv_bias="none", proj_bias=False, patch_norm=True)
# timm's size words -> (hidden_size, num_layers, num_heads): heads of 128 (L: 8 heads).
DIMS = {"large": dict(hidden_size=1024, num_layers=24, num_heads=8),
        "huge": dict(hidden_size=1536, num_layers=24, num_heads=12),
        "1b": dict(hidden_size=2048, num_layers=24, num_heads=16),
        "3b": dict(hidden_size=3072, num_layers=24, num_heads=24)}

FAMILY = fam.Family(
    name="aimv2",
    models={"AIMv2-L_14": fam.Model("L", 14, dict(OPTIONS, classifier="gap"),
                                    dims=dict(DIMS["large"], mlp_dim=2816))},
    preprocessing=fam.Preprocessing(fam.OPENAI_CLIP_MEAN, fam.OPENAI_CLIP_STD, crop_pct=1.0),
    timm=(fam.TimmArchitectures(r"aimv2_(?P<size>large|huge|1b|3b)_patch14_(224|336|448)",
                                options=OPTIONS, global_pool="avg", dims=DIMS),),
    hf={"aimv2_vision_model": fam.HfModelType("aimv2", dict(rms_norm_eps=1e-5,
                                                            hidden_act="silu"))},
)
