"""`data.augment`: the training augmentation chain as named ops with arguments.

    config.data.augment = "randaug(2, 10)"
    config.data.augment = "timm_randaug('rand-m9-mstd0.5-inc1')|random_erasing(0.25)"
    config.data.augment = ("rotate(10, fill=0)", "translate(0.125, fill=0)")  # a list works too

Each item is a call with literal arguments (big_vision's pp-string shape); items run
in order on every training example after `train_crop` and `flip`, which keep their own
keys (one home each). Ops see pixels in [0, 255] before normalisation, except
`random_erasing`, which, as in timm and DeiT, erases the normalised image with N(0, 1)
noise and so must be the last item. Evaluation never augments.

This module needs no TensorFlow: `parse` runs at config validation, so a bad name or
argument fails at start-up with a message that lists the valid ones. The ops
themselves are `vit_jax.data.augment` and `vit_jax.data.randaugment`; docs/augmentation.md
lists their magnitude mappings.
"""

from __future__ import annotations

import ast
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

from vit_jax.data import randaugment_policy
from vit_jax.errors import ConfigError

# The concepts with a key of their own in config.data, which `augment` must not repeat.
_OWN_KEYS = {"inception_crop": "data.train_crop='inception'",
             "random_crop": "data.train_crop='random_crop'",
             "resize": "data.train_crop='resize'", "flip_lr": "data.flip=True",
             "flip": "data.flip=True"}


def _check(ok: bool, message: str) -> None:
  if not ok:
    raise ValueError(message)


def _fill(fill: Any) -> float | tuple[float, ...]:
  values = fill if isinstance(fill, (tuple, list)) else (fill,)
  _check(len(values) in (1, 3) and all(isinstance(v, (int, float)) and 0 <= v <= 255
                                       for v in values),
         f"fill={fill!r} must be a pixel value in [0, 255] or three of them")
  return tuple(float(v) for v in values) if len(values) == 3 else float(values[0])


def _range(name: str, value: Any, lo: float, hi: float) -> tuple[float, float]:
  _check(isinstance(value, (tuple, list)) and len(value) == 2
         and all(isinstance(v, (int, float)) for v in value) and lo <= value[0] <= value[1] <= hi,
         f"{name}={value!r} must be a pair (low, high) with {lo} <= low <= high <= {hi}")
  return float(value[0]), float(value[1])


def _prob(prob: Any) -> float:
  _check(isinstance(prob, (int, float)) and 0 <= prob <= 1, f"prob={prob!r} must be in [0, 1]")
  return float(prob)


# Each op's signature is its config syntax: these functions check and normalise the
# arguments and return the keyword arguments that preprocess hands to the op.


def randaug(num_layers: int = 2, magnitude: float = 10) -> dict[str, Any]:
  """big_vision's RandAugment: num_layers ops, each at magnitude (of 10), always applied."""
  _check(isinstance(num_layers, int) and num_layers >= 1, f"num_layers={num_layers!r} must be >= 1")
  _check(isinstance(magnitude, (int, float)) and 0 <= magnitude <= 30,
         f"magnitude={magnitude!r} must be in [0, 30] (10 is the scale's top)")
  return {"num_layers": num_layers, "magnitude": float(magnitude)}


def timm_randaug(config: str = "rand-m9-mstd0.5-inc1", fill: Any = 128) -> dict[str, Any]:
  """timm's RandAugment string (DeiT: 'rand-m9-mstd0.5-inc1'); fill: timm uses the
  dataset mean in pixels, (124, 116, 104) for ImageNet."""
  _check(isinstance(config, str), f"config={config!r} must be a string like 'rand-m9-mstd0.5'")
  randaugment_policy.timm_policy(config)
  return {"config": config, "fill": _fill(fill)}


def rotate(max_degrees: float = 10, fill: Any = 128) -> dict[str, Any]:
  """Rotation by an angle uniform in [-max_degrees, max_degrees]."""
  _check(isinstance(max_degrees, (int, float)) and 0 <= max_degrees <= 180,
         f"max_degrees={max_degrees!r} must be in [0, 180]")
  return {"max_degrees": float(max_degrees), "fill": _fill(fill)}


def translate(max_fraction: float = 0.1, fill: Any = 128) -> dict[str, Any]:
  """Shift by up to max_fraction of the width and height (each uniform, sub-pixel)."""
  _check(isinstance(max_fraction, (int, float)) and 0 <= max_fraction < 1,
         f"max_fraction={max_fraction!r} must be in [0, 1)")
  return {"max_fraction": float(max_fraction), "fill": _fill(fill)}


def color_jitter(brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4,
                 hue: float = 0.0, prob: float = 1.0) -> dict[str, Any]:
  """torchvision ColorJitter(brightness, contrast, saturation, hue), applied with prob."""
  for name, value, top in (("brightness", brightness, math.inf), ("contrast", contrast, math.inf),
                           ("saturation", saturation, math.inf), ("hue", hue, 0.5)):
    _check(isinstance(value, (int, float)) and 0 <= value <= top,
           f"{name}={value!r} must be in [0, {top}]")
  return {"brightness": float(brightness), "contrast": float(contrast),
          "saturation": float(saturation), "hue": float(hue), "prob": _prob(prob)}


def three_augment(jitter: float = 0.3) -> dict[str, Any]:
  """DeiT III: one of grayscale / solarize / Gaussian blur, then colour jitter(jitter)."""
  _check(isinstance(jitter, (int, float)) and jitter >= 0, f"jitter={jitter!r} must be >= 0")
  return {"jitter": float(jitter)}


def random_erasing(prob: float = 0.25, area: Sequence[float] = (0.02, 1 / 3),
                   aspect: Sequence[float] = (0.3, 1 / 0.3), mode: str = "pixel") -> dict[str, Any]:
  """timm RandomErasing on the normalised image (DeiT: prob 0.25, mode 'pixel')."""
  _check(mode in ("pixel", "rand", "const"), f"mode={mode!r} must be 'pixel', 'rand' or 'const'")
  area = _range("area", area, 0.0, 1.0)
  aspect = _range("aspect", aspect, 1e-3, 1e3)
  _check(area[1] > 0 and aspect[0] > 0, "area and aspect must be positive")
  return {"prob": _prob(prob), "area": area, "aspect": aspect, "mode": mode}


# ----------------------------------------------------------------------------------------
# Video recipes (ViViT / Scenic / DMVR); on a clip every frame gets the same draws.
# ----------------------------------------------------------------------------------------


def video_randaug(num_layers: int = 2, magnitude: float = 20) -> dict[str, Any]:
  """Scenic's video RandAugment (ViViT SSv2: (2, 20), Epic-Kitchens: (2, 15)): num_layers
  picks from 11 photometric ops and Cutout, or none, at magnitude (of 10), one draw per clip."""
  randaug(num_layers, magnitude)
  return {"num_layers": num_layers, "magnitude": float(magnitude)}


def dmvr_color(prob: float = 0.8, drop_prob: float = 0.1) -> dict[str, Any]:
  """DMVR's colour augmentation (brightness, saturation, contrast, hue) with prob, then
  grayscale with drop_prob: the ViViT Kinetics recipe (0.8, 0.1)."""
  return {"prob": _prob(prob), "drop_prob": _prob(drop_prob)}


OPS: dict[str, Callable[..., dict[str, Any]]] = {
    f.__name__: f for f in (randaug, timm_randaug, rotate, translate, color_jitter,
                            three_augment, random_erasing, video_randaug, dmvr_color)}
# Ops applied to the normalised image, after every pixel op.
POST_NORMALIZE = ("random_erasing",)


def _signature(name: str) -> str:
  """'randaug(num_layers=2, magnitude=10)': the op's arguments and their defaults."""

  def short(value):
    if isinstance(value, float):
      return f"{value:.4g}"
    if isinstance(value, tuple):
      return "(" + ", ".join(short(v) for v in value) + ")"
    return repr(value)

  params = inspect.signature(OPS[name]).parameters.values()
  return f"{name}(" + ", ".join(f"{p.name}={short(p.default)}" for p in params) + ")"


def _items(augment: str | Sequence[str]) -> list[str]:
  if isinstance(augment, str):
    return [item.strip() for item in augment.split("|") if item.strip()]
  if isinstance(augment, (tuple, list)) and all(isinstance(a, str) for a in augment):
    return [item.strip() for a in augment for item in a.split("|") if item.strip()]
  raise ConfigError(f"data.augment={augment!r}: use a string like 'randaug(2, 10)|"
                    "random_erasing(0.25)' or a list of such items.")


def parse(augment: str | Sequence[str] | None) -> tuple[tuple[str, dict[str, Any]], ...]:
  """`data.augment` -> ((op name, keyword arguments), ...), checked; ConfigError if bad."""
  if not augment:
    return ()
  ops = []
  for item in _items(augment):
    try:
      call = ast.parse(item, mode="eval").body
    except SyntaxError:
      call = None
    if not isinstance(call, (ast.Call, ast.Name)):
      raise ConfigError(f"data.augment item {item!r} is not an op call like 'randaug(2, 10)'.")
    func = call.func if isinstance(call, ast.Call) else call
    name = func.id if isinstance(func, ast.Name) else ast.unparse(func)
    if name in _OWN_KEYS:
      raise ConfigError(f"data.augment item {item!r}: {name} has its own key; set "
                        f"{_OWN_KEYS[name]} instead (augment lists what runs after the crop "
                        "and flip).")
    if name not in OPS:
      raise ConfigError(f"data.augment has unknown op {name!r}; valid ops: "
                        + ", ".join(_signature(n) for n in OPS) + ".")
    try:
      args = [ast.literal_eval(a) for a in call.args] if isinstance(call, ast.Call) else []
      kwargs = ({k.arg: ast.literal_eval(k.value) for k in call.keywords}
                if isinstance(call, ast.Call) else {})
    except ValueError:
      raise ConfigError(f"data.augment item {item!r}: arguments must be literals "
                        "(numbers, strings, tuples).") from None
    try:
      bound = inspect.signature(OPS[name]).bind(*args, **kwargs)
    except TypeError as e:
      raise ConfigError(f"data.augment item {item!r}: {e}; the op is {_signature(name)}.") from None
    try:
      ops.append((name, OPS[name](*bound.args, **bound.kwargs)))
    except ValueError as e:
      raise ConfigError(f"data.augment item {item!r}: {str(e).rstrip('.')}; the op is "
                        f"{_signature(name)}.") from None
  names = [name for name, _ in ops]
  for post in POST_NORMALIZE:
    if post in names[:-1]:
      raise ConfigError(f"data.augment: {post} works on the normalised image and must be the "
                        f"last item, got {names}.")
  return tuple(ops)
