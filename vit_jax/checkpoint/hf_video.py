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
import json
import os
from collections.abc import Mapping
from typing import Any, Optional

from vit_jax import families
from vit_jax.checkpoint.errors import CheckpointError


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


def settings(config: Mapping[str, Any], model_type: str) -> dict[str, Any]:
  """config.json over the transformers config class's defaults of the fields read."""
  _, hf_type = families.hf_model_type(model_type)
  return dict(hf_type.config_defaults, **config)


def check_field(source: str, field: str, config_value: Any, weights_value: Any,
                what: str) -> None:
  """A config.json field that disagrees with the weights: a CheckpointError naming both."""
  if config_value != weights_value:
    raise CheckpointError(
        f"{source}: config.json says {field}={config_value!r}, the weights have "
        f"{weights_value!r} ({what}): the config.json belongs to another model; use the "
        "one saved with these weights.")


def read_weights(folder: str) -> tuple[dict[str, Any], str]:
  """The tensors of the folder's model.safetensors and its path."""
  from vit_jax.checkpoint import hf_model, safetensors_io  # noqa: PLC0415 (import cycle)

  weights = os.path.join(folder, hf_model.WEIGHTS_FILE)
  if not os.path.isfile(weights):
    raise CheckpointError(f"{folder}: no {hf_model.WEIGHTS_FILE}; a transformers video model "
                          "folder has config.json and model.safetensors (save_pretrained).")
  return safetensors_io.read_safetensors(weights), weights


def pair(value: Any) -> tuple[int, int]:
  """transformers' int-or-pair sizes (image_size, patch_size) as (height, width)."""
  if isinstance(value, (list, tuple)):
    return int(value[0]), int(value[1])
  return int(value), int(value)


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


def save_hf_video(params: Mapping[str, Any], model: Any, folder: str, *, num_frames: int,
                  image_size: Optional[int] = None) -> str:
  """Writes a ViViT (learned table, cls token) or VideoMAE (sincos1d table, mean pooling)
  `VideoTransformer` as a transformers folder (config.json + model.safetensors) that
  transformers' VivitForVideoClassification / VideoMAEForVideoClassification (or the bare
  models without a head) load, and `load_pretrained` reads back bit-exact.

  Args:
    num_frames: the clip length config.json states (ViViT: the one its table was made for).
    image_size: VideoMAE's frame size for config.json (ViViT's follows from its table);
      default 224.

  Returns:
    The path of the weights file. A model neither family can hold is refused by name.
  """
  import numpy as np  # noqa: PLC0415
  import safetensors.numpy  # noqa: PLC0415

  from vit_jax.checkpoint import hf_videomae, hf_vivit  # noqa: PLC0415 (they import this)

  params = _to_numpy(params)
  if getattr(model, "posemb", None) == "sincos1d":
    tensors, config = hf_videomae.to_hf(params, model, num_frames, image_size or 224)
  else:
    if image_size is not None:
      raise CheckpointError("image_size: a ViViT's frame size follows from its position "
                            "embedding; leave it out.")
    tensors, config = hf_vivit.to_hf(params, model, num_frames)
  os.makedirs(folder, exist_ok=True)
  weights = os.path.join(folder, "model.safetensors")
  safetensors.numpy.save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                              weights, metadata={"format": "pt"})
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(dict(config, torch_dtype="float32"), f, indent=2, sort_keys=True)
  return weights


def _to_numpy(params: Mapping[str, Any]) -> dict[str, Any]:
  import numpy as np  # noqa: PLC0415

  return {k: _to_numpy(v) if isinstance(v, Mapping) else np.asarray(v, np.float32)
          for k, v in params.items()}
