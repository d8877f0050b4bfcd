"""SigLIP 2 NaFlex image towers (Tschannen et al. 2025): SigLIP's tower (no cls token, a
MAP head, tanh GELU) at each image's native aspect ratio: the learned 16x16 position grid
is resized to every image's own patch grid with bilinear interpolation and antialias, and
images are resized to a patch budget (`max_num_patches`, 256 by default) and patchified.

The models take square or non-square images [B, H, W, C] and packed batches
(`vit_jax.models.packed`). transformers `siglip2_vision_model` and `siglip2` (its vision
tower; inputs pre-patchified, the Linear patch embedding read as the conv kernel), timm
`naflexvit_{base,so400m}_patch16_siglip` (NaFlexViT's `embeds.*` names,
`vit_jax.checkpoint.naflex_io`).
"""

from vit_jax.families import family as fam

OPTIONS = dict(classifier="map", class_token=False, posemb_resize="bilinear_antialias")
# What a timm NaFlexViT state dict cannot show: timm's `act_layer='gelu_tanh'` and
# `pos_embed_interp_mode='bilinear'` (antialias on by default).
TIMM = dict(gelu_approximate=True, posemb_resize="bilinear_antialias")
MAX_NUM_PATCHES = 256  # Siglip2ImageProcessor's default budget
_HF = dict(layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh")

FAMILY = fam.Family(
    name="siglip2_naflex",
    # Published with a 16x16 position grid: 256 px squares, any other size resized.
    models={f"SigLIP2-NaFlex-{s}_16": fam.Model(s, 16, dict(OPTIONS), image_size=256)
            for s in ("B", "So400m")},
    preprocessing=fam.Preprocessing(fam.HALF, fam.HALF, crop_pct=1.0,
                                    interpolation="bilinear",
                                    max_num_patches=MAX_NUM_PATCHES),
    timm=(fam.TimmArchitectures(r"naflexvit_(?P<size>base|so400m)_patch16_siglip",
                                options=TIMM, global_pool="map"),),
    hf={"siglip2": fam.HfModelType("siglip2", _HF, vision_config=True,
                                   posemb_resize="bilinear_antialias"),
        "siglip2_vision_model": fam.HfModelType("siglip2", _HF,
                                                posemb_resize="bilinear_antialias")},
)
