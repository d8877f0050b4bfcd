"""`adapt_video(restored, init_params, ...)`: fits any loaded checkpoint to a ViViT.

    restored = checkpoint.load(path, allow_video=True)
    params, report = checkpoint.adapt_video(restored, init_params, variant=model.variant,
                                            token_grid=vivit.token_grid(model, video.shape))

Two sources, told apart by their keys (`formats.is_video_params`):
  * an image ViT (any format `load` reads): inflated into the video model by
    `vit_jax.checkpoint.inflate.inflate_from_image` (tubelet kernel, tiled position
    embeddings, copied blocks; the report lists every decision);
  * a video checkpoint (a ViViT run of this project, a Scenic ViViT): the same
    architecture, so `adapt` copies it key by key; only the head may change (new
    class count, or `reset_head`). Its position embeddings are never resized:
    a t*gh*gw table does not say how to resize time and space, so a change of
    frames, tubelet or frame size is an error that says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import numpy as np

from vit_jax.checkpoint import inflate
from vit_jax.checkpoint import tree as tree_lib
from vit_jax.checkpoint.adapt import adapt
from vit_jax.checkpoint.errors import CheckpointError
from vit_jax.checkpoint.formats import is_video_params
from vit_jax.checkpoint.report import AdaptReport
from vit_jax.models import layout


def adapt_video(restored: Mapping[str, Any], init_params: Mapping[str, Any], *, variant: str,
                token_grid: Optional[tuple[int, int, int]] = None,
                kernel_init_method: str = "central_frame", temporal_init: str = "random",
                time_attention_init: str = "copy", reset_head: bool = False,
                strict: bool = False) -> tuple[dict[str, Any], AdaptReport]:
  """Initialises a ViViT's params from an image ViT or a video checkpoint.

  Args:
    restored: params from `checkpoint.load(path, allow_video=True)`.
    init_params: the video model's freshly initialised params (concrete arrays:
      the parts with no counterpart in an image ViT keep their values).
    variant: the video model's variant (`vivit.VARIANTS`).
    token_grid: (t, gh, gw) of the video model (`vivit.token_grid`); needed to
      inflate an image ViT into the variants with one encoder over all tokens.
    kernel_init_method, temporal_init, time_attention_init: the inflation
      choices of `inflate_from_image` (image checkpoints only).
    reset_head: start `output_projection` from zeros even when the class counts
      match.
    strict: video checkpoints: raise on any unexpected missing or extra key.

  Returns:
    (params in the layout and dtypes of init_params, report): an
    `AdaptReport` of the inflation (image source) or of `adapt` (video source).
  """
  if not is_video_params(_per_layer(restored)):
    image = dict(restored)
    if reset_head:
      image.pop("head", None)  # inflate_from_image then zeroes output_projection
    return inflate.inflate_from_image(
        image, init_params, variant=variant, kernel_init_method=kernel_init_method,
        temporal_init=temporal_init, time_attention_init=time_attention_init,
        token_grid=token_grid)
  changed = [name for name, value, default in [
      ("kernel_init_method", kernel_init_method, "central_frame"),
      ("temporal_init", temporal_init, "random"),
      ("time_attention_init", time_attention_init, "copy")] if value != default]
  if changed:
    raise CheckpointError(
        f"{changed} only apply when inflating an image ViT; this is a video checkpoint, "
        "copied as it is: leave them at their defaults.")
  _check_posembs(restored, init_params)
  return adapt(restored, init_params, resize_posemb=False,
               reinit=("output_projection/",) if reset_head else (), strict=strict,
               log=False)


def _per_layer(params: Mapping[str, Any]) -> Mapping[str, Any]:
  return layout.unstack_layers(params) if layout.is_stacked(params) else params


def _check_posembs(restored: Mapping[str, Any], init_params: Mapping[str, Any]) -> None:
  source = tree_lib.flatten(_per_layer(restored))
  target = tree_lib.flatten(_per_layer(init_params))
  for key in sorted(target):
    if not key.endswith("posembed_input/pos_embedding") or key not in source:
      continue
    src, tgt = tuple(np.shape(source[key])), tuple(np.shape(target[key]))
    if src != tgt:
      raise CheckpointError(
          f"{key}: the video checkpoint has {src[1]} position embeddings, the model needs "
          f"{tgt[1]} (shapes {src} vs {tgt}). Video position embeddings are not resized: "
          "fine-tune with the checkpoint's num_frames, tubelet size, patch size and frame "
          "size (and classifier), or initialise from an image ViT instead.")
