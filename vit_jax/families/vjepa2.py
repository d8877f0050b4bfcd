"""V-JEPA 2 (Assran et al. 2025): video ViTs pretrained by joint-embedding prediction.

transformers `vjepa2`: the encoders facebook/vjepa2-vit{l,h,g}-fpc64-{256,384}
(`VJEPA2Model`; its predictor, a pre-training part, is left out and reported) and the
attentive-probe classifiers such as facebook/vjepa2-vitl-fpc16-256-ssv2
(`VJEPA2ForVideoClassification`). Read by `vit_jax.checkpoint.hf_vjepa2` into a
spatio_temporal `VideoTransformer`: 2x16x16 tubelets, no cls token, no absolute position
embedding, 3-D RoPE (`rope="vjepa2"`), erf GELU, and for the classifiers the attentive
pooler (`classifier="attentive"`). Registered as `VJEPA2-{size}_16x2` (models.registry).

Preprocessing: transformers' VJEPA2VideoProcessor (ImageNet mean/std, bilinear resize of
the short side to crop / 0.875 (256 / 224), centre crop); clips of 16 frames every 4
frames, the SSv2 / K400 attentive-probe protocol (vjepa2 configs/eval/vitl/*.yaml).
"""

from vit_jax.families import family as fam

# Published sizes (vjepa2 src/models/vision_transformer.py): vit_large, vit_huge and
# vit_giant_xformers (1408 wide, 22 heads, mlp_ratio 48/11 -> 6144); erf GELU MLPs.
SIZES = {"L": dict(fam.SIZES["L"]), "H": dict(fam.SIZES["H"]),
         "g": dict(hidden_size=1408, num_layers=40, mlp_dim=6144, num_heads=22)}

# The architecture of every V-JEPA 2 model (the registry's; the reader takes the same
# from config.json): RoPE only, erf GELU, LayerNorm 1e-6; classifiers pool attentively.
ARCHITECTURE = dict(posemb="none", classifier="attentive", rope="vjepa2",
                    gelu_approximate=False, layernorm_epsilon=1e-6)

FAMILY = fam.Family(
    name="vjepa2",
    models={},
    preprocessing=fam.Preprocessing(fam.IMAGENET_MEAN, fam.IMAGENET_STD, crop_pct=0.875,
                                    interpolation="bilinear", num_frames=16, frame_stride=4),
    hf={"vjepa2": fam.HfModelType(
        keys="vjepa2",
        # VJEPA2Config's defaults of the fields read when a config.json omits them.
        config_defaults=dict(patch_size=16, crop_size=256, frames_per_clip=64, tubelet_size=2,
                             in_chans=3, mlp_ratio=4.0, layer_norm_eps=1e-6, qkv_bias=True,
                             hidden_act="gelu", num_pooler_layers=3),
        reader="vit_jax.checkpoint.hf_vjepa2")},
    video=True,
)
