"""VideoMAE (Tong et al., 2022) and VideoMAE V2 (Wang et al., 2023) as transformers stores
them (`model_type: videomae`; MCG-NJU/videomae-{base,large,huge}-finetuned-{kinetics,ssv2}
and the self-supervised VideoMAEForPreTraining encoders, whose decoder is left out).

A plain ViT over tubelet tokens (2x16x16): the fixed 1-D sinusoidal table over all t*gh*gw
tokens (not a parameter: recomputed for any frame count and size), no cls token, query and
value biases without a key bias, mean pooling then `fc_norm` (use_mean_pooling), erf GELU
and the configured LayerNorm epsilon. Reader: vit_jax.checkpoint.hf_videomae; the models
(VideoMAE-{S,B,L,H}_16x2, VideoMAEv2-g_14x2) are registered in vit_jax.models.registry.
"""

from vit_jax.families import family as fam

# VideoTransformer fields and EncoderOptions of the registered VideoMAE models: the original
# code's (MCG-NJU/VideoMAE modeling_finetune.py, LayerNorm epsilon 1e-6 everywhere). A
# transformers folder states its own epsilons (layer_norm_eps, default 1e-12; its fc_norm
# 1e-5), which the reader takes.
OPTIONS = dict(fam.TORCH, posemb="sincos1d", classifier="gap", fc_norm=True, qkv_bias="qv")
# VideoMAE V2's giant (its repository's vit_giant_patch14_224): width 1408, 40 layers,
# 16 heads, mlp_ratio 48/11.
GIANT = dict(hidden_size=1408, num_layers=40, mlp_dim=6144, num_heads=16)

FAMILY = fam.Family(
    name="videomae",
    models={},
    # K400 evaluation: 16 frames every 4th, shorter side 224 and the central 224 crop
    # (crop_pct 1), ImageNet mean/std (the MCG-NJU processors' configs).
    preprocessing=fam.Preprocessing(fam.IMAGENET_MEAN, fam.IMAGENET_STD, crop_pct=1.0,
                                    interpolation="bilinear", num_frames=16, frame_stride=4),
    hf={"videomae": fam.HfModelType(
        keys="videomae", config_defaults=dict(layer_norm_eps=1e-12, hidden_act="gelu",
                                              qv_bias=True, use_mean_pooling=True,
                                              num_frames=16, image_size=224, patch_size=16,
                                              tubelet_size=2, num_channels=3),
        reader="vit_jax.checkpoint.hf_videomae")},
    video=True,
)
