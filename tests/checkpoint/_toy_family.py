"""A family defined outside the package, in one file: what adding a family takes.

`ToyViT` differs from a plain ViT only in what its weights cannot show (LayerNorm
epsilon 1e-3, QuickGELU) and in its published preprocessing, so a reader that ignored
the family would build another function from the same file.
"""

from vit_jax.families import Family, Model, Preprocessing, TimmArchitectures

OPTIONS = dict(layernorm_epsilon=1e-3, mlp_activation="quick_gelu")
ARCHITECTURE = "toyvit_mu_patch4_16"

FAMILY = Family(
    name="toyvit",
    models={"ToyViT-Mu_4": Model("Mu", 4, dict(OPTIONS), image_size=16)},
    preprocessing=Preprocessing((0.1, 0.2, 0.3), (0.4, 0.5, 0.6), crop_pct=1.0),
    timm=(TimmArchitectures(r"toyvit_(?P<size>mu)_patch4_16", options=OPTIONS,
                            size_words={"mu": "Mu"}),),
)
