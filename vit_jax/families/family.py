"""`Family`: everything known about one model family, in one place.

A family module (`vit_jax/families/<name>.py`) defines one `FAMILY`; the registry, the
checkpoint readers, `load_pretrained`'s preprocessing defaults and `save_hf` derive their
tables from these definitions (`vit_jax.families`), so that adding a family is one file.

This module imports nothing from `vit_jax.models` (the registry imports the families):
options are plain `EncoderOptions` field dicts, validated once where the registry builds
the models and where a reader builds a `ModelSpec`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, Optional

# Size letters -> (hidden_size, num_layers, mlp_dim, num_heads); docs/published_results.md,
# 'Model sizes and parameter counts'. Families with their own MLP width override mlp_dim.
SIZES: dict[str, dict[str, int]] = {
    "Mu": dict(hidden_size=32, num_layers=2, mlp_dim=64, num_heads=2),
    "Nano": dict(hidden_size=64, num_layers=4, mlp_dim=128, num_heads=4),
    "Ti": dict(hidden_size=192, num_layers=12, mlp_dim=768, num_heads=3),
    "S": dict(hidden_size=384, num_layers=12, mlp_dim=1536, num_heads=6),
    "B": dict(hidden_size=768, num_layers=12, mlp_dim=3072, num_heads=12),
    "L": dict(hidden_size=1024, num_layers=24, mlp_dim=4096, num_heads=16),
    "H": dict(hidden_size=1280, num_layers=32, mlp_dim=5120, num_heads=16),
    "g": dict(hidden_size=1536, num_layers=40, mlp_dim=4096, num_heads=24),  # SwiGLU width
    "So400m": dict(hidden_size=1152, num_layers=27, mlp_dim=4304, num_heads=16),
    # DINOv3's SwiGLU sizes (timm `small_plus`, `huge_plus`, `7b`): mlp_dim is the SwiGLU
    # hidden width (fc1_g / fc1_x rows), 4 D for S+ and H+ (6 D * 2/3), 2 D for 7B.
    "S+": dict(hidden_size=384, num_layers=12, mlp_dim=1536, num_heads=6),
    "H+": dict(hidden_size=1280, num_layers=32, mlp_dim=5120, num_heads=20),
    "7B": dict(hidden_size=4096, num_layers=40, mlp_dim=8192, num_heads=32),
    # big_vision's "g-opt" (SigLIP 2, timm `giantopt`): DINOv2-g's width, 16 heads.
    "gopt": dict(hidden_size=1536, num_layers=40, mlp_dim=6144, num_heads=16),
    # ViT-g of Zhai et al. 2022 (I-JEPA g/16; timm `vit_giant_patch16_gap_224`).
    "g1408": dict(hidden_size=1408, num_layers=40, mlp_dim=6144, num_heads=16),
}
# timm's size words (`vit_small_...`) -> our size letters.
TIMM_SIZE_WORDS = {"tiny": "Ti", "small": "S", "base": "B", "large": "L", "huge": "H",
                   "giant": "g", "so400m": "So400m"}

# Activation names of every source format -> EncoderOptions fields. timm's `act_layer`,
# transformers' `hidden_act`, OpenCLIP's `quick_gelu` flag; the first name of each form is
# the one `activation_name` writes back (transformers' spelling).
ACTIVATIONS: dict[str, dict[str, Any]] = {
    "gelu": dict(mlp_activation="gelu", gelu_approximate=False),  # erf: torch's nn.GELU
    "gelu_pytorch_tanh": dict(mlp_activation="gelu", gelu_approximate=True),
    "gelu_tanh": dict(mlp_activation="gelu", gelu_approximate=True),
    "gelu_new": dict(mlp_activation="gelu", gelu_approximate=True),
    "quick_gelu": dict(mlp_activation="quick_gelu"),
    "gelu_fast": dict(mlp_activation="gelu", gelu_approximate=True),  # transformers' ViViT
    "gelu_python": dict(mlp_activation="gelu", gelu_approximate=False),  # VideoPrism's
}
# Normalisations (pixels in [0, 1]) of the published preprocessing.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)  # pixels in [-1, 1]: the JAX ViTs, SigLIP

# PyTorch-trained families: erf GELU, as torch's nn.GELU computes it.
TORCH = dict(gelu_approximate=False)

# The EncoderOptions fields a PyTorch state dict cannot show (its tensors show the rest:
# tokens, norms, biases, SwiGLU, LayerScale's presence). A reader takes these from the
# family and everything else from the weights.
ARCHITECTURE_ONLY = ("layer_scale", "no_embed_class", "rope", "rope_reference_grid",
                     "layernorm_epsilon", "mlp_activation", "gelu_approximate",
                     "posemb_resize", "rope_temperature", "rope_grid_offset",
                     "rope_grid_indexing", "norm", "map_num_heads", "map_prefix_tokens",
                     "final_norm")
# How the reference resizes a learned position embedding to an input of another size
# (EncoderOptions.posemb_resize), so that a loaded model serves any H x W as its
# reference does: timm's `resample_abs_pos_embed` (dynamic_img_size; Eva; OpenCLIP's
# resize_pos_embed) is bicubic with antialias, transformers' `interpolate_pos_encoding`
# bicubic without (DINOv2 with registers: with). A family states another in its options.
TIMM_POSEMB_RESIZE = "bicubic_antialias"
HF_POSEMB_RESIZE = "bicubic"


def activation_options(name: str, source: str) -> dict[str, Any]:
  """The options of an activation name from any source format (ACTIVATIONS)."""
  from vit_jax.errors import CheckpointError  # noqa: PLC0415 (errors imports nothing heavy)

  if name not in ACTIVATIONS:
    raise CheckpointError(f"{source}: activation {name!r} is not one this project builds; "
                          f"known: {sorted(ACTIVATIONS)}.")
  return dict(ACTIVATIONS[name])


def activation_name(mlp_activation: str, gelu_approximate: bool) -> str:
  """The transformers `hidden_act` of options (the first matching name of ACTIVATIONS)."""
  for name, options in ACTIVATIONS.items():
    if options.get("mlp_activation") == mlp_activation and \
        options.get("gelu_approximate", gelu_approximate) == gelu_approximate:
      return name
  raise ValueError(f"no activation name for mlp_activation={mlp_activation!r}.")


@dataclasses.dataclass(frozen=True)
class Model:
  """A registered model of a family.

  Attributes:
    size: the size letter (SIZES), e.g. "S".
    patch: the patch size.
    options: EncoderOptions fields (and VisionTransformer fields such as `classifier`).
    image_size: the input size it was published at (its position embedding's).
    dims: hidden_size, num_layers, mlp_dim, num_heads (SIZES[size] unless the family
      differs).
  """
  size: str
  patch: int
  options: Mapping[str, Any]
  image_size: int = 224
  dims: Optional[Mapping[str, int]] = None

  def kwargs(self) -> dict[str, Any]:
    """`vit.VisionTransformer` keyword arguments (flat options)."""
    return dict(patch_size=self.patch, **(self.dims or SIZES[self.size]), **self.options)


@dataclasses.dataclass(frozen=True)
class TimmArchitectures:
  """timm architecture names a family answers to.

  Attributes:
    pattern: a regular expression that must match the whole model name (the name before
      the pretrained tag's "."), with a group `size` holding timm's size word
      (TIMM_SIZE_WORDS). Exact names only: no catch-all.
    options: what the weights cannot show (ARCHITECTURE_ONLY fields are read from it).
    global_pool: timm's default pooling of these models ("token", "avg", "map").
    tag: a pretrained tag (after the ".") that selects this entry over an untagged one
      with the same name (MAE's `vit_base_patch16_224.mae`).
    size_words: size word -> size letter (SIZES), when not timm's (TIMM_SIZE_WORDS).
    dims: size word -> hidden_size, num_layers, num_heads of models whose widths are
      not a size letter's (So150m: 896 wide, 14 heads; PE lang L: 23 blocks); replaces
      size_words for the words it has.
  """
  pattern: str
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  global_pool: Optional[str] = None
  tag: Optional[str] = None
  size_words: Mapping[str, str] = dataclasses.field(default_factory=lambda: TIMM_SIZE_WORDS)
  dims: Optional[Mapping[str, Mapping[str, int]]] = None

  def match(self, name: str, tag: str) -> Optional[re.Match]:
    if self.tag is not None and self.tag != tag:
      return None
    return re.fullmatch(self.pattern, name)


@dataclasses.dataclass(frozen=True)
class HfModelType:
  """A transformers `model_type` a family answers to.

  Attributes:
    keys: the key layout of its state dict: "vit" (ViT, DeiT, DINOv2, ViTMAE names),
      "clip" (CLIP and SigLIP vision towers), "siglip2" (SigLIP's names with a Linear
      patch embedding, SigLIP 2 NaFlex), "aimv2" (AIMv2 vision models) or "dinov3"
      (DINOv3ViTModel).
    config_defaults: the transformers config class's defaults of the fields read when a
      config.json omits them (layer_norm_eps, hidden_act).
    vision_config: the vision tower's fields sit under `vision_config` (a full CLIPModel).
    reader: for the families whose models are not built from timm's names (the video
      families), the module (`vit_jax.checkpoint.<name>`) whose `read(folder, config)`
      returns a `vit_jax.checkpoint.hf_video.VideoRead`; `keys` is then its key layout's
      name, for messages only.
    posemb_resize: how its `interpolate_pos_encoding` resizes the learned position
      embedding (EncoderOptions.posemb_resize; HF_POSEMB_RESIZE).
    options: what neither the weights nor config.json show (ARCHITECTURE_ONLY fields,
      e.g. DINOv3's `rope`), as TimmArchitectures.options.
  """
  keys: str
  config_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  vision_config: bool = False
  reader: Optional[str] = None
  posemb_resize: Optional[str] = HF_POSEMB_RESIZE
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """A family's published input normalisation (pixels in [0, 1]) and evaluation crop.

  Video families also state their clip: `num_frames` frames taken every `frame_stride`
  frames of the source video (None for image families). Native-resolution (NaFlex)
  families state their patch budget `max_num_patches`: each image is resized, keeping
  its aspect ratio, to at most that many patches (None: a fixed square input).
  """
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  crop_pct: float
  interpolation: str = "bicubic"
  num_frames: Optional[int] = None
  frame_stride: Optional[int] = None
  max_num_patches: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class Family:
  """Everything known about one model family.

  Attributes:
    name: its short name ("dinov2"); preprocessing defaults are labelled with it.
    models: registered name -> Model (`create_model(name)`).
    preprocessing: the published preprocessing of its reference weights.
    timm: the timm architecture names it answers to.
    hf: transformers `model_type` -> HfModelType.
    openclip: for the family OpenCLIP image towers (`visual.*`) belong to, the options
      of such a tower that its weights cannot show (the activation aside: open_clip's
      `quick_gelu` flag), else None.
    video: its models take clips [B, T, H, W, C] (`models` holds no ViT entries: video
      models are registered by `vit_jax.models.registry` from their own modules).
  """
  name: str
  models: Mapping[str, Model]
  preprocessing: Preprocessing
  timm: tuple[TimmArchitectures, ...] = ()
  hf: Mapping[str, HfModelType] = dataclasses.field(default_factory=dict)
  openclip: Optional[Mapping[str, Any]] = None
  video: bool = False
