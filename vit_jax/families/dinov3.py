"""DINOv3 (Siméoni et al. 2025): 4 registers, RoPE (DINOv3's convention, no absolute
position embedding), LayerScale 1e-5, LayerNorm 1e-5.

Sizes: S, B, L (GELU MLP) and the SwiGLU sizes S+, H+ (hidden 4 D) and 7B (hidden 2 D;
20 and 32 heads for H+ and 7B: families.SIZES). Upstream's q/k/v bias has its key part
masked to zero; timm's plain names drop the bias (the distilled S..H+ biases are zero),
its `_qkvb` names keep the query and value biases (`q_bias`, `v_bias`; the key bias is a
zero buffer): `qkv_bias="qv"` here (the `-qkvb` models). The 7B has no other option of
its own (timm drops its pretraining-only `local_cls_norm`).

Registered pooling the cls token (as upstream and Hugging Face); timm's default is "avg".
timm `vit_{small,small_plus,base,large,huge_plus,7b}_patch16_dinov3[_qkvb]`; transformers
`dinov3_vit` (DINOv3ViTModel, the facebook/dinov3-*-pretrain-* folders: separate
q/k/v projections with `query_bias` / `key_bias` / `value_bias`, `layer_scale{1,2}`, an
MLP `up_proj` / `down_proj` or, with `use_gated_mlp`, SwiGLU `gate_proj` / `up_proj`;
`pooler_output` is the normed cls token). Training-only RoPE augmentation
(`pos_embed_shift` / `jitter` / `rescale`) is not applied.
"""

from vit_jax.families import family as fam

OPTIONS = dict(fam.TORCH, layer_scale=1e-5, num_registers=4, posemb="none", rope="dinov3",
               qkv_bias="none", layernorm_epsilon=1e-5)
SWIGLU = dict(mlp_activation="swiglu")
QKVB = dict(qkv_bias="qv")
SIZE_WORDS = {"small": "S", "small_plus": "S+", "base": "B", "large": "L",
              "huge_plus": "H+", "7b": "7B"}


def _options(size: str, qkvb: bool) -> dict:
  return dict(OPTIONS, **(SWIGLU if size in ("S+", "H+", "7B") else {}),
              **(QKVB if qkvb else {}))


FAMILY = fam.Family(
    name="dinov3",
    models={
        **{f"DINOv3-{s}_16": fam.Model(s, 16, _options(s, False))
           for s in ("S", "S+", "B", "L", "H+", "7B")},
        **{f"DINOv3-{s}_16-qkvb": fam.Model(s, 16, _options(s, True))
           for s in ("S", "S+", "B", "L", "H+")},
    },
    preprocessing=fam.Preprocessing(fam.IMAGENET_MEAN, fam.IMAGENET_STD, crop_pct=1.0),
    # Two entries: what an architecture states must be what its weights show (the biases).
    timm=(fam.TimmArchitectures(
        r"vit_(?P<size>small|small_plus|base|large|huge_plus|7b)_patch16_dinov3",
        options=OPTIONS, global_pool="avg", size_words=SIZE_WORDS),
          fam.TimmArchitectures(
        r"vit_(?P<size>small|small_plus|base|large|huge_plus)_patch16_dinov3_qkvb",
        options=dict(OPTIONS, **QKVB), global_pool="avg", size_words=SIZE_WORDS)),
    hf={"dinov3_vit": fam.HfModelType(
        "dinov3", dict(layer_norm_eps=1e-5, hidden_act="gelu", rope_theta=100.0),
        options=dict(rope="dinov3"))},
)
