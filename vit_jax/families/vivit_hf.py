"""ViViT as transformers stores it (`model_type: vivit`; google/vivit-b-16x2-kinetics400,
converted from Scenic's Kinetics-400 model 1): the spatio-temporal ViViT (one encoder over
all tubelet tokens), tubelet 2x16x16, a cls token, a learned position embedding over all
tokens, transformers' `gelu_fast` (the tanh GELU). Reader: vit_jax.checkpoint.hf_vivit.

The models are `VideoTransformer(variant="spatio_temporal")`, registered as ViViT-*
(vit_jax.models.registry); Scenic's own files are read by vit_jax.checkpoint.scenic_io.
"""

from vit_jax.families import family as fam

FAMILY = fam.Family(
    name="vivit_hf",
    models={},
    # Scenic's K400 model 1: 32 frames every 2nd, pixels in [-1, 1], shorter side 256 then
    # the central 224 crop (VivitImageProcessor's size / crop_size).
    preprocessing=fam.Preprocessing(fam.HALF, fam.HALF, crop_pct=224 / 256,
                                    interpolation="bilinear", num_frames=32, frame_stride=2),
    hf={"vivit": fam.HfModelType(
        keys="vivit", config_defaults=dict(layer_norm_eps=1e-6, hidden_act="gelu_fast",
                                           qkv_bias=True, num_frames=32, image_size=224,
                                           tubelet_size=[2, 16, 16], num_channels=3,
                                           pooler_act="tanh"),
        reader="vit_jax.checkpoint.hf_vivit")},
    video=True,
)
