"""Model registry: one call builds any registered model by name.

    model = create_model("ViT-B_16", num_classes=10, dropout_rate=0.1)

Names follow the released checkpoints (`ViT-B_16` = size B, patch 16); the
big_vision spelling `B/16` is accepted too. Sizes compose: every patch size of
a size shares the size's widths. Tiny sizes (`Mu`, `Nano`) exist for tests and
the CPU demos.

The later families that researchers fine-tune from (DeiT, DeiT III, DINOv2 (+ registers),
DINOv3, CLIP, SigLIP, MAE, EVA-02) are registered with their published sizes and
architecture options (`FAMILIES`, docs/conventions.md 'Architecture options'):

    model = create_model("DINOv2-S_14-reg4", num_classes=None)   # 518 px: image_size(name)

Video models follow the ViViT paper: `ViViT-B_16x2` is size B with 16x16 patches
and 2-frame tubelets; pick the model with `variant` (default spatio_temporal):

    model = create_model("ViViT-B_16x2", num_classes=400, variant="factorised_encoder")
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import flax.linen as nn

from vit_jax.models import options as options_lib
from vit_jax.models import vit, vivit

# (hidden_size, num_layers, mlp_dim, num_heads); docs/published_results.md,
# 'Model sizes and parameter counts'.
VIT_SIZES = {
    "Mu": dict(hidden_size=32, num_layers=2, mlp_dim=64, num_heads=2),
    "Nano": dict(hidden_size=64, num_layers=4, mlp_dim=128, num_heads=4),
    "Ti": dict(hidden_size=192, num_layers=12, mlp_dim=768, num_heads=3),
    "S": dict(hidden_size=384, num_layers=12, mlp_dim=1536, num_heads=6),
    "B": dict(hidden_size=768, num_layers=12, mlp_dim=3072, num_heads=12),
    "L": dict(hidden_size=1024, num_layers=24, mlp_dim=4096, num_heads=16),
    "H": dict(hidden_size=1280, num_layers=32, mlp_dim=5120, num_heads=16),
}

# name -> (module class, keyword arguments)
_REGISTRY: dict[str, tuple[Callable[..., nn.Module], dict[str, Any]]] = {}


def register(name: str, module_cls: Callable[..., nn.Module], **kwargs: Any) -> None:
  """Registers `name` as `module_cls(**kwargs)`."""
  if name in _REGISTRY:
    raise ValueError(f"Model {name!r} is already registered.")
  _REGISTRY[name] = (module_cls, kwargs)


for _size, _patches in [("Mu", (2, 4, 16)), ("Nano", (2, 4, 16)), ("Ti", (16,)),
                        ("S", (16, 32)), ("B", (8, 16, 32)), ("L", (16, 32)),
                        ("H", (14,))]:
  for _patch in _patches:
    register(f"ViT-{_size}_{_patch}", vit.VisionTransformer,
             patch_size=_patch, **VIT_SIZES[_size])

# ViViT-{size}_{patch}x{tubelet frames}; the paper's models are B/16x2, L/16x2, H/14x2.
# Mu/Nano with 2x2 patches share the patch size of ViT-Mu_2/Nano_2 (configs/vit_digits.py),
# so those image checkpoints inflate into them.
for _size, _patch, _tubelet in [("Mu", 2, 1), ("Mu", 2, 2), ("Mu", 4, 1), ("Mu", 4, 2),
                                ("Nano", 2, 1), ("Nano", 2, 2), ("Nano", 4, 1), ("Nano", 4, 2),
                                ("S", 16, 2), ("B", 16, 2), ("L", 16, 2), ("H", 14, 2)]:
  register(f"ViViT-{_size}_{_patch}x{_tubelet}", vivit.VideoTransformer,
           patch_size=_patch, tubelet_size=_tubelet, **VIT_SIZES[_size])


# The families' own sizes (timm's `embed_dim, depth, mlp width, num_heads`).
FAMILY_SIZES = {
    "g": dict(hidden_size=1536, num_layers=40, mlp_dim=4096, num_heads=24),  # SwiGLU width
    "So400m": dict(hidden_size=1152, num_layers=27, mlp_dim=4304, num_heads=16),
}

# Options the PyTorch-trained families share: timm's erf GELU and LayerNorm 1e-6.
_TORCH = dict(gelu_approximate=False)
_DEIT3 = dict(_TORCH, layer_scale=1e-6, no_embed_class=True)
_DINOV2 = dict(_TORCH, layer_scale=1e-5)
_DINOV2_REG4 = dict(_DINOV2, num_registers=4, no_embed_class=True)
_DINOV2_G = dict(mlp_activation="swiglu")
# DINOv3 pools the cls token upstream (and in Hugging Face); timm's default is "avg".
_DINOV3 = dict(_TORCH, layer_scale=1e-5, num_registers=4, posemb="none", rope="dinov3",
               qkv_bias="none", layernorm_epsilon=1e-5)
# OpenAI CLIP (QuickGELU); OpenCLIP's own models use mlp_activation="gelu".
_CLIP = dict(pre_norm=True, patch_bias=False, layernorm_epsilon=1e-5, mlp_activation="quick_gelu")
_SIGLIP = dict(classifier="map", class_token=False)  # tanh GELU, as big_vision trained it
_EVA02 = dict(_TORCH, classifier="gap", class_token=True, fc_norm=True, mlp_activation="swiglu",
              qkv_bias="qv", rope="eva02", rope_reference_grid=16)
_EVA02_INNER_NORM = dict(mlp_inner_norm=True)  # B and L (timm `scale_mlp`)

# name -> (size, patch, options, published image size); parameter counts:
# tests/models/test_registry.py.
FAMILIES = {
    **{f"DeiT-{s}_16": (s, 16, dict(_TORCH), 224) for s in ("Ti", "S", "B")},
    **{f"DeiT-{s}_16-distilled": (s, 16, dict(_TORCH, distilled=True), 224)
       for s in ("Ti", "S", "B")},
    **{f"DeiT3-{s}_16": (s, 16, dict(_DEIT3), 224) for s in ("S", "B", "L")},
    **{f"DINOv2-{s}_14": (s, 14, dict(_DINOV2, **(_DINOV2_G if s == "g" else {})), 518)
       for s in ("S", "B", "L", "g")},
    **{f"DINOv2-{s}_14-reg4": (s, 14, dict(_DINOV2_REG4, **(_DINOV2_G if s == "g" else {})),
                               518) for s in ("S", "B", "L", "g")},
    **{f"DINOv3-{s}_16": (s, 16, dict(_DINOV3), 224) for s in ("S", "B", "L")},
    "CLIP-B_32": ("B", 32, dict(_CLIP), 224),
    "CLIP-B_16": ("B", 16, dict(_CLIP), 224),
    "CLIP-L_14": ("L", 14, dict(_CLIP), 224),
    "SigLIP-B_16": ("B", 16, dict(_SIGLIP), 224),
    "SigLIP-So400m_14": ("So400m", 14, dict(_SIGLIP), 224),
    "MAE-B_16": ("B", 16, dict(_TORCH), 224),
    "MAE-L_16": ("L", 16, dict(_TORCH), 224),
    "MAE-H_14": ("H", 14, dict(_TORCH), 224),
    **{f"EVA02-{s}_14": (s, 14, dict(_EVA02, **(_EVA02_INNER_NORM if s in ("B", "L") else {})),
                         224) for s in ("Ti", "S", "B", "L")},
}
# EVA-02's SwiGLU width is int(D * 4 * 2/3) (timm `mlp_ratio=4 * 2 / 3`).
_EVA02_MLP = {"Ti": 512, "S": 1024, "B": 2048, "L": 2730}

for _name, (_size, _patch, _options, _) in FAMILIES.items():
  _dims = dict(VIT_SIZES.get(_size) or FAMILY_SIZES[_size])
  if _name.startswith("EVA02"):
    _dims["mlp_dim"] = _EVA02_MLP[_size]
  register(_name, vit.VisionTransformer, patch_size=_patch, **_dims, **_options)


def image_size(name: str) -> int:
  """The input size a registered model was published at (its position embedding's):
  518 for DINOv2, 224 for the others."""
  name = canonical_name(name)
  return FAMILIES[name][3] if name in FAMILIES else 224


def list_models() -> list[str]:
  """Names accepted by `create_model`."""
  return sorted(_REGISTRY)


def canonical_name(name: str) -> str:
  """`B/16` -> `ViT-B_16`; registered names pass through."""
  match = re.fullmatch(r"([A-Za-z]+)/(\d+)", name)
  if match:
    return f"ViT-{match.group(1)}_{match.group(2)}"
  return name


def model_kwargs(name: str) -> dict[str, Any]:
  """The registered keyword arguments of `name` (a copy)."""
  name = canonical_name(name)
  if name not in _REGISTRY:
    raise ValueError(f"Unknown model {name!r}. Registered models: {', '.join(list_models())}.")
  return dict(_REGISTRY[name][1])


def create_model(name: str, num_classes: int | None = 1000, **overrides: Any) -> nn.Module:
  """Builds the linen module registered as `name`.

  Args:
    name: a registered name such as "ViT-B_16" (or "B/16"); see `list_models()`.
    num_classes: size of the zero-initialised head; None drops the head.
    **overrides: any field of the module (`classifier="gap"`, and for ViViT
      `variant="factorised_encoder"`, `embedding="frame"`) or of its
      `EncoderOptions`, flat (`dropout_rate=0.1`, `dtype=jnp.bfloat16`,
      `scan_layers=True`); or a whole `options=EncoderOptions(...)`.

  Returns:
    The module; `model.apply({"params": p}, images, train=False)` gives logits
    (videos [B, T, H, W, C] for ViViT).
  """
  name = canonical_name(name)
  kwargs = model_kwargs(name)
  module_cls = _REGISTRY[name][0]
  registered_options, kwargs = options_lib.split_options(kwargs)
  fields = {f.name for f in dataclasses.fields(module_cls)} - {"parent", "name"}
  valid = fields | set(options_lib.FIELDS)
  unknown = sorted(set(overrides) - valid)
  if unknown:
    raise TypeError(f"{module_cls.__name__} has no option(s) {unknown}; "
                    f"valid options: {sorted(valid)}.")
  option_values, overrides = options_lib.split_options(overrides)
  options = overrides.pop("options", options_lib.EncoderOptions(**registered_options)).replace(
      **option_values)
  kwargs.update(overrides)
  return module_cls(num_classes=num_classes, options=options, **kwargs)


# Option types as a command line parses them; any other annotation (Dtype, Sequence)
# is given as a string or an int (e.g. dtype="bfloat16", patch_size=16).
_SCALAR_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def _scalar_type(annotation: str) -> type:
  inner = re.sub(r"^(Optional|Union)\[(.*)\]$", r"\2", annotation.replace(" ", ""))
  first = inner.split(",")[0].split("|")[0]
  return _SCALAR_TYPES.get(first, str)


def option_types() -> dict[str, type]:
  """Every keyword `create_model` accepts for some registered model -> its scalar type.

  The module fields of every registered class (but num_classes and options) and the
  EncoderOptions fields; the driver's config declares one `model.*` key for each.
  """
  types: dict[str, type] = {}
  classes = {module_cls for module_cls, _ in _REGISTRY.values()}
  for cls in sorted(classes, key=lambda c: c.__name__):
    for f in dataclasses.fields(cls):
      if f.name not in ("parent", "name", "num_classes", "options"):
        types[f.name] = _scalar_type(str(f.type))
  for f in dataclasses.fields(options_lib.EncoderOptions):
    types[f.name] = _scalar_type(str(f.type))
  return types
