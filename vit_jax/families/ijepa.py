"""I-JEPA (Assran et al. 2023): a plain ViT without a cls token, a learned position
embedding over the patches and the mean of the normed patch tokens as its representation
(transformers' IJepaForImageClassification pools so; timm `global_pool="avg"`,
`fc_norm=False`). erf GELU, LayerNorm 1e-6.

Sizes H/14 (224 px), H/16 (448 px) and g/16 (ViT-g: 1408 wide, 40 layers, MLP 6144,
16 heads). timm `vit_huge_patch14_gap_224`, `vit_huge_patch16_gap_448`,
`vit_giant_patch16_gap_224` (their `.in1k_ijepa` / `.in22k_ijepa` weights); transformers
`ijepa` (IJepaModel, IJepaForImageClassification; the facebook/ijepa_vit* folders).
"""

from vit_jax.families import family as fam

OPTIONS = dict(fam.TORCH, classifier="gap")

FAMILY = fam.Family(
    name="ijepa",
    models={"IJEPA-H_14": fam.Model("H", 14, dict(OPTIONS)),
            "IJEPA-H_16": fam.Model("H", 16, dict(OPTIONS), 448),
            "IJEPA-g_16": fam.Model("g1408", 16, dict(OPTIONS))},
    preprocessing=fam.Preprocessing(fam.IMAGENET_MEAN, fam.IMAGENET_STD, crop_pct=0.9),
    timm=(fam.TimmArchitectures(r"vit_(?P<size>huge)_patch(14_gap_224|16_gap_448)",
                                options=fam.TORCH, global_pool="avg"),
          fam.TimmArchitectures(r"vit_(?P<size>giant)_patch16_gap_224", options=fam.TORCH,
                                global_pool="avg", size_words={"giant": "g1408"})),
    hf={"ijepa": fam.HfModelType("vit", dict(layer_norm_eps=1e-12, hidden_act="gelu"))},
)
