"""RandAugment policies: which ops, how many, at what magnitude (no TensorFlow needed).

`vit_jax.data.randaugment` applies a Policy; config validation builds one from the
`data.augment` string to check it. The presets reproduce big_vision's `randaug(n, m)`
and timm's `rand-m9-mstd0.5-inc1` strings (see randaugment's docstring and
docs/augmentation.md).
"""

from __future__ import annotations

import dataclasses
import re

MAX_LEVEL = 10.0

BIG_VISION_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize",
                  "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY",
                  "TranslateX", "TranslateY", "Cutout", "SolarizeAdd")
TIMM_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize",
            "SolarizeAdd", "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY",
            "TranslateXRel", "TranslateYRel")
TIMM_INCREASING_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
                       "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing",
                       "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing",
                       "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")

ALL_OPS = tuple(dict.fromkeys(BIG_VISION_OPS + TIMM_OPS + TIMM_INCREASING_OPS))


@dataclasses.dataclass(frozen=True)
class Policy:
  """How one RandAugment draws (see the module docstring for the two presets).

  Attributes:
    ops: op names (from ALL_OPS), chosen uniformly with replacement per layer.
    num_layers: ops applied in sequence.
    magnitude: m, on the 0..10 scale (MAX_LEVEL); may exceed 10 if magnitude_max allows.
    prob: probability that a chosen op is applied.
    magnitude_std: > 0: per application m ~ N(magnitude, magnitude_std); inf: U(0, m).
    magnitude_max: the noisy magnitude is clipped to [0, magnitude_max]; None: no clip.
    fill: value of pixels uncovered by geometric ops and cutout (one or per channel).
    translate_pixels: TranslateX/Y at m = 10, in pixels (big_vision: 100).
    translate_fraction: TranslateX/YRel at m = 10, a fraction of the side (timm: 0.45).
    cutout_pixels: Cutout's half side at m = 10 (big_vision: 40).
    solarize_add_max: cap on SolarizeAdd's addition (timm: 128; big_vision: none).
  """
  ops: tuple[str, ...]
  num_layers: int = 2
  magnitude: float = 10.0
  prob: float = 1.0
  magnitude_std: float = 0.0
  magnitude_max: float | None = None
  fill: float | tuple[float, ...] = 128
  translate_pixels: float = 100.0
  translate_fraction: float = 0.45
  cutout_pixels: float = 40.0
  solarize_add_max: float | None = None

  def __post_init__(self):
    unknown = [op for op in self.ops if op not in ALL_OPS]
    if unknown or not self.ops:
      raise ValueError(f"RandAugment ops {unknown or '()'}: use names from {ALL_OPS}.")


def big_vision_policy(num_layers: int = 2, magnitude: float = 10.0) -> Policy:
  """big_vision's `randaug(num_layers, magnitude)`."""
  return Policy(ops=BIG_VISION_OPS, num_layers=num_layers, magnitude=magnitude)


def timm_policy(config: str, fill: float | tuple[float, ...] = 128) -> Policy:
  """timm's `rand_augment_transform(config)`: "rand-m9-mstd0.5-inc1" and the like.

  Sections after "rand": m (magnitude, int), n (layers), p (probability), mstd
  (magnitude noise; > 100 means uniform), mmax (magnitude clip), inc (1: the
  increasing op set). The transform-set section ("t...") is not supported. timm reads
  "inc0" as increasing too (bool("0")); here inc0 means the plain set.
  `fill`: timm fills with the dataset mean in pixels, (124, 116, 104) for ImageNet.
  """
  parts = config.split("-")
  if parts[0] != "rand":
    raise ValueError(f"timm RandAugment config {config!r} must start with 'rand-'.")
  settings = {"m": 10.0, "n": 2, "p": 0.5, "mstd": 0.0, "mmax": None, "inc": 0}
  for part in parts[1:]:
    match = re.fullmatch(r"(mstd|mmax|inc|m|n|p)(\d+(?:\.\d+)?)", part)
    if not match:
      raise ValueError(f"timm RandAugment config {config!r}: section {part!r} is not one of "
                       "m<int>, n<int>, p<float>, mstd<float>, mmax<int>, inc<0|1>.")
    key, value = match.groups()
    settings[key] = float(value)
  mstd = settings["mstd"]
  return Policy(
      ops=TIMM_INCREASING_OPS if settings["inc"] else TIMM_OPS,
      num_layers=int(settings["n"]), magnitude=int(settings["m"]), prob=settings["p"],
      magnitude_std=float("inf") if mstd > 100 else mstd,
      magnitude_max=settings["mmax"] if settings["mmax"] is not None else MAX_LEVEL,
      fill=fill, solarize_add_max=128.0)


# Scenic's video RandAugment (scenic/dataset_lib/video_ops.py
# distort_image_with_randaugment): no Rotate/Shear/Translate, and an op index drawn
# from len(ops) + 1 values whose last is "no op" (tf.switch_case's default).
SCENIC_VIDEO_OPS = ("AutoContrast", "Equalize", "Invert", "Posterize", "Solarize", "Color",
                    "Contrast", "Brightness", "Sharpness", "Cutout", "SolarizeAdd")


def scenic_video_policy(num_layers: int = 2, magnitude: float = 20.0) -> Policy:
  """Scenic's ViViT RandAugment for clips (SSv2: (2, 20); Epic-Kitchens: (2, 15)).

  Scenic draws one of 11 ops or no op uniformly (1 in 12) per layer and applies it at
  `magnitude`: the same as choosing one of the 11 with probability 11/12. Its big_vision
  magnitude mappings (Cutout half side 40 px * m / 10, fill 128).
  """
  return Policy(ops=SCENIC_VIDEO_OPS, num_layers=num_layers, magnitude=magnitude,
                prob=len(SCENIC_VIDEO_OPS) / (len(SCENIC_VIDEO_OPS) + 1))
