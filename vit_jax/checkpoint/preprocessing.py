"""The input a pretrained checkpoint expects: normalisation, size, crop and interpolation.

timm keeps this in each pretrained config (`pretrained_cfg`: mean, std, input_size,
interpolation, crop_pct), written into the Hub `config.json` by `save_for_hf`;
transformers in `preprocessor_config.json` (image_mean, image_std, size, crop_size,
resample); OpenCLIP in `open_clip_config.json` (`preprocess_cfg`). A file without any of
them gets its family's published default (`family_default`, from the family's module in
`vit_jax.families`).

`Preprocessing.data_overrides()` turns one into `config.data` keys (image_size, mean/std
or value_range, resize_small; for video checkpoints num_frames and stride), so that
training, evaluation and `predict` feed the network what it was trained on. transformers
video models keep theirs in `video_preprocessor_config.json` or `preprocessor_config.json`
(`from_hf_video_processor`: rescale and ViViT's offset folded into mean / std).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from typing import Any

from vit_jax import families
from vit_jax.checkpoint.errors import CheckpointError
from vit_jax.families.family import (  # noqa: F401 (the normalisations, for callers)
  HALF,
  IMAGENET_MEAN,
  IMAGENET_STD,
  OPENAI_CLIP_MEAN,
  OPENAI_CLIP_STD,
)

# PIL resampling codes as transformers stores them (`resample`).
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """What a checkpoint's network expects at its input.

  Attributes:
    mean, std: per channel, for pixels in [0, 1] (timm's convention).
    input_size: (height, width) of the network input.
    interpolation: resize filter of the reference ("bicubic", "bilinear", ...).
    crop_pct: evaluation resizes the shorter side to input / crop_pct, then centre-crops.
    source: where these values came from (a file, or a family default).
    num_frames, frame_stride: video checkpoints: the clip, `num_frames` frames taken every
      `frame_stride` frames (config.data num_frames / stride); None for images.
    max_num_patches: a native-resolution (NaFlex) model's patch budget: each image is
      resized, keeping its aspect ratio, to at most this many patches; `input_size` is
      then the square of that budget. None for fixed-size models.
  """
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  input_size: tuple[int, int]
  interpolation: str = "bicubic"
  crop_pct: float = 0.875
  source: str = ""
  num_frames: int | None = None
  frame_stride: int | None = None
  max_num_patches: int | None = None

  def data_overrides(self, image_size: tuple[int, int] | None = None) -> dict[str, Any]:
    """`config.data` keys that reproduce this preprocessing.

    `image_size`: the input size to train at instead of the checkpoint's (its crop
    fraction is kept: resize_small follows the size).
    """
    size = tuple(image_size or self.input_size)
    out: dict[str, Any] = {"image_size": size}
    if self.mean == HALF and self.std == HALF:
      out.update(value_range=(-1.0, 1.0), mean=None, std=None)
    else:
      out.update(value_range=None, mean=tuple(self.mean), std=tuple(self.std))
    out["resize_small"] = (None if self.crop_pct >= 1.0
                           else int(round(min(size) / self.crop_pct)))
    # The pipeline has two filters (data.resize_method); anything but bicubic is bilinear.
    out["resize_method"] = "bicubic" if self.interpolation == "bicubic" else "bilinear"
    if self.num_frames is not None:
      out["num_frames"] = self.num_frames
    if self.frame_stride is not None:
      out["stride"] = self.frame_stride
    return out


def from_data_config(data: Mapping[str, Any], source: str = "") -> Preprocessing:
  """The Preprocessing of `config.data` keys (a run's saved evaluation preprocessing)."""
  size = data["image_size"]
  size = (int(size), int(size)) if isinstance(size, (int, float)) else tuple(int(s) for s in size)
  if data.get("mean") is not None:
    mean, std = _triple(data["mean"], "mean", source), _triple(data["std"], "std", source)
  else:  # pixels x in [0, 1] mapped to lo + (hi - lo) x = (x - mean) / std
    lo, hi = data.get("value_range") or (0.0, 1.0)
    mean, std = (-lo / (hi - lo),) * 3, (1.0 / (hi - lo),) * 3
  crop_pct = min(size) / data["resize_small"] if data.get("resize_small") else 1.0
  return Preprocessing(tuple(float(m) for m in mean), tuple(float(v) for v in std), size,
                       data.get("resize_method", "bilinear"), crop_pct, source,
                       data.get("num_frames"), data.get("stride"))


def family_names() -> list[str]:
  """The families with a default preprocessing (every family of `vit_jax.families`)."""
  return [f.name for f in families.all_families()]


def family_default(family: str, input_size: tuple[int, int]) -> Preprocessing:
  """The published preprocessing of `family` (its module in vit_jax.families) at a size."""
  if family not in family_names():
    raise CheckpointError(f"no default preprocessing for family {family!r}; known: "
                          f"{sorted(family_names())}.")
  d = families.get(family).preprocessing
  return Preprocessing(tuple(d.mean), tuple(d.std), tuple(input_size), d.interpolation,
                       d.crop_pct, f"{family} default", d.num_frames, d.frame_stride,
                       d.max_num_patches)


def _triple(value, what: str, source: str) -> tuple[float, float, float]:
  if isinstance(value, (int, float)):
    value = [value] * 3
  if not isinstance(value, (list, tuple)) or len(value) != 3:
    raise CheckpointError(f"{source}: {what}={value!r}, expected 3 per-channel values.")
  return tuple(float(v) for v in value)


def from_timm_config(config: Mapping[str, Any], source: str = "config.json"
                     ) -> Preprocessing | None:
  """timm's Hub config.json (`pretrained_cfg`), or None when it has none."""
  cfg = config.get("pretrained_cfg")
  if not cfg:
    return None
  size = cfg.get("input_size") or cfg.get("test_input_size")
  if not size or len(size) != 3:
    raise CheckpointError(f"{source}: pretrained_cfg.input_size={size!r}, expected [3, H, W].")
  return Preprocessing(_triple(cfg.get("mean", IMAGENET_MEAN), "mean", source),
                       _triple(cfg.get("std", IMAGENET_STD), "std", source),
                       (int(size[1]), int(size[2])), cfg.get("interpolation", "bicubic"),
                       float(cfg.get("crop_pct", 0.875)), f"{source} (pretrained_cfg)")


def from_hf_preprocessor(config: Mapping[str, Any], source: str = "preprocessor_config.json"
                         ) -> Preprocessing:
  """transformers' image processor settings."""
  size, crop = config.get("size") or {}, config.get("crop_size")
  if isinstance(size, int):
    size = {"shortest_edge": size}
  if isinstance(crop, int):
    crop = {"height": crop, "width": crop}
  if config.get("do_center_crop") and crop:
    input_size = (int(crop["height"]), int(crop["width"]))
    edge = size.get("shortest_edge") or min(size.get("height", 0), size.get("width", 0))
    crop_pct = min(input_size) / edge if edge else 1.0
  elif "height" in size and "width" in size:
    input_size, crop_pct = (int(size["height"]), int(size["width"])), 1.0
  elif "shortest_edge" in size:
    input_size, crop_pct = (int(size["shortest_edge"]),) * 2, 1.0
  else:
    raise CheckpointError(f"{source}: cannot tell the input size from size={size!r}, "
                          f"crop_size={crop!r}.")
  resample = config.get("resample", 3)
  return Preprocessing(_triple(config.get("image_mean", IMAGENET_MEAN), "image_mean", source),
                       _triple(config.get("image_std", IMAGENET_STD), "image_std", source),
                       input_size, _PIL_RESAMPLE.get(resample, str(resample)), crop_pct,
                       source)


def from_hf_video_processor(config: Mapping[str, Any], default: Preprocessing,
                            num_frames: int, source: str) -> Preprocessing:
  """transformers' video / image processor of a video model, as our [0, 1] mean and std.

  transformers computes ((p * rescale_factor - offset) - image_mean) / image_std from
  pixels p in [0, 255] (`offset`: ViViT's processor subtracts 1 after rescaling; without
  do_rescale / do_normalize those steps are skipped). With x = p / 255 that is
  (x - mean) / std for mean = (offset + image_mean) / (255 rescale_factor) and
  std = image_std / (255 rescale_factor), what config.data mean / std apply. The frame
  count is config.json's `num_frames`; the frame stride (not in transformers' files) the
  family's.
  """
  found = from_hf_preprocessor(config, source)
  factor = 255.0 * float(config.get("rescale_factor", 1 / 255)) if config.get(
      "do_rescale", True) else 1.0
  offset = 1.0 if config.get("do_rescale", True) and config.get("offset", False) else 0.0
  if config.get("do_normalize", True):
    mean = _triple(config.get("image_mean", IMAGENET_MEAN), "image_mean", source)
    std = _triple(config.get("image_std", IMAGENET_STD), "image_std", source)
  else:
    mean, std = (0.0,) * 3, (1.0,) * 3
  if not factor > 0 or not all(v > 0 for v in std):
    raise CheckpointError(f"{source}: rescale_factor and image_std must be > 0.")
  mean = tuple((offset + m) / factor for m in mean)
  std = tuple(v / factor for v in std)
  return dataclasses.replace(found, mean=mean, std=std, num_frames=num_frames,
                             frame_stride=default.frame_stride)
def from_naflex_processor(config: Mapping[str, Any], patch_size: int,
                          source: str = "preprocessor_config.json") -> Preprocessing:
  """A NaFlex image processor's settings (transformers Siglip2ImageProcessor): the patch
  budget `max_num_patches` in place of a size; `input_size` is the budget's square."""
  budget = config.get("max_num_patches")
  if not isinstance(budget, int) or budget < 1:
    raise CheckpointError(
        f"{source}: a NaFlex image processor config needs max_num_patches (the patch budget "
        f"each image is resized to), got {budget!r}: add e.g. \"max_num_patches\": 256 "
        "(SigLIP 2's default).")
  side = math.isqrt(budget) * patch_size
  resample = config.get("resample", 2)
  return Preprocessing(_triple(config.get("image_mean", HALF), "image_mean", source),
                       _triple(config.get("image_std", HALF), "image_std", source),
                       (side, side), _PIL_RESAMPLE.get(resample, str(resample)), 1.0, source,
                       max_num_patches=budget)


def from_openclip_config(config: Mapping[str, Any], input_size: tuple[int, int],
                         source: str = "open_clip_config.json") -> Preprocessing:
  cfg = config.get("preprocess_cfg") or {}
  return Preprocessing(_triple(cfg.get("mean", OPENAI_CLIP_MEAN), "mean", source),
                       _triple(cfg.get("std", OPENAI_CLIP_STD), "std", source),
                       tuple(input_size), cfg.get("interpolation", "bicubic"), 1.0, source)


def read_json(path: str) -> dict[str, Any] | None:
  """A JSON file, or None when it does not exist; a broken one is an error naming it."""
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{path}: not valid JSON ({e}).") from e
