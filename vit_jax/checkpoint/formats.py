"""`load(path)`: any supported checkpoint -> params in this project's layout.

The format is detected from the file itself (the extension is not trusted):

  directory                 Orbax checkpoint of a training run (orbax_io)
  zip archive (`PK\\x03\\x04`)  `.npz`: released vit_jax, big_vision or ours (npz)
  8-byte length + JSON      `.safetensors`: timm or transformers ViT (safetensors_io)
"""

from __future__ import annotations

import os
import struct
from typing import Any, Optional

from vit_jax.checkpoint import npz, orbax_io, safetensors_io
from vit_jax.checkpoint.errors import CheckpointError

FORMATS = ("orbax", "vit_jax", "big_vision", "linen", "timm", "hf")

_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"


def container(path: str) -> str:
  """'orbax', 'npz' or 'safetensors', from the directory or the file's first bytes."""
  path = os.fspath(path)
  if os.path.isdir(path):
    return "orbax"
  if not os.path.exists(path):
    raise CheckpointError(f"{path}: no such file or directory.")
  with open(path, "rb") as f:
    head = f.read(9)
  if head[:4] in (_ZIP_MAGIC, _EMPTY_ZIP_MAGIC):
    return "npz"
  # safetensors: little-endian u64 header size, then the JSON header.
  if len(head) == 9 and head[8:9] == b"{":
    (header_size,) = struct.unpack("<Q", head[:8])
    if 0 < header_size <= os.path.getsize(path) - 8:
      return "safetensors"
  raise CheckpointError(
      f"{path}: not a checkpoint this project reads ({os.path.getsize(path)} bytes, starts "
      f"with {head[:8]!r}): expected an .npz (zip) archive, a .safetensors file, or an "
      "Orbax checkpoint directory.")


def load_with_format(path: str, *, num_heads: Optional[int] = None) -> tuple[dict[str, Any], str]:
  """Like `load`, also returning the detected format (one of `FORMATS`).

  The format tells the caller which GELU the weights were trained with: 'timm'
  and 'hf' ports use the exact erf form (`gelu_approximate=False` for parity),
  the JAX formats the tanh approximation.
  """
  path = os.fspath(path)
  kind = container(path)
  if kind == "orbax":
    params, fmt = orbax_io.load_orbax(path)
  elif kind == "npz":
    params, fmt = npz.load_npz(path)
  else:
    params, fmt = safetensors_io.load_safetensors(path, num_heads)
  _check_vit(params, path, fmt)
  return params, fmt


def load(path: str, *, num_heads: Optional[int] = None) -> dict[str, Any]:
  """Reads a ViT checkpoint in any supported format.

  Args:
    path: an `.npz` (released vit_jax/AugReg, big_vision, or ours), a timm or
      transformers `.safetensors`, or an Orbax training checkpoint (workdir,
      its `checkpoints/` dir for the latest step, a step dir, or its `state/`).
    num_heads: head count for `.safetensors` files, which do not record it;
      defaults to that of the standard size with the file's width.

  Returns:
    Nested dict of numpy arrays in the per-layer Linen layout of
    `vit_jax.models.VisionTransformer` (`Transformer/encoderblock_{i}/...`,
    posemb [1, N(+1), D] with the cls row first when there is a cls token).
    Fit it to a model with `adapt`.
  """
  return load_with_format(path, num_heads=num_heads)[0]


def _check_vit(params: dict[str, Any], path: str, fmt: str) -> None:
  encoder = params.get("Transformer", {})
  missing = [name for name, ok in [
      ("embedding/kernel", "kernel" in params.get("embedding", {})),
      ("Transformer/encoderblock_0", "encoderblock_0" in encoder),
      ("Transformer/encoder_norm", "encoder_norm" in encoder)] if not ok]
  if missing:
    raise CheckpointError(
        f"{path}: read as {fmt!r} but it is not a ViT checkpoint: missing {missing}; "
        f"top-level entries are {sorted(params)}.")
  kernel = params["embedding"]["kernel"]
  if kernel.ndim != 4:
    raise CheckpointError(
        f"{path}: embedding/kernel has shape {kernel.shape}, expected a 2-D patch "
        "embedding (ph, pw, 3, D); a 3-D (tubelet) kernel belongs to a video model.")
