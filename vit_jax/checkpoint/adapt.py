"""`adapt(restored, init_params)`: fits loaded params to a target model.

Split into small named steps, each recording what it did in an `AdaptReport`:
position embedding (`_adapt_posemb`), patch embedding (`_adapt_patch_kernel`),
head and representation layer (`_adapt_head`), and the scan/per-layer layout
(`_unstack_flat`, then `layout.stack_layers`).

Two kinds of mismatch are told apart:
  * architecture mismatches (width, depth, heads, patch size without
    `resize_patch`, token count without `resize_posemb`) always raise: copying
    part of such a checkpoint gives a model that only looks initialised;
  * unexpected but harmless ones (a key only one side has, e.g. after a change of
    classifier) are re-initialised / ignored with a warning, or raise with
    `strict=True`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import jax
import numpy as np

from vit_jax.checkpoint import patch_resize
from vit_jax.checkpoint import posemb as posemb_lib
from vit_jax.checkpoint import tree as tree_lib
from vit_jax.checkpoint.errors import CheckpointError
from vit_jax.checkpoint.report import AdaptReport, KeyAction
from vit_jax.models import layout, positions
from vit_jax.models.positions import prefix_rows_from_params

POSEMB_KEY = "Transformer/posembed_input/pos_embedding"
EMBEDDING_KERNEL = "embedding/kernel"
# Keys whose absence or change of shape is part of ordinary fine-tuning
# (`output_projection` is the head of ViViT and of Scenic's models).
HEAD_PREFIXES = ("head/", "pre_logits/", "output_projection/")

# What adapt does with a key (the report lists every key under one of these).
ACTIONS = ("copied", "reshaped", "reinitialised", "ignored")

_STACKED = re.compile(r"(^|/)encoderblock/")
_PER_LAYER = re.compile(r"(^|/)encoderblock_(\d+)/")



def _natural_key(key: str) -> tuple:
  # encoderblock_10 after encoderblock_2.
  return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", key))


def _unstack_flat(flat: Mapping[str, Any]) -> tuple[dict[str, Any], Optional[int]]:
  """Splits stacked `encoderblock/...` leaves [L, ...] into `encoderblock_{i}/...`.

  Works on flat dicts of arrays or `jax.ShapeDtypeStruct`s (abstract targets from
  `jax.eval_shape`); returns (flat, L or None when nothing was stacked).
  """
  out, depth = {}, None
  for key, value in flat.items():
    if not _STACKED.search(key):
      out[key] = value
      continue
    depth = value.shape[0]
    for i in range(depth):
      new_key = _STACKED.sub(lambda m, i=i: f"{m.group(1)}encoderblock_{i}/", key, count=1)
      if isinstance(value, jax.ShapeDtypeStruct):
        out[new_key] = jax.ShapeDtypeStruct(value.shape[1:], value.dtype)
      else:
        out[new_key] = np.asarray(value[i])
  return out, depth


def _block_indices(keys) -> dict[str, set[int]]:
  """Encoder path -> the block indices present ("Transformer" -> {0, 1, ...})."""
  found: dict[str, set[int]] = {}
  for key in keys:
    if m := _PER_LAYER.search(key):
      found.setdefault(key[:m.start(2) - len("encoderblock_")], set()).add(int(m.group(2)))
  return found


def _check_depth(source: Mapping[str, Any], target: Mapping[str, Any]) -> None:
  src_blocks, tgt_blocks = _block_indices(source), _block_indices(target)
  for encoder in sorted(set(src_blocks) | set(tgt_blocks)):
    src, tgt = src_blocks.get(encoder, set()), tgt_blocks.get(encoder, set())
    if src == tgt:
      continue
    first = min(src ^ tgt)
    block = f"{encoder}encoderblock_{first}/"
    side, other = (target, "model") if first in tgt else (source, "checkpoint")
    key = min((k for k in side if k.startswith(block)), key=_natural_key)
    raise CheckpointError(
        f"Depth mismatch: the checkpoint has {len(src)} blocks in {encoder.rstrip('/') or '/'}, "
        f"the model has {len(tgt)}. First mismatching key: {key} is {tuple(side[key].shape)} "
        f"in the {other} and absent from the other. Build the model with "
        f"num_layers={len(src)} (or pick the matching size).")


def _shape_error(key: str, source: tuple, target: tuple, hint: str = "") -> CheckpointError:
  hint = hint or ("The checkpoint is of another width/size: build the model the checkpoint "
                  "was trained as (same hidden_size, mlp_dim, num_heads, patch size).")
  return CheckpointError(
      f"The checkpoint does not fit the model. First mismatching key: {key}: checkpoint "
      f"{source} vs model {target}. {hint}")


def _adapt_posemb(src: np.ndarray, tgt: Any, *, src_prefix: int, tgt_prefix: int,
                  tgt_init: Optional[np.ndarray], resize: bool, method: str,
                  source_grid, grid, image_size, patch_hw, report: AdaptReport) -> np.ndarray:
  """Position embedding [1, prefix + N, D] -> the model's token count and prefix rows."""
  src_shape, tgt_shape = tuple(src.shape), tuple(tgt.shape)
  if src.ndim != 3 or src_shape[-1] != tgt_shape[-1]:
    raise _shape_error(POSEMB_KEY, src_shape, tgt_shape)
  src_grid_tokens = src_shape[1] - src_prefix
  tgt_grid_tokens = tgt_shape[1] - tgt_prefix
  rows = lambda n: "cls row" if n == 1 else f"{n} prefix rows"
  notes = []
  if src_grid_tokens != tgt_grid_tokens:
    if not resize:
      raise CheckpointError(
          f"{POSEMB_KEY}: the checkpoint has {src_shape[1]} tokens, the model needs "
          f"{tgt_shape[1]}: pass resize_posemb=True or build the model for the "
          "checkpoint's image size.")
    new_grid = positions.target_grid(tgt_grid_tokens, patch_hw, grid, image_size)
    old_grid = (tuple(source_grid) if source_grid else
                positions.square_grid(src_grid_tokens, "the checkpoint's pos_embedding"))
    src = posemb_lib.resize_posemb(src, new_grid, num_prefix_tokens=src_prefix,
                                   source_grid=old_grid, method=method)
    notes.append(f"{method} resize of the {old_grid[0]}x{old_grid[1]} grid to "
                 f"{new_grid[0]}x{new_grid[1]}" + (f", {rows(src_prefix)} kept"
                                                   if src_prefix else ""))
  expected = True
  if src_prefix and not tgt_prefix:
    src = src[:, src_prefix:]
    notes.append(f"dropped the {rows(src_prefix)}: the model's position embedding has none")
    expected = False
  elif tgt_prefix and not src_prefix:
    if tgt_init is None:
      raise CheckpointError(f"{POSEMB_KEY}: the model needs a {rows(tgt_prefix)} the "
                            "checkpoint lacks; pass concrete init_params to initialise it.")
    src = np.concatenate([np.asarray(tgt_init)[:, :tgt_prefix].astype(src.dtype), src], axis=1)
    notes.append(f"{rows(tgt_prefix)} taken from init_params: the checkpoint has none")
    expected = False
  elif src_prefix != tgt_prefix:
    raise CheckpointError(
        f"{POSEMB_KEY}: the checkpoint's position embedding has {src_prefix} rows before "
        f"the patches (cls/distillation/register tokens), the model's {tgt_prefix}: build "
        "the model with the checkpoint's tokens (model_name='from_checkpoint').")
  action = "reshaped" if notes else "copied"
  report.add(POSEMB_KEY, action, src_shape, tgt_shape, "; ".join(notes), expected)
  return src


def _adapt_patch_kernel(src: np.ndarray, tgt_shape: tuple, resize: bool,
                        report: AdaptReport) -> np.ndarray:
  """Patch-embedding kernel [ph, pw, 3, D] -> the model's patch size."""
  src_shape = tuple(src.shape)
  if len(src_shape) != 4 or len(tgt_shape) != 4 or src_shape[2:] != tgt_shape[2:]:
    raise _shape_error(EMBEDDING_KERNEL, src_shape, tgt_shape)
  if not resize:
    raise _shape_error(
        EMBEDDING_KERNEL, src_shape, tgt_shape,
        f"The patch size differs ({src_shape[:2]} vs {tgt_shape[:2]}): pass resize_patch=True "
        "for the FlexiViT kernel resize, or build the model with the checkpoint's patch size.")
  report.add(EMBEDDING_KERNEL, "reshaped", src_shape, tgt_shape,
             f"FlexiViT PI-resize of the patch kernel {src_shape[:2]} -> {tgt_shape[:2]}")
  return patch_resize.resize_patch_kernel(src, tgt_shape[:2])


def _init_value(key: str, target: Any) -> np.ndarray:
  if not isinstance(target, jax.ShapeDtypeStruct):
    return np.asarray(target)
  if key.startswith(("head/", "output_projection/")):
    return np.zeros(target.shape, target.dtype)  # the reference head init
  raise CheckpointError(
      f"{key} must be initialised from init_params, but init_params are abstract "
      "(jax.ShapeDtypeStruct): pass the output of model.init instead of jax.eval_shape.")


def _format_keys(entries: Sequence[KeyAction]) -> str:
  return "\n".join(f"  {e.key}: checkpoint {e.source_shape}, model {e.target_shape}"
                   f"{' (' + e.note + ')' if e.note else ''}" for e in entries)


def adapt(restored: Mapping[str, Any], init_params: Mapping[str, Any], *,
          resize_posemb: bool = True, posemb_method: str = "bilinear",
          source_grid: Optional[Sequence[int]] = None, grid: Optional[Sequence[int]] = None,
          image_size: Optional[Sequence[int] | int] = None, resize_patch: bool = False,
          reinit: Sequence[str] = (), strict: bool = False, log: bool = True,
          posemb_prefix: Optional[tuple[int, int]] = None,
          ) -> tuple[dict[str, Any], AdaptReport]:
  """Fits restored params (from `load`) to a model's params.

  Args:
    restored: params of the checkpoint, per-layer or scanned.
    init_params: the target model's params (`model.init(...)["params"]`).
      A `jax.eval_shape` tree also works (and is what multi-host runs should
      pass) as long as only the head must be initialised: it gets zeros, the
      reference init (not the model's `head_bias_init`). Their layout (scanned
      or not), shapes and dtypes decide the output's.
    resize_posemb: resize the position embedding when the token count differs
      (cls row untouched).
    posemb_method: "bilinear" (vit_jax's reference) or "bicubic".
    source_grid: (gh, gw) of the checkpoint's posemb; needed only when not square.
    grid: (gh, gw) of the model's posemb; or give `image_size` (H, W); needed
      only when not square.
    resize_patch: resize the patch-embedding kernel to the model's patch size
      (FlexiViT PI-resize) instead of raising.
    reinit: key prefixes ("head/") to take from init_params even when the
      checkpoint's shapes fit.
    strict: raise on any unexpected mismatch (a key only one side has, outside
      the head, pre_logits and the posemb/patch resizes asked for) instead of
      re-initialising or ignoring it.
    log: log the report (`AdaptReport.log`).
    posemb_prefix: (checkpoint's, model's) position-embedding rows before the patch grid
      (`posemb_prefix_rows(model)`, exact when the models are known); default: read from
      the tokens each tree holds (`prefix_rows_from_params`).

  Returns:
    (params, report): params as a nested dict of numpy arrays in the model's
    layout and dtypes (copy them to devices with the model's sharding);
    `report` lists every key as copied, reshaped, reinitialised or ignored.

  Raises:
    CheckpointError: the checkpoint is of another architecture (the message names
      the first mismatching key and both shapes), or strict=True and something
      unexpected differs.
  """
  if posemb_method not in posemb_lib.METHODS:
    raise ValueError(f"Unknown posemb_method {posemb_method!r}; choose one of "
                     f"{posemb_lib.METHODS}.")
  source, src_depth = _unstack_flat(tree_lib.flatten(restored))
  target, tgt_depth = _unstack_flat(tree_lib.flatten(init_params))
  report = AdaptReport("adapt", ACTIONS, logger_name=__name__)
  if src_depth:
    report.notes.append(f"checkpoint encoder is scanned: unstacked {src_depth} layers")
  if tgt_depth:
    report.notes.append(f"model encoder is scanned: stacked {tgt_depth} layers")

  # Before any per-key check: missing blocks must raise, not be re-initialised.
  _check_depth(source, target)
  out: dict[str, np.ndarray] = {}
  if posemb_prefix is None:  # from the tokens the params hold (see prefix_rows_from_params)
    # A given source_grid settles how many of the checkpoint's rows are prefix rows.
    src_rows = source[POSEMB_KEY].shape[1] if POSEMB_KEY in source else 0
    posemb_prefix = (
        0 if not src_rows else src_rows - source_grid[0] * source_grid[1] if source_grid
        else prefix_rows_from_params(source, src_rows),
        prefix_rows_from_params(target, target[POSEMB_KEY].shape[1])
        if POSEMB_KEY in target else 0)
  src_prefix, tgt_prefix = posemb_prefix
  for key in sorted(target, key=_natural_key):
    tgt = target[key]
    tgt_shape = tuple(tgt.shape)
    if key in source:
      src = np.asarray(source[key])
    if any(key.startswith(prefix) for prefix in reinit):
      out[key] = _init_value(key, tgt)
      report.add(key, "reinitialised", tuple(src.shape) if key in source else None,
                 tgt_shape, "requested by reinit")
    elif key not in source:
      if key.startswith(HEAD_PREFIXES):
        note, expected = "not in the checkpoint", True
      else:
        note, expected = "missing from the checkpoint", False
      out[key] = _init_value(key, tgt)
      report.add(key, "reinitialised", None, tgt_shape, note, expected)
    elif key == POSEMB_KEY:
      out[key] = _adapt_posemb(
          src, tgt, src_prefix=src_prefix, tgt_prefix=tgt_prefix,
          tgt_init=None if isinstance(tgt, jax.ShapeDtypeStruct) else tgt,
          resize=resize_posemb, method=posemb_method, source_grid=source_grid, grid=grid,
          image_size=image_size, patch_hw=tuple(target[EMBEDDING_KERNEL].shape[:2]),
          report=report)
    elif tuple(src.shape) == tgt_shape:
      out[key] = src
      note = "" if src.dtype == tgt.dtype else f"{src.dtype} -> {np.dtype(tgt.dtype)}"
      report.add(key, "copied", tgt_shape, tgt_shape, note)
    elif key.startswith(HEAD_PREFIXES):
      out[key] = _init_value(key, tgt)
      report.add(key, "reinitialised", tuple(src.shape), tgt_shape,
                 "output size differs (class count or representation size)")
    elif key == EMBEDDING_KERNEL:
      out[key] = _adapt_patch_kernel(src, tgt_shape, resize_patch, report)
    else:
      raise _shape_error(key, tuple(src.shape), tgt_shape)
    out[key] = np.asarray(out[key]).astype(tgt.dtype, copy=False)

  for key in sorted(set(source) - set(target), key=_natural_key):
    expected = key.startswith(HEAD_PREFIXES)
    note = ("the model has no such layer" if expected else "the model has no such parameter")
    report.add(key, "ignored", tuple(np.shape(source[key])), None, note, expected)

  unexpected = report.unexpected
  if strict and unexpected:
    raise CheckpointError(
        f"strict=True: {len(unexpected)} unexpected mismatch(es) between checkpoint and "
        f"model:\n{_format_keys(unexpected)}\nCheck the model options (classifier, "
        "posemb, representation_size), or pass strict=False to re-initialise missing "
        "and ignore extra keys.")
  if log:
    report.log()
  params = tree_lib.unflatten(out)
  if tgt_depth:
    params = layout.stack_layers(params)
  return params, report
