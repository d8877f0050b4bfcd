"""Model families: one module each, holding everything known about the family.

    from vit_jax import families
    families.get("dinov2").models["DINOv2-S_14"]          # size, patch, options, image size
    family, entry, sizes = families.timm_architecture("vit_small_patch14_dinov2")
    family, hf_type = families.hf_model_type("dinov2")

Each module (the image families `vit`, `deit`, `deit3`, `dinov2`, `dinov3`, `clip`,
`siglip`, `mae`, `eva02`, `siglip2_naflex`, `pe`, `aimv2`, `so150m`, `rope_vit`, `ijepa`; the
video families `vivit_hf`, `videomae`, `timesformer`, `videoprism`, `vjepa2`)
defines one `Family` (family.py): registered names and sizes with their options, the
published preprocessing, the timm architecture names (exact patterns) and transformers
`model_type`s it answers to. The registry (`vit_jax.models.registry`), the checkpoint
readers, `load_pretrained`'s preprocessing defaults and `save_hf` read these tables and
state no family fact of their own. A new family is one module here (listed in `_MODULES`),
or, outside the package, `families.register(FAMILY)`.
"""

from __future__ import annotations

import importlib
from typing import Any, Optional

from vit_jax.families.family import (
    ACTIVATIONS,
    ARCHITECTURE_ONLY,
    HF_POSEMB_RESIZE,
    SIZES,
    TIMM_POSEMB_RESIZE,
    TIMM_SIZE_WORDS,
    Family,
    HfModelType,
    Model,
    Preprocessing,
    TimmArchitectures,
    activation_name,
    activation_options,
)

_MODULES = ("vit", "deit", "deit3", "dinov2", "dinov3", "clip", "siglip", "mae", "eva02",
            "vivit_hf", "videomae", "timesformer", "videoprism", "vjepa2",
            "siglip2_naflex", "pe", "aimv2", "so150m", "rope_vit", "ijepa")
_FAMILIES: dict[str, Family] = {}


def _add(family: Family) -> None:
  if family.name in _FAMILIES:
    raise ValueError(f"Family {family.name!r} is already registered.")
  taken = {name for f in _FAMILIES.values() for name in f.models} & set(family.models)
  types = {t for f in _FAMILIES.values() for t in f.hf} & set(family.hf)
  if taken or types:
    raise ValueError(f"Family {family.name!r} redefines {sorted(taken | types)}.")
  _FAMILIES[family.name] = family


for _module in _MODULES:
  _add(importlib.import_module(f"vit_jax.families.{_module}").FAMILY)


def register(family: Family) -> None:
  """Adds a family defined outside this package (its models join the registry)."""
  from vit_jax.models import registry  # noqa: PLC0415 (the registry imports this package)

  _add(family)
  registry.register_family(family)


def unregister(name: str) -> None:
  """Removes a family added with `register` (and its registered models)."""
  from vit_jax.models import registry  # noqa: PLC0415

  family = _FAMILIES.pop(name)
  registry.unregister_family(family)


def all_families() -> list[Family]:
  return list(_FAMILIES.values())


def get(name: str) -> Family:
  if name not in _FAMILIES:
    raise KeyError(f"Unknown family {name!r}; known: {', '.join(_FAMILIES)}.")
  return _FAMILIES[name]


def of_model(name: str) -> Optional[Family]:
  """The family of a registered model name, or None."""
  return next((f for f in _FAMILIES.values() if name in f.models), None)


def timm_names() -> str:
  """The timm architecture patterns of every family, for error messages."""
  return "; ".join(f"{f.name}: {' | '.join(t.pattern for t in f.timm)}"
                   for f in _FAMILIES.values() if f.timm)


def timm_architecture(architecture: str, source: str = "") -> tuple[
    Family, TimmArchitectures, dict[str, int]]:
  """The family, timm entry and published sizes of a timm architecture name.

  `architecture` may carry a pretrained tag ("vit_base_patch16_224.mae"); an entry that
  asks for that tag wins over an untagged one. An architecture no family names exactly
  is refused (CheckpointError naming it and the known families): a model this project
  cannot reproduce is never built approximately.

  Returns:
    (family, entry, sizes: hidden_size, num_layers, num_heads of timm's size word).
  """
  from vit_jax.errors import CheckpointError  # noqa: PLC0415

  name, _, tag = architecture.partition(".")
  found = [(f, t, m) for f in _FAMILIES.values() for t in f.timm if (m := t.match(name, tag))]
  found.sort(key=lambda x: x[1].tag is None)  # tagged entries first
  if not found:
    raise CheckpointError(
        f"{source + ': ' if source else ''}timm architecture {architecture!r} is not one this "
        f"project builds (it cannot tell that architecture's layers from a plain ViT's, so "
        f"it does not guess). Known families and their timm names: {timm_names()}.")
  family, entry, match = found[0]
  word = match.group("size")
  if entry.dims and word in entry.dims:
    return family, entry, dict(entry.dims[word])
  size = entry.size_words[word]
  dims = {k: v for k, v in SIZES[size].items() if k != "mlp_dim"}
  return family, entry, dims


def hf_model_type(model_type: Any, source: str = "") -> tuple[Family, HfModelType]:
  """The family and key layout of a transformers `model_type` (CheckpointError if none)."""
  from vit_jax.errors import CheckpointError  # noqa: PLC0415

  for family in _FAMILIES.values():
    if model_type in family.hf:
      return family, family.hf[model_type]
  known = [t for f in _FAMILIES.values() for t in f.hf]
  raise CheckpointError(f"{source}: model_type {model_type!r} is not one this project "
                        f"reads; supported: {', '.join(known)}.")


def openclip_family() -> Family:
  """The family OpenCLIP image towers belong to (Family.openclip)."""
  return next(f for f in _FAMILIES.values() if f.openclip is not None)


__all__ = [
    "ACTIVATIONS", "ARCHITECTURE_ONLY", "HF_POSEMB_RESIZE", "SIZES", "TIMM_POSEMB_RESIZE", "TIMM_SIZE_WORDS", "Family", "HfModelType",
    "Model", "Preprocessing", "TimmArchitectures", "activation_name", "activation_options",
    "all_families", "get", "hf_model_type", "of_model", "openclip_family", "register",
    "timm_architecture", "timm_names", "unregister",
]
