"""EVA-02 (Fang et al. 2023): RoPE (EVA-02's convention, reference grid 16), SwiGLU,
query/value biases only, fc_norm after average pooling; B and L add an inner MLP norm
(timm `scale_mlp`). SwiGLU width int(D * 4 * 2/3).

timm `eva02_{tiny,small,base,large}_patch14_{224,448}`.
"""

from vit_jax.families import family as fam

OPTIONS = dict(fam.TORCH, classifier="gap", class_token=True, fc_norm=True,
               mlp_activation="swiglu", qkv_bias="qv", rope="eva02", rope_reference_grid=16)
INNER_NORM = dict(mlp_inner_norm=True)  # B and L
MLP_DIM = {"Ti": 512, "S": 1024, "B": 2048, "L": 2730}

FAMILY = fam.Family(
    name="eva02",
    models={f"EVA02-{s}_14": fam.Model(
        s, 14, dict(OPTIONS, **(INNER_NORM if s in ("B", "L") else {})),
        dims=dict(fam.SIZES[s], mlp_dim=MLP_DIM[s])) for s in ("Ti", "S", "B", "L")},
    preprocessing=fam.Preprocessing(fam.OPENAI_CLIP_MEAN, fam.OPENAI_CLIP_STD, crop_pct=0.9),
    timm=(fam.TimmArchitectures(r"eva02_(?P<size>tiny|small|base|large)_patch14_(224|448)",
                                options=OPTIONS, global_pool="avg"),),
)
