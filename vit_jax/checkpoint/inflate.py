"""Initialises ViViT parameters from an image ViT (the paper's section 3.4).

    image = ...  # ViT params: embedding, cls, Transformer/{posembed_input, encoderblock_i,
                 # encoder_norm}, head (vit_jax.checkpoint loads released files)
    init = model.init(rng, video)["params"]
    params, report = inflate_from_image(image, init, variant=model.variant)
    print(report)

Every parameter of the video model is reported once (copied, inflated, tiled,
resized, resized+tiled or reinitialised) and every image parameter that
initialises nothing is listed as ignored, with the reason. The surgery is split
into one function per piece, as Scenic's: embedding, cls tokens, position
embeddings, encoder blocks, temporal encoder, head. Both per-layer and scanned
(stacked) layouts are accepted; the result has the layout of `init_params`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import numpy as np
from absl import logging
from flax import traverse_util

from vit_jax.checkpoint import posemb as posemb_lib
from vit_jax.checkpoint.report import AdaptReport
from vit_jax.errors import CheckpointError
from vit_jax.models import layout, positions
from vit_jax.models.vivit import DIVIDED, VARIANTS

# What the inflation does with a key; "ignored": an image parameter that initialises nothing.
ACTIONS = ("copied", "inflated", "tiled", "resized", "resized+tiled", "reinitialised",
           "ignored")
KERNEL_INIT_METHODS = ("central_frame", "average", "repeat")
TEMPORAL_INITS = ("random", "image")
TIME_ATTENTION_INITS = ("copy", "zero")

_IMAGE_BLOCK = "Transformer/encoderblock_{}"
# The image block's module behind each video block module (Model 3's names as in
# Scenic's init_encoderblock; the other models' blocks are the image block).
_IMAGE_MODULE = {
    "LayerNorm_time": "LayerNorm_0", "LayerNorm_space": "LayerNorm_0",
    "MultiHeadDotProductAttention_time": "MultiHeadDotProductAttention_0",
    "MultiHeadDotProductAttention_space": "MultiHeadDotProductAttention_0",
    "LayerNorm_mlp": "LayerNorm_1", "MlpBlock": "MlpBlock_0",
}


class _Surgery:
  """Flat image / init / output parameter dicts and the report being written."""

  def __init__(self, image: Mapping[str, Any], init: Mapping[str, Any]):
    self.image = _flat(image)
    self.init = _flat(init)
    self.out = dict(self.init)
    self.report = AdaptReport("ViViT initialisation from an image ViT", ACTIONS,
                              logger_name=__name__)
    self.done: set[str] = set()  # video parameters already initialised
    self.used: set[str] = set()  # image parameters used

  def set(self, key: str, value: np.ndarray, action: str, detail: str,
          sources: tuple[str, ...] = ()) -> None:
    if key not in self.init:
      raise KeyError(f"The video model has no parameter {key!r}.")
    if key in self.done:
      raise AssertionError(f"{key} initialised twice.")
    if value.shape != self.init[key].shape:
      raise CheckpointError(f"{key}: the image gives shape {value.shape}, the video model needs "
                       f"{self.init[key].shape} ({detail}).")
    self.out[key] = np.asarray(value).astype(self.init[key].dtype)
    source_shape = tuple(self.image[sources[0]].shape) if sources else None
    self.report.add(key, action, source_shape, tuple(value.shape), detail)
    self.done.add(key)
    self.used.update(sources)

  def copy(self, key: str, source: str) -> None:
    self.set(key, self.image[source], "copied", f"from {source}", (source,))

  def keep(self, key: str, detail: str) -> None:
    """Keeps the freshly initialised value of `key`."""
    self.set(key, self.init[key], "reinitialised", detail)

  def has_image(self, key: str) -> bool:
    return key in self.image

  def under(self, prefix: str, tree: str = "init") -> list[str]:
    keys = self.init if tree == "init" else self.image
    return sorted(k for k in keys if k.startswith(prefix + "/") or k == prefix)


def _flat(tree: Mapping[str, Any]) -> dict[str, np.ndarray]:
  tree = layout.unstack_layers(tree) if layout.is_stacked(tree) else tree
  return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(tree, sep="/").items()}


def _num_blocks(keys, prefix: str) -> int:
  ids = {int(k[len(prefix):].split("/")[0]) for k in keys if k.startswith(prefix)}
  return len(ids)


def init_embedding(s: _Surgery, kernel_init_method: str) -> None:
  """Patch kernel [h, w, C, D] -> tubelet [t, h, w, C, D] (or per-frame, copied)."""
  kernel = s.image["embedding/kernel"]
  target = s.init["embedding/kernel"].shape
  if target[-4:] != kernel.shape:
    raise CheckpointError(
        f"The image patch embedding {kernel.shape} does not match the video model's "
        f"{target}: patch size, channels and width must agree (resizing the patch "
        "kernel is not supported here).")
  s.copy("embedding/bias", "embedding/bias")
  if len(target) == 4:
    s.copy("embedding/kernel", "embedding/kernel")
    logging.info("embedding: per-frame kernel copied from the image model")
    return
  t = target[0]
  tubelet = np.zeros(target, kernel.dtype)
  if kernel_init_method == "central_frame":
    tubelet[t // 2] = kernel  # zeros elsewhere: the tubelet sees only its middle frame
  elif kernel_init_method == "average":
    tubelet[:] = kernel / t  # filter inflation: a static tubelet gives the image response
  else:
    tubelet[:] = kernel
  s.set("embedding/kernel", tubelet, "inflated",
        f"{kernel_init_method} over {t} frames from embedding/kernel", ("embedding/kernel",))
  logging.info("embedding: %s inflation of %s to %s", kernel_init_method, kernel.shape, target)


def init_cls(s: _Surgery, key: str) -> None:
  """A video cls token from the image's `cls` (kept fresh when the image has none), and
  the encoder's register tokens (`registers` + the cls key's suffix) from the image's."""
  suffix = key.removeprefix("cls")
  registers = "registers" + suffix
  if registers in s.init:
    if s.has_image("registers") and s.image["registers"].shape == s.init[registers].shape:
      s.copy(registers, "registers")
    else:
      s.keep(registers, "the image model has no registers of this count")
  if key not in s.init:
    return
  if s.has_image("cls"):
    s.copy(key, "cls")
  else:
    s.keep(key, "the image model has no cls token")
  logging.info("%s: %s", key, s.report[key].action)


def _prefix_tokens(params: Mapping[str, Any], suffix: str = "") -> int:
  """The cls / distillation / register tokens of an encoder (named with `suffix`)."""
  count = int(f"cls{suffix}" in params) + int(f"dist{suffix}" in params)
  if f"registers{suffix}" in params:
    count += int(np.shape(params[f"registers{suffix}"])[1])
  return count


def _image_grid(s: _Surgery, image_grid: Optional[tuple[int, int]]) -> tuple[np.ndarray, Optional[np.ndarray], tuple[int, int]]:
  """The image posemb split into (grid rows [N, D], prefix rows [P, D] or None, (gh, gw)).

  The prefix rows are those of the cls / distillation / register tokens; none with
  `no_embed_class` (positions.prefix_rows_from_params).
  """
  posemb = s.image["Transformer/posembed_input/pos_embedding"][0]
  prefix = (posemb.shape[0] - image_grid[0] * image_grid[1] if image_grid is not None
            else positions.prefix_rows_from_params(s.image, posemb.shape[0]))
  cls_row, grid = (posemb[:prefix], posemb[prefix:]) if prefix else (None, posemb)
  if image_grid is None:
    if not positions.is_square(grid.shape[0]):
      raise CheckpointError(f"The image position embedding has {grid.shape[0]} grid tokens, "
                            "not a square grid: pass image_grid=(gh, gw).")
    image_grid = positions.square_grid(grid.shape[0])
  if image_grid[0] * image_grid[1] != grid.shape[0]:
    raise CheckpointError(f"image_grid={image_grid} does not match the image position embedding's "
                     f"{grid.shape[0]} grid tokens.")
  return grid, cls_row, tuple(image_grid)


def _video_prefix_rows(rows: int, tokens: int, temporal: int,
                       grid_hw: Optional[tuple[int, int]], image_hw: tuple[int, int]) -> int:
  """How many of the video posemb's `rows` belong to its `tokens` prefix tokens: all of
  them, or none (no_embed_class), whichever fits the token grid."""
  candidates = [tokens, 0] if tokens else [0]
  if grid_hw is not None:
    fits = [c for c in candidates if rows - c == temporal * grid_hw[0] * grid_hw[1]]
  else:
    fits = ([c for c in candidates if rows - c == temporal * image_hw[0] * image_hw[1]] or
            [c for c in candidates if (rows - c) % temporal == 0
             and positions.is_square((rows - c) // temporal)])
  return fits[0] if fits else candidates[0]


def init_posemb(s: _Surgery, key: str, *, temporal: int, prefix_tokens: int,
                grid_hw: Optional[tuple[int, int]],
                image_grid: Optional[tuple[int, int]]) -> None:
  """Image posemb -> video posemb `key`: grid resized to (gh, gw), tiled `temporal` times.

  `prefix_tokens`: the video encoder's prefix tokens (cls, registers). Their rows are copied
  when both posembs have the same prefix rows; video prefix rows without image ones
  are kept fresh; image prefix rows the video posemb lacks are dropped.
  """
  source = "Transformer/posembed_input/pos_embedding"
  grid, image_cls, (igh, igw) = _image_grid(s, image_grid)
  target = s.init[key]
  prefix_tokens = _video_prefix_rows(target.shape[1], int(prefix_tokens), temporal, grid_hw,
                                     (igh, igw))
  num_grid = target.shape[1] - prefix_tokens
  if grid_hw is None:
    if num_grid == temporal * igh * igw:
      grid_hw = (igh, igw)
    else:
      if num_grid % temporal or not positions.is_square(num_grid // temporal):
        raise CheckpointError(f"{key} has {num_grid} grid tokens: cannot tell its spatial "
                              "grid; pass token_grid=(t, gh, gw).")
      grid_hw = positions.square_grid(num_grid // temporal)
  if temporal * grid_hw[0] * grid_hw[1] != num_grid:
    raise CheckpointError(f"token_grid (t={temporal}, {grid_hw}) does not match {key}'s "
                     f"{num_grid} grid tokens.")

  resized = grid_hw != (igh, igw)
  if resized:
    # [gh*gw, D] -> [gh, gw, D] -> resized [gh', gw', D] -> [gh'*gw', D]
    grid = posemb_lib.resize_grid(grid.reshape(igh, igw, -1), grid_hw).reshape(
        grid_hw[0] * grid_hw[1], -1).astype(grid.dtype)
  # Time-major tokens: the spatial grid repeated once per temporal index.
  rows = np.tile(grid, (temporal, 1))
  details = []
  if resized:
    details.append(f"grid resized {igh}x{igw} -> {grid_hw[0]}x{grid_hw[1]}")
  if temporal > 1:
    details.append(f"tiled over {temporal} temporal indices")
  if prefix_tokens:
    if image_cls is not None and len(image_cls) == prefix_tokens:
      rows = np.concatenate([image_cls, rows])
      details.append("cls row copied" if prefix_tokens == 1
                     else f"{prefix_tokens} prefix rows copied")
    else:
      rows = np.concatenate([target[0, :prefix_tokens], rows])
      details.append("cls row kept fresh (the image model has no cls token)"
                     if prefix_tokens == 1 and image_cls is None else
                     f"{prefix_tokens} prefix rows kept fresh (the image posemb has other "
                     "prefix rows)")
  elif image_cls is not None:
    details.append("image cls row dropped (the video model has no cls token)"
                   if len(image_cls) == 1 else
                   f"image prefix rows dropped ({len(image_cls)}: the video posemb has none)")
  action = {(False, False): "copied", (False, True): "tiled", (True, False): "resized",
            (True, True): "resized+tiled"}[(resized, temporal > 1)]
  s.set(key, rows[None], action, f"from {source}: " + ", ".join(details or ["as is"]),
        (source,))
  logging.info("%s: %s", key, s.report[key].note)


def init_encoder_blocks(s: _Surgery, encoder: str, *, num_blocks: Optional[int] = None,
                        time_attention_init: str = "copy") -> None:
  """Image blocks -> the first `num_blocks` blocks of `encoder`, plus encoder_norm.

  Model 3's blocks take LayerNorm_0 into LayerNorm_space and LayerNorm_time,
  MultiHeadDotProductAttention_0 into both attentions (time's `out` zeroed with
  time_attention_init="zero"), LayerNorm_1 into LayerNorm_mlp and MlpBlock_0 into
  MlpBlock.
  """
  image_layers = _num_blocks(s.image, "Transformer/encoderblock_")
  video_layers = _num_blocks(s.init, f"{encoder}/encoderblock_")
  if num_blocks is None and video_layers != image_layers:
    raise CheckpointError(f"The image model has {image_layers} blocks, the video model's {encoder} "
                     f"{video_layers}: build the video model with num_layers={image_layers}.")
  num_blocks = video_layers if num_blocks is None else num_blocks
  if num_blocks > image_layers:
    raise CheckpointError(f"{encoder} needs {num_blocks} blocks from the image model, which has "
                     f"{image_layers}: use temporal_encoder_layers <= {image_layers}.")
  for i in range(num_blocks):
    src_block, dst_block = _IMAGE_BLOCK.format(i), f"{encoder}/encoderblock_{i}"
    for dst in s.under(dst_block):
      rest = dst[len(dst_block) + 1:]
      module, leaf = rest.split("/", 1)
      src = f"{src_block}/{_IMAGE_MODULE.get(module, module)}/{leaf}"
      if (module == "MultiHeadDotProductAttention_time" and time_attention_init == "zero"
          and leaf.startswith("out/")):
        s.set(dst, np.zeros(s.init[dst].shape), "reinitialised",
              "zeros: the temporal attention starts as an identity residual", (src,))
        continue
      if module == "Dense_time":  # TimeSformer's temporal_fc: kept at its zero init
        continue
      if not s.has_image(src):
        raise KeyError(f"{dst} needs the image parameter {src}, which is missing; image "
                       f"block keys: {s.under(src_block, 'image')[:8]}...")
      s.copy(dst, src)
  for norm in ("encoder_norm", "pre_norm"):
    for leaf in ("scale", "bias"):
      if f"{encoder}/{norm}/{leaf}" in s.init:
        s.copy(f"{encoder}/{norm}/{leaf}", f"Transformer/{norm}/{leaf}")
  suffix = "" if encoder == "Transformer" else "_" + encoder
  for leaf in ("scale", "bias"):  # fc_norm (final LayerNorm after pooling)
    if f"fc_norm{suffix}/{leaf}" in s.init and s.has_image(f"fc_norm/{leaf}"):
      s.copy(f"fc_norm{suffix}/{leaf}", f"fc_norm/{leaf}")
  logging.info("%s: %d blocks and encoder_norm copied from the image encoder%s", encoder,
               num_blocks, f" (time attention: {time_attention_init})"
               if time_attention_init != "copy" else "")


def init_temporal_encoder(s: _Surgery, temporal_init: str) -> None:
  """Model 2's temporal encoder: fresh, or blocks/encoder_norm/cls from the image.

  Its position embedding (one row per temporal index) has no image counterpart.
  """
  if temporal_init == "image":
    num_blocks = _num_blocks(s.init, "TemporalTransformer/encoderblock_")
    init_encoder_blocks(s, "TemporalTransformer", num_blocks=num_blocks)
    init_cls(s, "cls_TemporalTransformer")
  for key in s.under("TemporalTransformer") + s.under("cls_TemporalTransformer"):
    if key not in s.done:
      s.keep(key, "temporal_init='random'" if temporal_init == "random" else
             "no image counterpart")
  logging.info("TemporalTransformer: initialised from %s", temporal_init)


def init_head(s: _Surgery) -> None:
  """`head` -> `output_projection` when the classes (and pre_logits) agree, else zeros."""
  pre_logits_match = s.has_image("pre_logits/kernel") == ("pre_logits/kernel" in s.init)
  if "pre_logits/kernel" in s.init:
    for leaf in ("kernel", "bias"):
      key = f"pre_logits/{leaf}"
      if s.has_image(key) and s.image[key].shape == s.init[key].shape:
        s.copy(key, key)
      else:
        pre_logits_match = False
        s.keep(key, "no image pre_logits of this shape")
  if "output_projection/kernel" not in s.init:
    return
  for leaf in ("kernel", "bias"):
    key, src = f"output_projection/{leaf}", f"head/{leaf}"
    if pre_logits_match and s.has_image(src) and s.image[src].shape == s.init[key].shape:
      s.copy(key, src)
    else:
      why = ("the image head feeds on pre_logits the video model does not share"
             if not pre_logits_match else
             f"zeros: {s.init['output_projection/kernel'].shape[-1]} classes, image head "
             f"{s.image[src].shape[-1] if s.has_image(src) else 'absent'}")
      s.set(key, np.zeros(s.init[key].shape), "reinitialised", why)
  logging.info("output_projection: %s", s.report["output_projection/kernel"].note)


def inflate_from_image(
    image_params: Mapping[str, Any], init_params: Mapping[str, Any], *, variant: str,
    kernel_init_method: str = "central_frame", temporal_init: str = "random",
    time_attention_init: str = "copy",
    token_grid: Optional[tuple[int, int, int]] = None,
    image_grid: Optional[tuple[int, int]] = None,
) -> tuple[dict[str, Any], AdaptReport]:
  """Initialises a ViViT from an image ViT.

  Args:
    image_params: the image ViT's params (Linen naming, per-layer or scanned).
    init_params: freshly initialised params of the video model; they fix every
      shape and keep the parameters with no image counterpart.
    variant: the video model's variant (vivit.VARIANTS, or vivit.DIVIDED: TimeSformer's
      own initialisation, the spatial and temporal attention both from the image
      attention, `Dense_time` and `time_embedding` kept at their zero init, so the
      model starts as the image model applied to every frame).
    kernel_init_method: tubelet kernel from the image patch kernel W:
      "central_frame" (W on the middle slice t//2, zeros elsewhere), "average"
      (filter inflation: W/t on every slice) or "repeat" (W on every slice).
    temporal_init: factorised_encoder only: the temporal encoder starts "random"
      or from the first blocks (and encoder_norm, cls) of the "image" encoder.
    time_attention_init: factorised_self_attention only: the temporal attention
      is a "copy" of the image attention, or "zero" (query/key/value copied, `out`
      zeroed so every block starts as the image block).
    token_grid: the video model's (t, gh, gw) (`vivit.token_grid(model, shape)`);
      required by the variants with one encoder over all tokens, whose position
      embedding does not tell t from gh*gw; for the factorised encoders needed
      only when the spatial grid differs from the image's and is not square.
    image_grid: the image model's (gh, gw); needed only when it is not square.

  Returns:
    (params with the layout and dtypes of init_params, report).

  Raises:
    CheckpointError: naming the mismatch and the fix (patch size, depth, token grid).
  """
  if variant not in VARIANTS + (DIVIDED,):
    raise CheckpointError(f"Unknown ViViT variant {variant!r}; choose one of "
                          f"{VARIANTS + (DIVIDED,)}.")
  for name, value, choices in [("kernel_init_method", kernel_init_method, KERNEL_INIT_METHODS),
                               ("temporal_init", temporal_init, TEMPORAL_INITS),
                               ("time_attention_init", time_attention_init,
                                TIME_ATTENTION_INITS)]:
    if value not in choices:
      raise CheckpointError(f"Unknown {name} {value!r}; choose one of {choices}.")
  if temporal_init != "random" and variant != "factorised_encoder":
    raise CheckpointError("temporal_init only applies to variant='factorised_encoder'.")
  if time_attention_init != "copy" and variant not in ("factorised_self_attention", DIVIDED):
    raise CheckpointError("time_attention_init only applies to variants "
                          "'factorised_self_attention' and 'divided_space_time'.")
  s = _Surgery(image_params, init_params)
  factorised_encoder = variant in ("factorised_encoder", "frame_average")
  expected = "SpatialTransformer" if factorised_encoder else "Transformer"
  if not s.under(expected):
    raise CheckpointError(f"init_params have no {expected!r} encoder: are they the params of a "
                     f"{variant!r} model?")

  init_embedding(s, kernel_init_method)
  grid_hw = tuple(token_grid[1:]) if token_grid else None
  if factorised_encoder:
    # The spatial encoder sees one temporal index at a time: its posemb is not tiled.
    init_cls(s, "cls_SpatialTransformer")
    init_posemb(s, "SpatialTransformer/posembed_input/pos_embedding", temporal=1,
                prefix_tokens=_prefix_tokens(s.init, "_SpatialTransformer"), grid_hw=grid_hw,
                image_grid=image_grid)
    init_encoder_blocks(s, "SpatialTransformer")
    if variant == "factorised_encoder":
      init_temporal_encoder(s, temporal_init)
  elif variant == DIVIDED:
    # One spatial table shared by the frames (not tiled); the time table stays zero.
    init_cls(s, "cls")
    init_posemb(s, "Transformer/posembed_space_time/pos_embedding", temporal=1,
                prefix_tokens=_prefix_tokens(s.init), grid_hw=grid_hw, image_grid=image_grid)
    init_encoder_blocks(s, "Transformer", time_attention_init=time_attention_init)
  else:
    if token_grid is None:
      # [1, t*gh*gw(+1), D] does not say how its tokens split between time and space.
      raise CheckpointError(f"variant={variant!r} needs the video model's token grid: pass "
                       "token_grid=vivit.token_grid(model, video.shape), i.e. (t, gh, gw).")
    t = token_grid[0]
    init_cls(s, "cls")
    init_posemb(s, "Transformer/posembed_input/pos_embedding", temporal=t,
                prefix_tokens=_prefix_tokens(s.init), grid_hw=grid_hw, image_grid=image_grid)
    init_encoder_blocks(s, "Transformer", time_attention_init=time_attention_init)
  init_head(s)

  for key in s.init:
    if key not in s.done:
      s.keep(key, "no image counterpart")
  for key in s.image:
    if key not in s.used:
      s.report.add(key, "ignored", tuple(s.image[key].shape), None,
                   _why_unused(key, variant))
  params = traverse_util.unflatten_dict(s.out, sep="/")
  if layout.is_stacked(init_params):
    params = layout.stack_layers(params)
  logging.info("%s", s.report)
  return params, s.report


def _why_unused(key: str, variant: str) -> str:
  if key.startswith("head/"):
    return "the video head is reinitialised"
  if key.startswith("Transformer/encoderblock_"):
    return f"deeper than the video encoder (temporal_init or {variant} uses fewer blocks)"
  if key == "cls":
    return "the video model has no cls token"
  return f"no counterpart in a {variant} model"


__all__ = ["ACTIONS", "inflate_from_image"]
