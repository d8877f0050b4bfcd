"""SigLIP image towers (Zhai et al. 2023) and SigLIP 2's fixed-resolution towers
(Tschannen et al. 2025): no cls token, a MAP head, tanh GELU as big_vision trained them;
pixels to [-1, 1].

SigLIP 2's fixed-resolution towers are SigLIP's architecture (big_vision's README_siglip2:
"compatible with vit.py and two_towers.py from SigLIP; the only difference is the vocab
size and the tokenizer"), so one family reads both, in every format:
  - timm: the architecture names of both releases (`.webli` and `.v2_webli` tags), with
    the GELU form timm's definition states. The names SigLIP 1 released under run timm's
    default erf GELU; those added for SigLIP 2 (B/32, L/16-512, So400m/16, g-opt/16)
    state `act_layer="gelu_tanh"`. `_gap_` names drop the MAP head (average pooling).
  - transformers `siglip` (SiglipModel: the google/siglip2-* fixed-resolution folders
    too, whose g-opt text tower is narrower than the image tower) and
    `siglip_vision_model`.
  - big_vision `.npz` (checkpoint.npz): the image tower under `params/img/`, SigLIP 1's
    layout and key names.
NaFlex SigLIP 2 (`siglip2_vision_model`, `naflexvit_*`) is another family.
"""

from vit_jax.families import family as fam

OPTIONS = dict(classifier="map", class_token=False)
_HF = dict(layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh")
SIZE_WORDS = dict(fam.TIMM_SIZE_WORDS, giantopt="gopt")
TANH = dict(fam.TORCH, gelu_approximate=True)

# timm's SigLIP architectures: (size word, patch) -> input sizes, for each GELU form
# (timm/models/vision_transformer.py). The `_gap_` forms add So400m/14 at 448 and 896.
ERF_SIZES = {("base", 16): (224, 256, 384, 512), ("large", 16): (256, 384),
             ("so400m", 14): (224, 378, 384)}
TANH_SIZES = {("base", 32): (256,), ("large", 16): (512,), ("so400m", 16): (256, 384, 512),
              ("giantopt", 16): (256, 384)}
GAP_ONLY = {("so400m", 14): (448, 896)}


def _timm_entries():
  entries = []
  for table, options in ((ERF_SIZES, fam.TORCH), (TANH_SIZES, TANH)):
    for (word, patch), sizes in table.items():
      for gap in (False, True):
        sizes_here = sizes + (GAP_ONLY.get((word, patch), ()) if gap and table is ERF_SIZES
                              else ())
        entries.append(fam.TimmArchitectures(
            rf"vit_(?P<size>{word})_patch{patch}_siglip_{'gap_' if gap else ''}"
            rf"({'|'.join(map(str, sizes_here))})",
            options=options, global_pool="avg" if gap else None, size_words=SIZE_WORDS))
  return tuple(entries)


# big_vision's evaluation of its image-text models (SigLIP, SigLIP 2, LiT):
# `resize(size)|value_range(-1, 1)`, the resize bilinear (big_vision's default) and no
# crop. The preprocessing of a big_vision two-tower .npz, which carries none.
BIG_VISION_IMAGE_TEXT = fam.Preprocessing(fam.HALF, fam.HALF, crop_pct=1.0,
                                          interpolation="bilinear")

FAMILY = fam.Family(
    name="siglip",
    models={"SigLIP-B_16": fam.Model("B", 16, dict(OPTIONS)),
            "SigLIP-So400m_14": fam.Model("So400m", 14, dict(OPTIONS)),
            # Published at 256 px and up (their position embeddings' smallest grid).
            **{name: fam.Model(size, patch, dict(OPTIONS), 256) for name, size, patch in (
                ("SigLIP-L_16", "L", 16), ("SigLIP-B_32", "B", 32),
                ("SigLIP-So400m_16", "So400m", 16), ("SigLIP-gopt_16", "gopt", 16))}},
    preprocessing=fam.Preprocessing(fam.HALF, fam.HALF, crop_pct=0.9),
    timm=_timm_entries(),
    hf={"siglip": fam.HfModelType("clip", _HF, vision_config=True),
        "siglip_vision_model": fam.HfModelType("clip", _HF)},
)
