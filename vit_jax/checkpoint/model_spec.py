"""`ModelSpec`: the model a checkpoint file holds, and how to build it."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from vit_jax.models import options as options_lib
from vit_jax.models import vit


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """The model a checkpoint holds (timm_model.read_timm, hf_model.read_hf).

  Attributes:
    architecture: the timm architecture name or the transformers class
      (`config.json`'s `architectures[0]`), or None for a bare timm file.
    fields: `vit.VisionTransformer` fields (sizes, patch, classifier, posemb, head).
    options: its EncoderOptions.
    key_names: the module family of the file's key names: safetensors_io.TIMM_NAMES for
      timm files (to write them back), "hf" for transformers directories.
    pretrained_cfg: timm config.json's `pretrained_cfg` (preprocessing), or {}.
    family: the `vit_jax.families` family the architecture belongs to, or None when
      only the keys were read (a bare timm file).
  """
  architecture: Optional[str]
  fields: dict[str, Any]
  options: options_lib.EncoderOptions
  key_names: str
  pretrained_cfg: dict[str, Any] = dataclasses.field(default_factory=dict)
  family: Optional[str] = None

  def model(self, **overrides: Any) -> vit.VisionTransformer:
    """The VisionTransformer (fields or option fields changed by `overrides`)."""
    option_changes, overrides = options_lib.split_options(overrides)
    return vit.VisionTransformer(options=self.options.replace(**option_changes),
                                 **dict(self.fields, **overrides))
