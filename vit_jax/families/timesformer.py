"""TimeSformer (Bertasius et al., 2021): divided space-time attention, as transformers
stores it (`model_type: timesformer`; facebook/timesformer-{base,hr,large}-finetuned-
{k400,k600,ssv2}).

The model is ViViT's `VideoTransformer` with variant "divided_space_time" (frame
embedding, cls token, spatial + time position embeddings; vit_jax.models.vivit), read by
`vit_jax.checkpoint.hf_timesformer`. Registered as `TimeSformer-{size}_{patch}` in
`vit_jax.models.registry`. Preprocessing: TimeSformer's (SlowFast's) mean 0.45 / std
0.225, the short side resized to the input size and a centre crop (crop_pct 1.0,
bilinear: the Hub's VideoMAEImageProcessor config, resample=2), 8 frames every 32 (the
base K400 model's 8x32 clips; HR samples 16 frames every 4, L 96 every 4).
"""

from vit_jax.families import family as fam

# The TimesformerConfig defaults (transformers 5.x), for a config.json that omits a field.
CONFIG_DEFAULTS = dict(
    image_size=224, patch_size=16, num_channels=3, num_frames=8, hidden_size=768,
    num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, hidden_act="gelu",
    layer_norm_eps=1e-6, qkv_bias=True, attention_type="divided_space_time")

FAMILY = fam.Family(
    name="timesformer",
    models={},
    preprocessing=fam.Preprocessing((0.45, 0.45, 0.45), (0.225, 0.225, 0.225), crop_pct=1.0,
                                    interpolation="bilinear", num_frames=8, frame_stride=32),
    hf={"timesformer": fam.HfModelType(keys="timesformer", config_defaults=CONFIG_DEFAULTS,
                                       reader="vit_jax.checkpoint.hf_timesformer")},
    video=True,
)
