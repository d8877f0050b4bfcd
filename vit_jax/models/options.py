"""Encoder options: the settings that every transformer module of ViT and ViViT shares.

One frozen dataclass, validated once when it is made, held by every module as its
`options` field and passed down whole (model -> encoder -> block -> attention / MLP);
each module reads the fields it needs. A new option is one field here plus its use.

    options = EncoderOptions(dropout_rate=0.1, dtype=jnp.bfloat16)
    model = create_model("ViT-B_16", num_classes=10, dropout_rate=0.1)  # the same, flat
    model = model.clone(scan_layers=True)  # option fields work in clone too

`create_model(name, **kwargs)` and the config's `model.*` keys take these fields flat
(`split_options` sorts them from the module's own fields).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Optional

import jax
import jax.numpy as jnp

Dtype = Any

ATTENTION_IMPLEMENTATIONS = (None, "xla", "cudnn")

# MLP activations (`mlp_activation`): "gelu" (tanh or erf by `gelu_approximate`),
# "quick_gelu" x * sigmoid(1.702 x) (OpenAI CLIP), "swiglu" silu(x W_gate) * (x W_up)
# (DINOv2-g, EVA-02; parameters `gate` and `up` in place of `Dense_0`).
MLP_ACTIVATIONS = ("gelu", "quick_gelu", "swiglu")
# Which of the query/key/value projections have a bias (`qkv_bias`): all three (ViT),
# query and value only (EVA-02, BEiT), or none (DINOv3).
QKV_BIASES = ("qkv", "qv", "none")
# 2-D rotary position embeddings of the patch tokens (`rope`); docs/conventions.md,
# 'Rotary position embeddings', gives both frequency conventions. "vjepa2" is V-JEPA 2's
# 3-D RoPE of video tokens (frame, row, column; positions.rope_angles_at).
# "mixed" is RoPE-Mixed's learned per-head frequencies (Heo et al. 2024).
ROPE_VARIANTS = (None, "eva02", "dinov3", "vjepa2", "mixed")
ROPE_DEFAULT_TEMPERATURE = {"eva02": 10_000.0, "dinov3": 100.0, "vjepa2": 10_000.0,
                            "mixed": 10.0}
# Which coordinate of a patch the first half of each head's rotation angles follows
# (`rope_grid_indexing`, timm's `grid_indexing`): "ij" the row (EVA-02), "xy" the column
# (Perception Encoder, RoPE-ViT).
ROPE_GRID_INDEXING = ("ij", "xy")
# Normalisation layers (`norm`): LayerNorm (scale and bias) or RMSNorm (scale only, no
# mean subtraction: x / sqrt(mean(x^2) + eps) * scale; AIMv2).
NORMS = ("layernorm", "rmsnorm")
# How a learned position embedding follows an input of another size (`posemb_resize`),
# inside the graph, as torch's F.interpolate(align_corners=False) resizes it:
#   None                 the grid is fixed (another size is an error: resize the checkpoint)
#   "bicubic"            timm's ViT with dynamic_img_size (resample_abs_pos_embed)
#   "bilinear_antialias" SigLIP 2 NaFlex, timm NaFlexViT
#   "bilinear", "bicubic_antialias"
POSEMB_RESIZE = (None, "bicubic", "bilinear", "bilinear_antialias", "bicubic_antialias")

# Attention score functions (`attention_score`), for ablations:
#   scaled_dot  q.k / sqrt(hd)                  (Vaswani et al.; the default, no parameters)
#   dot         q.k                             (Luong "dot"; no parameters)
#   bilinear    q^T W k, W [H, hd, hd]           (Luong "general"; param `bilinear`)
#   additive    v^T tanh(q + k), v [H, hd]       (Bahdanau "concat"; param `additive_v`)
#   cosine      tau * cos(q, k), tau [H] learned (param `log_temperature`)
ATTENTION_SCORES = ("scaled_dot", "dot", "bilinear", "additive", "cosine")

# Names accepted for `remat_policy`, mapped to jax.checkpoint_policies.
REMAT_POLICIES = {
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "everything_saveable": jax.checkpoint_policies.everything_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": (
        jax.checkpoint_policies.dots_with_no_batch_dims_saveable),
}


@dataclasses.dataclass(frozen=True)
class EncoderOptions:
  """Options shared by the encoder, its blocks, attention and MLP layers.

  Attributes:
    dropout_rate: dropout after the position embedding, in the MLP and on each
      residual branch (training only).
    attention_dropout_rate: dropout on the attention weights (training only; takes
      the explicit attention path while active).
    stochastic_depth: drop rate of the last block's residual branches; it grows
      linearly from 0 at the first block (per example, training only).
    gelu_approximate: True: tanh GELU, as the released checkpoints were trained;
      False: exact erf, as PyTorch ports use.
    attention_implementation: None (jax's choice on GPU/TPU, explicit head-major
      attention on CPU), "xla" or "cudnn" (`jax.nn.dot_product_attention`).
    attention_score: one of ATTENTION_SCORES.
    sow_attention_weights: store every softmax in the 'intermediates' collection.
    scan_layers: run the blocks under `nn.scan` (parameters stacked on axis 0).
    remat: recompute each block's activations in the backward pass.
    remat_policy: a name in REMAT_POLICIES.
    dtype: compute dtype; param_dtype: parameter dtype.

  Architecture options of the later ViT families (docs/conventions.md, 'Architecture
  options'); the defaults are the original ViT, parameter tree and numerics unchanged:
    layernorm_epsilon: epsilon of every LayerNorm (1e-6 ViT/timm/DINOv2, 1e-5 CLIP).
    layer_scale: None, or the init value of LayerScale, a learned per-channel scale
      [D] on each residual branch (`LayerScale_{0,1}/scale`; 1e-5 DINOv2, 1e-6 DeiT III).
    num_registers: learned register tokens [1, R, D] (`registers`) after the cls (and
      distillation) token; they get no position embedding with `no_embed_class` and are
      left out of every pooling but the cls token's.
    no_embed_class: the position embedding covers the patches only (timm's
      `no_embed_class`, DeiT III / DINOv2-reg): added to the patch tokens, not to the
      cls / distillation / register tokens.
    distilled: a distillation token `dist` [1, 1, D] after cls and its own head
      `head_dist` (DeiT distilled); the output is the mean of both heads' logits.
    class_token: None (a cls token iff classifier == "token"), True or False; e.g.
      classifier "gap" with a cls token (MAE, EVA-02, DINOv3).
    fc_norm: the final LayerNorm comes after pooling (`fc_norm`) instead of before it
      (`Transformer/encoder_norm`), as in MAE / BEiT / EVA-02 fine-tuning.
    pre_norm: a LayerNorm `Transformer/pre_norm` before the first block (CLIP `ln_pre`).
    patch_bias: the patch embedding has a bias (CLIP's has none).
    head_bias: the classification head has a bias (CLIP's projection has none).
    mlp_activation: one of MLP_ACTIVATIONS.
    mlp_inner_norm: a LayerNorm `inner_norm` on the MLP's hidden units before the
      output layer (EVA-02's SwiGLU, timm `scale_mlp`).
    qkv_bias: one of QKV_BIASES.
    qk_norm: LayerNorm over the head dimension of queries and keys (`query_norm`,
      `key_norm`, [hd]) before the scores.
    rope: one of ROPE_VARIANTS; rotary position embedding of the patch tokens'
      queries and keys (the cls / register tokens are not rotated).
    rope_temperature: frequency base; None: the variant's (ROPE_DEFAULT_TEMPERATURE).
    rope_reference_grid: EVA-02 only: patch positions are scaled so that the grid
      spans this many positions per side (timm `ref_feat_shape`); None: indices.
    posemb_resize: one of POSEMB_RESIZE: a learned position embedding made for one
      input size is resized in the graph to the patch grid of the input, so one set of
      parameters serves any H x W divisible by the patch (positions.resize_posemb_grid).
    attention_logit_cap: None, or the soft cap c of the attention logits,
      c * tanh(logits / c), before the softmax (VideoPrism: 50); takes the explicit
      attention path (the fused kernels have no cap).

  Options of the 2025 families (issue 25):
    norm: one of NORMS, for every normalisation layer (the parameter names stay; an
      RMSNorm has `scale` only). `layernorm_epsilon` is its epsilon either way.
    proj_bias: the attention output projection and the MLP layers have biases (AIMv2's
      have none; timm `proj_bias`).
    patch_norm: a norm `embedding_norm` on the patch tokens right after the patch
      embedding, before any token or position embedding is added (AIMv2, timm
      `embed_norm_layer`).
    final_norm: a final norm at all (`encoder_norm` or `fc_norm`); Perception Encoder's
      lang and spatial towers have none.
    map_num_heads, map_mlp_dim: the MAP head's head count and MLP width when they are
      not the encoder's (Perception Encoder: 8 heads; timm `attn_pool_num_heads`).
    map_prefix_tokens: the MAP head attends to the cls / register tokens too, as timm's
      `attn_pool` reads every token (Perception Encoder, So150m); False: patches only.
    map_attention_only: the MAP head is one attention whose query is the probe itself (no
      query projection), then its output projection: no LayerNorm, MLP or residual
      (transformers AIMv2's Aimv2AttentionPoolingHead; parameters probe, key, value, out).
    rope_grid_offset: added to every patch index before any scaling (PE: 1; timm
      `rope_grid_offset`); eva02 and mixed only.
    rope_grid_indexing: one of ROPE_GRID_INDEXING.
    rope "mixed" (RoPE-Mixed, Heo et al. 2024): each block's attention learns its own
      frequencies `rope_freqs` [2, H, hd/2] (x and y rows, per head), and the angles are
      col * fx + row * fy; the other variants' frequencies are fixed.
  """
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  stochastic_depth: float = 0.0
  gelu_approximate: bool = True
  attention_implementation: Optional[str] = None
  attention_score: str = "scaled_dot"
  sow_attention_weights: bool = False
  scan_layers: bool = False
  remat: bool = False
  remat_policy: str = "nothing_saveable"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  layernorm_epsilon: float = 1e-6
  layer_scale: Optional[float] = None
  num_registers: int = 0
  no_embed_class: bool = False
  distilled: bool = False
  class_token: Optional[bool] = None
  fc_norm: bool = False
  pre_norm: bool = False
  patch_bias: bool = True
  head_bias: bool = True
  mlp_activation: str = "gelu"
  mlp_inner_norm: bool = False
  qkv_bias: str = "qkv"
  qk_norm: bool = False
  rope: Optional[str] = None
  rope_temperature: Optional[float] = None
  rope_reference_grid: Optional[int] = None
  posemb_resize: Optional[str] = None
  attention_logit_cap: Optional[float] = None
  norm: str = "layernorm"
  proj_bias: bool = True
  patch_norm: bool = False
  final_norm: bool = True
  map_num_heads: Optional[int] = None
  map_mlp_dim: Optional[int] = None
  map_prefix_tokens: bool = False
  map_attention_only: bool = False
  rope_grid_offset: float = 0.0
  rope_grid_indexing: str = "ij"

  def __post_init__(self):
    if self.attention_implementation not in ATTENTION_IMPLEMENTATIONS:
      raise ValueError(f"Unknown attention implementation {self.attention_implementation!r}; "
                       f"choose one of {ATTENTION_IMPLEMENTATIONS}.")
    if self.attention_score not in ATTENTION_SCORES:
      raise ValueError(f"Unknown attention_score {self.attention_score!r}; "
                       f"choose one of {ATTENTION_SCORES}.")
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"Unknown remat_policy {self.remat_policy!r}; "
                       f"choose one of {sorted(REMAT_POLICIES)}.")
    for name in ("dropout_rate", "attention_dropout_rate", "stochastic_depth"):
      value = getattr(self, name)
      if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}.")
    for name, value, choices in [("mlp_activation", self.mlp_activation, MLP_ACTIVATIONS),
                                 ("qkv_bias", self.qkv_bias, QKV_BIASES),
                                 ("rope", self.rope, ROPE_VARIANTS),
                                 ("posemb_resize", self.posemb_resize, POSEMB_RESIZE),
                                 ("norm", self.norm, NORMS),
                                 ("rope_grid_indexing", self.rope_grid_indexing,
                                  ROPE_GRID_INDEXING)]:
      if value not in choices:
        raise ValueError(f"Unknown {name} {value!r}; choose one of {choices}.")
    if not self.layernorm_epsilon > 0:
      raise ValueError(f"layernorm_epsilon must be > 0, got {self.layernorm_epsilon}.")
    if self.layer_scale is not None and not self.layer_scale > 0:
      raise ValueError(f"layer_scale is the LayerScale init value and must be > 0 (or None "
                       f"for no LayerScale), got {self.layer_scale}.")
    if self.num_registers < 0:
      raise ValueError(f"num_registers must be >= 0, got {self.num_registers}.")
    if self.distilled and self.class_token is False:
      raise ValueError("distilled=True needs the cls token (DeiT averages the heads on the "
                       "cls and distillation tokens): drop class_token=False.")
    if self.rope is None and (self.rope_temperature is not None
                              or self.rope_reference_grid is not None):
      raise ValueError("rope_temperature / rope_reference_grid set without rope: pass "
                       f"rope= one of {ROPE_VARIANTS[1:]}.")
    if self.rope_reference_grid is not None and self.rope != "eva02":
      raise ValueError("rope_reference_grid is EVA-02's position scaling; it only applies "
                       f"with rope='eva02', not {self.rope!r}.")
    if self.rope_temperature is not None and not self.rope_temperature > 0:
      raise ValueError(f"rope_temperature must be > 0, got {self.rope_temperature}.")
    if self.attention_logit_cap is not None and not self.attention_logit_cap > 0:
      raise ValueError(f"attention_logit_cap must be > 0 (or None for no cap), got "
                       f"{self.attention_logit_cap}.")
    if (self.rope_grid_offset or self.rope_grid_indexing != "ij") and self.rope not in (
        "eva02", "mixed"):
      raise ValueError("rope_grid_offset / rope_grid_indexing place timm's RotaryEmbeddingCat "
                       f"and mixed grids; they need rope='eva02' or 'mixed', not {self.rope!r}.")
    if self.fc_norm and not self.final_norm:
      raise ValueError("fc_norm=True is the final norm after pooling; it contradicts "
                       "final_norm=False (no final norm): drop one of them.")
    for name in ("map_num_heads", "map_mlp_dim"):
      value = getattr(self, name)
      if value is not None and not value > 0:
        raise ValueError(f"{name} must be > 0 (or None: the encoder's), got {value}.")

  def replace(self, **changes: Any) -> EncoderOptions:
    """A copy with `changes` (validated again); unknown names are an error."""
    unknown = sorted(set(changes) - set(FIELDS))
    if unknown:
      raise TypeError(f"EncoderOptions has no field(s) {unknown}; fields: {list(FIELDS)}.")
    return dataclasses.replace(self, **changes)

  def has_class_token(self, classifier: str) -> bool:
    """Whether a model pooling with `classifier` has a cls token."""
    return classifier == "token" if self.class_token is None else self.class_token

  def num_prefix_tokens(self, classifier: str) -> int:
    """Tokens before the patches: cls, distillation, registers (in this order)."""
    return int(self.has_class_token(classifier)) + int(self.distilled) + self.num_registers

  @property
  def rope_base(self) -> float:
    """The RoPE frequency base in use (`rope_temperature` or the variant's)."""
    if self.rope is None:
      raise ValueError("rope_base of a model without rope.")
    return self.rope_temperature or ROPE_DEFAULT_TEMPERATURE[self.rope]

  @property
  def remat_policy_fn(self) -> Callable[..., bool]:
    """The `jax.checkpoint` policy named by `remat_policy`."""
    return REMAT_POLICIES[self.remat_policy]


FIELDS = tuple(f.name for f in dataclasses.fields(EncoderOptions))


def split_options(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
  """Flat keyword arguments -> (EncoderOptions fields, everything else)."""
  options = {k: v for k, v in kwargs.items() if k in FIELDS}
  return options, {k: v for k, v in kwargs.items() if k not in FIELDS}


class OptionsClone:
  """Mixin for modules with an `options: EncoderOptions` field: option fields read and
  clone flat, as the module's own fields do (`model.dropout_rate`,
  `model.clone(scan_layers=True)`); they are stored only in `options`."""

  def __getattr__(self, name: str) -> Any:
    # Only called when normal lookup fails, i.e. for names that are not module fields.
    if name in FIELDS:
      return getattr(self.options, name)
    return super().__getattr__(name)

  def clone(self, **updates: Any):
    changes, updates = split_options(updates)
    if changes:
      updates["options"] = updates.get("options", self.options).replace(**changes)
    return super().clone(**updates)
