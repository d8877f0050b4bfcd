"""Perception Encoder (Bolya et al. 2025), as timm builds it in eva.py (`Eva` with
`attn_type="rope"`): a cls token (not in the gigantic sizes) with a learned position
embedding, `norm_pre` and a bias-free patch embedding, fused qkv with biases, 2-D RoPE
(timm RotaryEmbeddingCat: interleaved pairs, base 10000, the column's angles first
(`grid_indexing="xy"`), positions (index + 1) / g * reference grid; no offset in the
gigantic sizes), erf GELU, LayerNorm 1e-5.

  core     MAP head (`attn_pool`, 8 heads, reading the cls token too), final `norm`
  lang     LayerScale (init 0.1), no final norm, average pooling (timm's default)
  spatial  no final norm, average pooling; LayerScale only in the gigantic size

timm `vit_pe_{core,lang,spatial}_*`. The reference grid differs per release (the
pretraining grid: 14 for core B, 24 for core Ti/S/L, 32 for the rest), so each release
is its own entry.
"""

from vit_jax.families import family as fam

OPTIONS = dict(fam.TORCH, layernorm_epsilon=1e-5, rope="eva02", rope_grid_indexing="xy",
               rope_grid_offset=1.0, no_embed_class=False)
# norm_pre and a bias-free patch embedding: what the weights must show (timm's
# use_pre_transformer_norm); a plain ViT's weights under a PE name are refused.
OPTIONS.update(pre_norm=True, patch_bias=False)
CORE = dict(OPTIONS, map_num_heads=8, map_prefix_tokens=True)
NO_FINAL_NORM = dict(OPTIONS, final_norm=False)
LANG = dict(NO_FINAL_NORM, layer_scale=0.1)
GIGANTIC = dict(rope_grid_offset=0.0)  # the gigantic sizes place patches at their index
# timm's size words -> (hidden_size, num_layers, num_heads); lang L drops the last block.
DIMS = {"tiny": dict(hidden_size=192, num_layers=12, num_heads=3),
        "small": dict(hidden_size=384, num_layers=12, num_heads=6),
        "base": dict(hidden_size=768, num_layers=12, num_heads=12),
        "large": dict(hidden_size=1024, num_layers=24, num_heads=16),
        "gigantic": dict(hidden_size=1536, num_layers=50, num_heads=16)}
LANG_DIMS = {"large": dict(DIMS["large"], num_layers=23),
             "gigantic": dict(DIMS["gigantic"], num_layers=47)}


def _entry(pattern: str, options: dict, reference_grid: int, global_pool: str,
           dims: dict = DIMS) -> fam.TimmArchitectures:
  return fam.TimmArchitectures(pattern, options=dict(options, rope_reference_grid=reference_grid),
                               global_pool=global_pool, dims=dims)


ARCH = dict(class_token=True)  # the registered model's cls token (the weights show it)

FAMILY = fam.Family(
    name="pe",
    models={"PE-Core-Ti_16": fam.Model(
        "Ti", 16, dict(CORE, **ARCH, classifier="map", rope_reference_grid=24), 384,
        dims=dict(DIMS["tiny"], mlp_dim=768))},
    preprocessing=fam.Preprocessing(fam.HALF, fam.HALF, crop_pct=1.0),
    timm=(
        _entry(r"vit_pe_core_(?P<size>tiny|small)_patch16_384", CORE, 24, "map"),
        _entry(r"vit_pe_core_(?P<size>base)_patch16_224", CORE, 14, "map"),
        _entry(r"vit_pe_core_(?P<size>large)_patch14_336", CORE, 24, "map"),
        _entry(r"vit_pe_core_(?P<size>gigantic)_patch14_448", dict(CORE, **GIGANTIC), 32, "map"),
        _entry(r"vit_pe_lang_(?P<size>large)_patch14_448", LANG, 32, "avg", LANG_DIMS),
        _entry(r"vit_pe_lang_(?P<size>gigantic)_patch14_448", dict(LANG, **GIGANTIC), 32, "avg",
               LANG_DIMS),
        _entry(r"vit_pe_spatial_(?P<size>tiny|small|base)_patch16_512", NO_FINAL_NORM, 32, "avg"),
        _entry(r"vit_pe_spatial_(?P<size>large)_patch14_448", NO_FINAL_NORM, 32, "avg"),
        _entry(r"vit_pe_spatial_(?P<size>gigantic)_patch14_448",
               dict(NO_FINAL_NORM, layer_scale=0.1, **GIGANTIC), 32, "avg"),
    ),
)
