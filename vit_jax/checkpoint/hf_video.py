"""transformers video model folders (config.json + model.safetensors): one reader per family.

A video family's module in `vit_jax.families` names, per transformers `model_type`, the
reader module that turns its folder into a model and params
(`HfModelType(reader="vit_jax.checkpoint.<name>")`); that module defines

    def read(folder: str, config: Mapping[str, Any]) -> VideoRead

which checks config.json against the weights (a disagreement is a CheckpointError naming
the field), builds the module that reproduces the reference exactly, and converts the
tensors into its parameter tree. `load_pretrained` calls `read` through `read_folder` and
adds the clip preprocessing (video_preprocessor_config.json / preprocessor_config.json,
else the family's published defaults).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from typing import Any

from vit_jax import families


@dataclasses.dataclass(frozen=True)
class VideoRead:
  """What a video reader found in a transformers folder.

  Attributes:
    model: the module; `model.apply({"params": params}, clips [B, T, H, W, C])` gives the
      classifier's logits [B, classes], or the pooled features [B, D] without a head.
    params: its parameters (numpy leaves).
    family: the family's name (its published preprocessing is the default).
    num_frames: the frame count the checkpoint was trained with (config.json).
    input_size: (height, width) of its frames.
    left_out: keys of the file that are not part of the model (a pre-training decoder).
  """
  model: Any
  params: Mapping[str, Any]
  family: str
  num_frames: int
  input_size: tuple[int, int]
  left_out: tuple[str, ...] = ()


def reader_of(model_type: Any, source: str = "") -> Any:
  """The reader module of a video `model_type`, or None for an image model type."""
  for family in families.all_families():
    hf_type = family.hf.get(model_type) if isinstance(model_type, str) else None
    if hf_type is not None and hf_type.reader:
      return importlib.import_module(hf_type.reader)
  return None


def read_folder(folder: str, config: Mapping[str, Any]) -> VideoRead:
  """Reads a transformers video folder with its family's reader."""
  reader = reader_of(config.get("model_type"), folder)
  if reader is None:
    raise ValueError(f"{folder}: model_type {config.get('model_type')!r} is not a video "
                     "model type.")
  return reader.read(folder, config)
