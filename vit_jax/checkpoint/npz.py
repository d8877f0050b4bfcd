"""`.npz` checkpoints: released vit_jax/AugReg files, big_vision files, our own params.

All three are flat archives with `/`-joined keys; they differ in three ways
(docs/checkpoint_formats.md, 'ViT: vit_jax / AugReg .npz' and 'big_vision .npz'):

  released vit_jax   pre-Linen block numbering (`MultiHeadDotProductAttention_1`,
                     `LayerNorm_2`, `MlpBlock_3`), posemb under
                     `Transformer/posembed_input` with a cls row.
  big_vision         Linen numbering, top-level `pos_embedding` without a cls row
                     (added before the cls token is concatenated), optional
                     `MAPHead_0`, optionally scanned `Transformer/encoderblock/...`.
  linen (ours)       Linen numbering, the layout of `VisionTransformer` itself.

Any of them may sit under a prefix (`opt/target/`, `params/`, `params/img/`).
"""

from __future__ import annotations

import os
import re
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from vit_jax.checkpoint import tree as tree_lib
from vit_jax.checkpoint.errors import CheckpointError
from vit_jax.models import layout

# Known prefixes, most specific first (`params/img/` before `params/`).
PREFIXES = ("opt/target/", "params/img/", "params/", "")

# Inside an encoder block the pre-Linen API numbered sub-modules in call order
# regardless of type; Linen numbers them per type.
PRE_LINEN_TO_LINEN = {
    "LayerNorm_0": "LayerNorm_0",
    "MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0",
    "LayerNorm_2": "LayerNorm_1",
    "MlpBlock_3": "MlpBlock_0",
}
LINEN_TO_PRE_LINEN = {v: k for k, v in PRE_LINEN_TO_LINEN.items()}

_BLOCK = re.compile(r"^encoderblock(_\d+)?$")
_PRE_LINEN_KEY = re.compile(
    r"(^|/)encoderblock(_\d+)?/(MultiHeadDotProductAttention_1|LayerNorm_2|MlpBlock_3)/")
_LINEN_KEY = re.compile(
    r"(^|/)encoderblock(_\d+)?/(MultiHeadDotProductAttention_0|LayerNorm_1|MlpBlock_0)/")

POSEMB_KEY = "Transformer/posembed_input/pos_embedding"


def read_npz(path: str) -> dict[str, np.ndarray]:
  """All arrays of an `.npz` archive, read eagerly so that corruption shows here."""
  try:
    with np.load(path, allow_pickle=False) as data:
      return {name: data[name] for name in data.files}
  except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as e:
    raise CheckpointError(
        f"{path}: cannot read it as an .npz archive of arrays ({type(e).__name__}: {e}). "
        "The file is truncated or corrupt (download it again), or not an .npz checkpoint."
    ) from e


def is_image_text(path: str) -> bool:
  """A big_vision two-tower archive (SigLIP, SigLIP 2, LiT): `params/img/` beside
  `params/txt/` (member names only; nothing is read)."""
  try:
    with zipfile.ZipFile(path) as archive:
      names = archive.namelist()
  except (zipfile.BadZipFile, OSError):
    return False
  return (any(n.startswith("params/img/") for n in names) and
          any(n.startswith("params/txt/") for n in names))


def _rename_block_children(key: str, table: Mapping[str, str]) -> str:
  parts = key.split("/")
  for i in range(1, len(parts)):
    if _BLOCK.match(parts[i - 1]) and parts[i] in table:
      parts[i] = table[parts[i]]
  return "/".join(parts)


def strip_prefix(flat: Mapping[str, np.ndarray], path: str) -> tuple[dict[str, np.ndarray], str]:
  """Keeps the model's params, dropping a known prefix and anything outside it.

  Optimizer state (`opt/state/...`) and other towers (`params/txt/...`) are
  outside the prefix and ignored.
  """
  for prefix in PREFIXES:
    if f"{prefix}embedding/kernel" in flat:
      return {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}, prefix
  found = [k for k in flat if k.endswith("embedding/kernel")]
  hint = (f" It has {found[0]!r}: an unknown prefix." if found else
          f" Its keys start {sorted(flat)[:5]}.")
  raise CheckpointError(
      f"{path}: not a ViT checkpoint: expected an `embedding/kernel` patch embedding, "
      f"optionally under one of the prefixes {[p for p in PREFIXES if p]}.{hint}")


def npz_format(flat: Mapping[str, np.ndarray]) -> str:
  """'vit_jax' (released, pre-Linen), 'big_vision', or 'linen' (this project)."""
  pre_linen = any(_PRE_LINEN_KEY.search(k) for k in flat)
  linen = any(_LINEN_KEY.search(k) for k in flat)
  if pre_linen and linen:
    raise CheckpointError("The checkpoint mixes pre-Linen (MlpBlock_3) and Linen (MlpBlock_0) "
                          "block names; it is not a file any ViT codebase writes.")
  if pre_linen:
    return "vit_jax"
  if "pos_embedding" in flat:
    return "big_vision"
  return "linen"


def big_vision_to_linen(flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Moves big_vision's top-level `pos_embedding` [1, N, D] into our encoder.

  big_vision adds the position embedding to the patch tokens and then
  concatenates cls; our model concatenates cls and then adds a [1, N+1, D]
  embedding. A zero row for cls makes the two forward passes identical: the
  cls token enters the encoder as `cls + 0`, exactly as in big_vision. (Any
  split of a vector between `cls` and that row is equivalent, since the two
  are only ever summed; zeros keeps `cls` bit-identical.)
  """
  flat = dict(flat)
  posemb = flat.pop("pos_embedding")
  if "cls" in flat:
    posemb = np.concatenate([np.zeros_like(posemb[:, :1]), posemb], axis=1)
  flat[POSEMB_KEY] = posemb
  return flat


def load_npz(path: str) -> tuple[dict[str, Any], str]:
  """Reads any ViT `.npz` as per-layer Linen params; returns (params, format name)."""
  flat, _ = strip_prefix(read_npz(path), path)
  fmt = npz_format(flat)
  if fmt == "vit_jax":
    flat = {_rename_block_children(k, PRE_LINEN_TO_LINEN): v for k, v in flat.items()}
  elif fmt == "big_vision":
    flat = big_vision_to_linen(flat)
  params = tree_lib.unflatten(flat)
  if layout.is_stacked(params):
    params = layout.unstack_layers(params)
  return params, fmt


def storable(x: Any) -> np.ndarray:
  """A numpy array of a dtype every reader knows."""
  x = np.asarray(x)
  # bfloat16 & co. (ml_dtypes, kind 'V') are not portable .npy dtypes.
  return x.astype(np.float32) if x.dtype.kind == "V" else x


def atomic_write(path: str, write_fn) -> None:
  """Calls `write_fn(file)` on a temporary file beside `path`, then renames it.

  Readers never see a half-written file: either the old file or the new one.
  """
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                             dir=directory)
  try:
    with os.fdopen(fd, "wb") as f:
      write_fn(f)
      f.flush()
      os.fsync(f.fileno())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def to_released_flat(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Our params (per-layer or scanned) -> flat released vit_jax keys."""
  params = tree_lib.to_numpy(params)
  if layout.is_stacked(params):
    params = layout.unstack_layers(params)
  return {_rename_block_children(k, LINEN_TO_PRE_LINEN): storable(v)
          for k, v in tree_lib.flatten(params).items()}


def save_npz(params: Mapping[str, Any], path: str) -> None:
  """Writes `params` in the released vit_jax layout (pre-Linen names, flat keys).

  The file is what timm's and vit_jax's loaders read (`timm.create_model(...,
  pretrained_cfg_overlay=dict(file=path))`, `checkpoint.load_pretrained`).
  Scanned params are unstacked; bfloat16 leaves are written as float32. The
  write is atomic.

  Args:
    params: the model's params tree (numpy or jax arrays).
    path: destination, conventionally ending in `.npz`.
  """
  flat = to_released_flat(params)
  atomic_write(path, lambda f: np.savez(f, **flat))
