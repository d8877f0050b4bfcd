"""Model registry: one call builds any registered model by name.

    model = create_model("ViT-B_16", num_classes=10, dropout_rate=0.1)

Names follow the released checkpoints (`ViT-B_16` = size B, patch 16); the
big_vision spelling `B/16` is accepted too. Sizes compose: every patch size of
a size shares the size's widths. Tiny sizes (`Mu`, `Nano`) exist for tests and
the CPU demos.

The later families that researchers fine-tune from (DeiT, DeiT III, DINOv2 (+ registers),
DINOv3, CLIP, SigLIP, MAE, EVA-02) are registered with their published sizes and
architecture options, each defined in its module of `vit_jax.families` (`FAMILIES` lists
them; docs/conventions.md 'Architecture options'):

    model = create_model("DINOv2-S_14-reg4", num_classes=None)   # 518 px: image_size(name)

Video models follow the ViViT paper: `ViViT-B_16x2` is size B with 16x16 patches
and 2-frame tubelets; pick the model with `variant` (default spatio_temporal):

    model = create_model("ViViT-B_16x2", num_classes=400, variant="factorised_encoder")

TimeSformer (`TimeSformer-B_16`) is the same video model with variant "divided_space_time",
VideoPrism (`VideoPrism-B_18`) with variant "factorised_encoder_tokens".
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import flax.linen as nn

from vit_jax import families
from vit_jax.families import videomae as videomae_family
from vit_jax.families import vit as vit_family
from vit_jax.families import vjepa2 as vjepa2_family
from vit_jax.models import options as options_lib
from vit_jax.models import vit, vivit

# (hidden_size, num_layers, mlp_dim, num_heads) of the ViT sizes; every size letter,
# the later families' too, is in families.SIZES.
VIT_SIZES = {k: v for k, v in families.SIZES.items() if k in vit_family.PATCHES}

# name -> (module class, keyword arguments)
_REGISTRY: dict[str, tuple[Callable[..., nn.Module], dict[str, Any]]] = {}


def register(name: str, module_cls: Callable[..., nn.Module], **kwargs: Any) -> None:
  """Registers `name` as `module_cls(**kwargs)`."""
  if name in _REGISTRY:
    raise ValueError(f"Model {name!r} is already registered.")
  _REGISTRY[name] = (module_cls, kwargs)


# ViViT-{size}_{patch}x{tubelet frames}; the paper's models are B/16x2, L/16x2, H/14x2.
# Mu/Nano with 2x2 patches share the patch size of ViT-Mu_2/Nano_2 (configs/vit_digits.py),
# so those image checkpoints inflate into them.
for _size, _patch, _tubelet in [("Mu", 2, 1), ("Mu", 2, 2), ("Mu", 4, 1), ("Mu", 4, 2),
                                ("Nano", 2, 1), ("Nano", 2, 2), ("Nano", 4, 1), ("Nano", 4, 2),
                                ("S", 16, 2), ("B", 16, 2), ("L", 16, 2), ("H", 14, 2)]:
  register(f"ViViT-{_size}_{_patch}x{_tubelet}", vivit.VideoTransformer,
           patch_size=_patch, tubelet_size=_tubelet, **VIT_SIZES[_size])


# VideoMAE-{size}_{patch}x{tubelet} (transformers' videomae; families/videomae.py): the
# paper's S/B/L/H with 16x16 patches and VideoMAE V2's giant with 14x14, all 2-frame
# tubelets, the fixed sinusoidal table, mean pooling with fc_norm, q/v biases, erf GELU.
for _size, _patch, _dims in [("Mu", 4, None), ("Nano", 4, None), ("S", 16, None),
                             ("B", 16, None), ("L", 16, None), ("H", 16, None),
                             ("g", 14, videomae_family.GIANT)]:
  register(f"VideoMAE{'v2' if _size == 'g' else ''}-{_size}_{_patch}x2", vivit.VideoTransformer,
           patch_size=_patch, tubelet_size=2, **(_dims or families.SIZES[_size]),
           **videomae_family.OPTIONS)

# TimeSformer-{size}_{patch} (vit_jax.families.timesformer): divided space-time attention
# on frame embeddings, erf GELU as the PyTorch release; the published base, HR and L models
# are all ViT-B sized (they differ in frames and resolution).
for _size, _patch in [("Mu", 4), ("Nano", 4), ("B", 16)]:
  register(f"TimeSformer-{_size}_{_patch}", vivit.VideoTransformer, patch_size=_patch,
           tubelet_size=1, variant=vivit.DIVIDED, embedding="frame", classifier="token",
           gelu_approximate=False, **VIT_SIZES[_size])

# VideoPrism-{size}_{patch} (vit_jax.families.videoprism): 18x18 patches of 288 px frames,
# a spatial encoder of the size's depth, then 4 temporal layers (1 for the tiny Mu), soft-
# capped attention logits (50), VideoPrism's attention pooling, erf GELU.
for _size, _patch, _temporal in [("Mu", 4, 1), ("B", 18, 4), ("L", 18, 4)]:
  register(f"VideoPrism-{_size}_{_patch}", vivit.VideoTransformer, patch_size=_patch,
           tubelet_size=1, variant=vivit.FACTORISED_TOKENS, embedding="frame", classifier="map",
           temporal_encoder_layers=_temporal, attention_logit_cap=50.0, gelu_approximate=False,
           posemb_resize="bilinear_antialias", **VIT_SIZES[_size])

# V-JEPA 2 (families/vjepa2.py): VJEPA2-{size}_16x2 at the published sizes (L, H, g), and
# Mu/Nano with 4x4 patches for tests; the classifiers' attentive pooler is their head.
for _size, _patch in [("Mu", 4), ("Nano", 4), ("L", 16), ("H", 16), ("g", 16)]:
  register(f"VJEPA2-{_size}_{_patch}x2", vivit.VideoTransformer, patch_size=_patch,
           tubelet_size=2, **vjepa2_family.SIZES.get(_size, families.SIZES[_size]),
           **vjepa2_family.ARCHITECTURE)


def register_family(family: families.Family) -> None:
  """Registers every model of `family` (families.register calls this for a new one)."""
  for name, model in family.models.items():
    register(name, vit.VisionTransformer, **model.kwargs())


def unregister_family(family: families.Family) -> None:
  for name in family.models:
    _REGISTRY.pop(name, None)


for _family in families.all_families():
  register_family(_family)

# The later families' registered models: name -> (size, patch, options, published image
# size); parameter counts: tests/models/test_registry.py.
FAMILIES = {name: (m.size, m.patch, dict(m.options), m.image_size)
            for f in families.all_families() if f.name != "vit" for name, m in f.models.items()}


def image_size(name: str) -> int:
  """The input size a registered model was published at (its position embedding's):
  518 for DINOv2, 224 for the others."""
  family = families.of_model(canonical_name(name))
  return family.models[canonical_name(name)].image_size if family else 224


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
