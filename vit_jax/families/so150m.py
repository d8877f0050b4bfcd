"""So150m (timm's shape-optimised ~150M ViTs, after Alabdulmohsin et al. 2023): widths that
are no standard size (896 wide with 14 heads; v2: 832 wide, 13 heads), register tokens
with position rows, no cls token; v2 adds LayerScale (1e-5) and drops the q/k/v bias.

timm `vit_so150m_patch16_reg4_{gap,map}_*` (gap: final norm before pooling),
`vit_so150m2_patch16_reg1_gap_*` (fc_norm after pooling), and the NaFlexViT forms
`naflexvit_so150m2_patch16_reg1_{gap,map}` (timm naflexvit.py; `embeds.*` names, read by
`vit_jax.checkpoint.naflex_io`): their learned 16 x 16 grid covers the patches only (the
register is added after it) and is resized to each image's own patch grid bicubic with
antialias (NaFlexViT's `pos_embed_interp_mode`, `pos_embed_antialias` defaults); both
poolings read the patch tokens only. The head count is the architecture's (a Hub
config.json states no model_args for a published name).
"""

from vit_jax.families import family as fam

# The registers have position rows (a square patch grid plus 4 rows is no evidence).
OPTIONS = dict(fam.TORCH, no_embed_class=False)
DIMS = {"so150m": dict(hidden_size=896, num_layers=18, num_heads=14),
        "so150m2": dict(hidden_size=832, num_layers=21, num_heads=13)}
V2 = dict(OPTIONS, layer_scale=1e-5)
NAFLEX = dict(V2, no_embed_class=True, posemb_resize="bicubic_antialias")

FAMILY = fam.Family(
    name="so150m",
    models={"So150m2_16": fam.Model(
        "So150m2", 16, dict(OPTIONS, layer_scale=1e-5, num_registers=1, qkv_bias="none",
                            classifier="gap", fc_norm=True), 256,
        dims=dict(DIMS["so150m2"], mlp_dim=2176))},
    preprocessing=fam.Preprocessing(fam.HALF, fam.HALF, crop_pct=0.95),
    timm=(fam.TimmArchitectures(r"vit_(?P<size>so150m)_patch16_reg4_(gap|map)_(256|384)",
                                options=OPTIONS, dims=DIMS),
          fam.TimmArchitectures(r"vit_(?P<size>so150m2)_patch16_reg1_gap_(256|384|448)",
                                options=V2, dims=DIMS),
          fam.TimmArchitectures(r"naflexvit_(?P<size>so150m2)_patch16_reg1_(gap|map)",
                                options=NAFLEX, dims=DIMS)),
)
