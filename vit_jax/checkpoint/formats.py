"""`load(path)`: any supported checkpoint -> params in this project's layout.

The format is detected from the file itself (the extension is not trusted); a
`hf-hub:ORG/NAME` id stands for the safetensors file of that Hub repository (hub.py):

  directory                 Orbax checkpoint of a training run (orbax_io), or a
                            directory of Scenic `checkpoint_<step>` files (scenic_io)
  zip archive (`PK\\x03\\x04`)  `.npz`: released vit_jax, big_vision or ours (npz)
  8-byte length + JSON      `.safetensors`: timm or transformers ViT (safetensors_io), or an
                            OpenCLIP image tower (`visual.*`, openclip_io)
  directory with model.safetensors   a timm Hub folder (its config.json is read beside
                            the weights) or a transformers model directory (hf_model:
                            ViT, DeiT, DINOv2 (+registers), ViTMAE, CLIP, SigLIP)
  msgpack map               flax msgpack: a Scenic train state, e.g. ViViT (scenic_io)

PyTorch pickles (`.bin`, `.pth`, `.pt`, `.ckpt`; a torch.save zip or a raw pickle) are
refused without being opened further: unpickling runs code from the file. The error
gives the one-line conversion to `.safetensors`.

Video (ViViT) params are refused unless the caller asks for them
(`allow_video=True`), so that a video file given to an image model fails here
with a clear message rather than deep inside `adapt`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from typing import Any, Optional

import numpy as np

from vit_jax.checkpoint import (
    hf_model,
    hf_video,
    hub,
    naflex_io,
    npz,
    openclip_io,
    orbax_io,
    safetensors_io,
    scenic_io,
    timm_model,
    videoprism_npz,
)
from vit_jax.checkpoint.errors import CheckpointError

FORMATS = ("orbax", "vit_jax", "big_vision", "linen", "timm", "hf", "openclip", "scenic",
           "videoprism_npz")

_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"
PICKLE_EXTENSIONS = (".bin", ".pth", ".pt", ".ckpt")
HUB_WEIGHTS = "model.safetensors"  # the weights of a Hub folder (beside config.json)
OPENCLIP_WEIGHTS = "open_clip_model.safetensors"  # ... of an OpenCLIP Hub repository
_PICKLE_PROTOCOL = 0x80  # first byte of a pickle of protocol >= 2


def _is_torch_zip(path: str) -> bool:
  """A torch.save zip archive: its entries sit under one folder beside `data.pkl`."""
  import zipfile  # noqa: PLC0415

  try:
    with zipfile.ZipFile(path) as archive:
      return any(name.endswith("/data.pkl") or name == "data.pkl" for name in archive.namelist())
  except (zipfile.BadZipFile, OSError):
    return False


def pickle_error(path: str) -> CheckpointError:
  """The refusal of a PyTorch pickle, with the conversion that makes it loadable."""
  stem = os.path.splitext(os.path.basename(path))[0]
  return CheckpointError(
      f"{path}: a PyTorch pickle (torch.save). Unpickling runs code stored in the file, so "
      "this project never opens one. Convert it once, where torch is installed and you "
      "trust the file, then load the .safetensors:\n"
      "  python -c \"import torch, safetensors.torch as st; "
      f"sd = torch.load('{path}', map_location='cpu', weights_only=True); "
      f"st.save_file({{k: v.contiguous() for k, v in sd.items()}}, '{stem}.safetensors')\"\n"
      "(a checkpoint that nests its weights, e.g. under 'model' or 'state_dict', needs "
      "sd = sd['model'] first).")


def container(path: str) -> str:
  """'orbax', 'npz', 'safetensors' or 'scenic', from the directory or the file's first bytes."""
  path = os.fspath(path)
  if os.path.isdir(path):
    if not orbax_io.is_orbax_item(path) and scenic_io.latest_in_dir(path):
      return "scenic"
    if not orbax_io.is_orbax_item(path) and any(
        os.path.isfile(os.path.join(path, name)) for name in (HUB_WEIGHTS, OPENCLIP_WEIGHTS)):
      return "safetensors"  # a timm / Hugging Face / OpenCLIP Hub folder
    return "orbax"
  if not os.path.exists(path):
    raise CheckpointError(f"{path}: no such file or directory.")
  with open(path, "rb") as f:
    head = f.read(9)
  # A pickle opens with PROTO (0x80) and its protocol number; msgpack's 0x80 (an empty
  # map) is never followed by anything.
  is_pickle = head[:1] == bytes([_PICKLE_PROTOCOL]) and head[1:2] in (b"\x02", b"\x03",
                                                                     b"\x04", b"\x05")
  if path.lower().endswith(PICKLE_EXTENSIONS) or is_pickle:
    raise pickle_error(path)
  if head[:4] in (_ZIP_MAGIC, _EMPTY_ZIP_MAGIC):
    if _is_torch_zip(path):
      raise pickle_error(path)
    return "npz"
  # safetensors: little-endian u64 header size, then the JSON header.
  if len(head) == 9 and head[8:9] == b"{":
    (header_size,) = struct.unpack("<Q", head[:8])
    if 0 < header_size <= os.path.getsize(path) - 8:
      return "safetensors"
  # After safetensors: its first byte (the header size's low byte) may look like a map.
  if scenic_io.looks_like_msgpack_map(head):
    return "scenic"
  raise CheckpointError(
      f"{path}: not a checkpoint this project reads ({os.path.getsize(path)} bytes, starts "
      f"with {head[:8]!r}): expected an .npz (zip) archive, a .safetensors file, or an "
      "Orbax checkpoint directory (or a Scenic flax msgpack file).")


RUN_CONFIG = "config.json"  # a run's workdir (vit_jax.driver.workdir.CONFIG_FILE)
SOURCES = ("run", "orbax", "npz", "scenic", "hf", "openclip", "timm", "hf_weights",
           "videoprism_npz")


@dataclasses.dataclass(frozen=True)
class Source:
  """What a checkpoint source is (`detect`).

  Attributes:
    kind: one of SOURCES: "run" (this project's workdir: config.json + Orbax checkpoints),
      "orbax", "npz", "scenic", "hf" (a transformers folder: config.json with model_type),
      "openclip", "timm" (a file or Hub folder), "hf_weights" (transformers weights
      without their config.json), "videoprism_npz" (VideoPrism's released Flax encoder).
    path: the file or folder (a hf-hub: id resolved to its cached snapshot).
    weights: the .safetensors file of the safetensors kinds, else None.
  """
  kind: str
  path: str
  weights: Optional[str] = None


def _json(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def is_run(path: str) -> bool:
  """A training run's workdir: its config.json holds the run's config and data_info."""
  saved = _json(os.path.join(path, RUN_CONFIG)) if os.path.isdir(path) else None
  return isinstance(saved, dict) and "config" in saved and "data_info" in saved


def header_keys(weights: str) -> list[str]:
  """The tensor names of a .safetensors file, from its header alone."""
  from safetensors import safe_open  # noqa: PLC0415

  try:
    with safe_open(weights, framework="np") as f:
      return list(f.keys())
  except Exception:  # noqa: BLE001 (safetensors raises several types for a broken file)
    return list(safetensors_io.read_safetensors(weights))  # raises the clear error


def _is_videoprism_npz(path: str) -> bool:
  """A zip whose names are VideoPrism's; a damaged one is left to the npz reader's error."""
  import zipfile  # noqa: PLC0415

  try:
    with np.load(path, allow_pickle=False) as archive:
      return videoprism_npz.is_videoprism_npz(archive.files)
  except (zipfile.BadZipFile, OSError, ValueError, EOFError):
    return False


def detect(source: str) -> Source:
  """The one format detector: what `source` holds, from its content (not its name).

  `load_pretrained` and `load` both dispatch on it.
  """
  path = os.fspath(source)
  if hub.is_hub_id(path):  # hf-hub:ORG/NAME: its cached snapshot folder
    path = hub.resolve(path)
  if os.path.isdir(path):
    if is_run(path):
      return Source("run", path)
    if hf_model.is_hf_directory(path):
      return Source("hf", path, os.path.join(path, hf_model.WEIGHTS_FILE))
  kind = container(path)
  if kind == "npz" and _is_videoprism_npz(path):
    return Source("videoprism_npz", path)
  if kind != "safetensors":
    return Source(kind, path)
  weights = hub.weights_file(path) if os.path.isdir(path) else path
  folder = os.path.dirname(os.path.abspath(weights))
  config = _json(os.path.join(folder, RUN_CONFIG))
  if isinstance(config, dict) and "model_type" in config and "architecture" not in config:
    return Source("hf", folder, weights)  # a file of a transformers folder: read the folder
  keys = header_keys(weights)
  if openclip_io.is_openclip(keys):
    return Source("openclip", path, weights)
  if "patch_embed.proj.weight" in keys or naflex_io.is_naflex(keys):
    return Source("timm", path, weights)
  if any(".embeddings." in f".{k}" for k in keys):
    return Source("hf_weights", path, weights)
  safetensors_io.safetensors_format(keys, weights)  # raises: not a ViT, naming the keys
  raise AssertionError("unreachable")


def _model_type(folder: str) -> Any:
  config = _json(os.path.join(folder, RUN_CONFIG))
  return config.get("model_type") if isinstance(config, dict) else None


def load_with_format(path: str, *, num_heads: Optional[int] = None,
                     allow_video: bool = False) -> tuple[dict[str, Any], str]:
  """`load`, also returning the detected format (one of `FORMATS`).

  The format tells the caller which GELU the weights were trained with: 'timm'
  and 'hf' ports use the exact erf form (`gelu_approximate=False` for parity),
  the JAX formats (and 'scenic') the tanh approximation.
  """
  return read_params(detect(path), num_heads=num_heads, allow_video=allow_video)


def read_params(found: Source, *, num_heads: Optional[int] = None,
                allow_video: bool = False) -> tuple[dict[str, Any], str]:
  """The params and format of a detected source (`detect`), checked to be a ViT's."""
  final_norm = True  # False: a timm architecture without one (PE lang / spatial)
  if found.kind in ("run", "orbax"):
    params, fmt = orbax_io.load_orbax(found.path)
  elif found.kind == "npz":
    params, fmt = npz.load_npz(found.path)
  elif found.kind == "scenic":
    params, fmt = scenic_io.load_scenic(found.path)
  elif found.kind == "hf" and hf_video.reader_of(_model_type(found.path)) is not None:
    params, fmt = dict(hf_video.read_folder(found.path, _json(os.path.join(
        found.path, RUN_CONFIG))).params), "hf"  # a video family's reader (ViViT, VideoMAE)
  elif found.kind == "hf":
    params, fmt = hf_model.read_hf(found.path)[0], "hf"
  elif found.kind == "videoprism_npz":
    params, fmt = videoprism_npz.read(found.path).params, "videoprism_npz"
  else:
    tensors = safetensors_io.read_safetensors(found.weights)
    if found.kind == "openclip":
      params, fmt = openclip_io.openclip_to_linen(tensors, found.weights, num_heads), "openclip"
    elif found.kind == "timm":
      spec = timm_model.check_config(tensors, found.weights)
      if spec is not None:  # the config's architecture knows the heads (So150m, PE's MAP)
        num_heads = num_heads or spec.fields["num_heads"]
        final_norm = spec.options.final_norm
      params, fmt = safetensors_io.timm_to_linen(
          tensors, found.weights, num_heads,
          map_num_heads=spec.options.map_num_heads if spec else None), "timm"
    else:
      params, fmt = hf_model.weights_to_linen(tensors, found.weights, num_heads), "hf"
  _check_vit(params, found.path, fmt, allow_video, final_norm)
  return params, fmt


def load(path: str, *, num_heads: Optional[int] = None,
         allow_video: bool = False) -> dict[str, Any]:
  """The params of any checkpoint `load_pretrained` reads (the same detector, `detect`),
  without building its model: for fine-tuning into a model the caller chooses
  (`adapt`), and for files that do not say their model (ViViT, this project's params).

  Args:
    path: an `.npz` (released vit_jax/AugReg, big_vision, or ours), a timm or
      transformers `.safetensors`, an Orbax training checkpoint (workdir,
      its `checkpoints/` dir for the latest step, a step dir, or its `state/`),
      or a Hub id `hf-hub:ORG/NAME[@REVISION]` (its model.safetensors, from the
      Hugging Face cache; see `hub`).
    num_heads: head count for `.safetensors` files, which do not record it;
      defaults to that of the standard size with the file's width.
    allow_video: also accept ViViT params (tubelet kernel, factorised encoders),
      e.g. a Scenic ViViT file or a video run of this project; they keep the
      names of `vit_jax.models.VideoTransformer` (fit them with
      `checkpoint.adapt_video`).

  Returns:
    Nested dict of numpy arrays in the per-layer Linen layout of
    `vit_jax.models.VisionTransformer` (`Transformer/encoderblock_{i}/...`,
    posemb [1, N(+1), D] with the cls row first when there is a cls token).
    Fit it to a model with `adapt`.
  """
  return load_with_format(path, num_heads=num_heads, allow_video=allow_video)[0]


def is_video_params(params: dict[str, Any]) -> bool:
  """True for ViViT params: a tubelet kernel, a factorised encoder, or Model 3's blocks."""
  kernel = params.get("embedding", {}).get("kernel")
  if kernel is not None and np.ndim(kernel) == 5:
    return True
  if "SpatialTransformer" in params:
    return True
  block = params.get("Transformer", {}).get("encoderblock_0", {})
  return "MultiHeadDotProductAttention_time" in block


def _check_vit(params: dict[str, Any], path: str, fmt: str, allow_video: bool = False,
               final_norm: bool = True) -> None:
  if allow_video and is_video_params(params):
    _check_vivit(params, path, fmt)
    return
  encoder = params.get("Transformer", {})
  missing = [name for name, ok in [
      ("embedding/kernel", "kernel" in params.get("embedding", {})),
      ("Transformer/encoderblock_0", "encoderblock_0" in encoder),
      ("Transformer/encoder_norm (or fc_norm)",
       "encoder_norm" in encoder or "fc_norm" in params or not final_norm)]
      if not ok]
  if missing:
    raise CheckpointError(
        f"{path}: read as {fmt!r} but it is not a ViT checkpoint: missing {missing}; "
        f"top-level entries are {sorted(params)}.")
  kernel = params["embedding"]["kernel"]
  if kernel.ndim != 4:
    raise CheckpointError(
        f"{path}: embedding/kernel has shape {kernel.shape}, expected a 2-D patch "
        "embedding (ph, pw, 3, D); a 3-D (tubelet) kernel belongs to a video model.")
  if is_video_params(params):  # a 2-D frame kernel under video blocks (TimeSformer)
    raise CheckpointError(
        f"{path}: a video model's checkpoint (read as {fmt!r}, its blocks attend over time): "
        "it fits a video model (load it with allow_video=True, or fine-tune it on a video "
        "dataset), not an image ViT.")


def _check_vivit(params: dict[str, Any], path: str, fmt: str) -> None:
  encoder_name = "SpatialTransformer" if "SpatialTransformer" in params else "Transformer"
  encoder = params.get(encoder_name, {})
  missing = [name for name, ok in [
      ("embedding/kernel", "kernel" in params.get("embedding", {})),
      (f"{encoder_name}/encoderblock_0", "encoderblock_0" in encoder),
      (f"{encoder_name}/encoder_norm (or fc_norm)",
       "encoder_norm" in encoder or "fc_norm" in params)] if not ok]
  if missing:
    raise CheckpointError(
        f"{path}: read as {fmt!r} but it is not a ViViT checkpoint: missing {missing}; "
        f"top-level entries are {sorted(params)}.")
