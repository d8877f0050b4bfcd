"""VideoPrism (Zhao et al., 2024) video encoders, as transformers stores them
(`model_type: videoprism_vision_model`; google/videoprism-{base,large}-f{16,8}r288).

The model is ViViT's `VideoTransformer` with variant "factorised_encoder_tokens" (a
spatial encoder over each frame, then a temporal encoder over each spatial position's
frames, no cls token, soft-capped attention logits, VideoPrism's attention pooling;
vit_jax.models.vivit), read by `vit_jax.checkpoint.hf_videoprism`. Preprocessing as
transformers' VideoPrismProcessor: frames resized to 288 x 288, pixels in [0, 1] without
normalisation (mean 0, std 1), 16 frames (the f16 models; f8: 8) sampled uniformly over
the clip (no fixed stride: `frame_stride` None).
"""

from vit_jax.families import family as fam

# The VideoPrismVisionConfig defaults (transformers 5.x), for a config.json that omits a field.
CONFIG_DEFAULTS = dict(
    image_size=288, num_frames=16, tubelet_size=[1, 18, 18], num_channels=3, hidden_size=768,
    num_attention_heads=12, intermediate_size=3072, hidden_act="gelu_python",
    layer_norm_eps=1e-6, qkv_bias=True, num_spatial_layers=12, num_temporal_layers=4,
    attn_logit_softcapping=50.0)

FAMILY = fam.Family(
    name="videoprism",
    models={},
    preprocessing=fam.Preprocessing((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), crop_pct=1.0,
                                    interpolation="bicubic", num_frames=16, frame_stride=None),
    hf={"videoprism_vision_model": fam.HfModelType(
        keys="videoprism", config_defaults=CONFIG_DEFAULTS,
        reader="vit_jax.checkpoint.hf_videoprism")},
    video=True,
)
