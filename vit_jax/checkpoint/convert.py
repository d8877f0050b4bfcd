"""Converts ViT checkpoints between formats.

    python -m vit_jax.convert SRC DST [--format npz|safetensors-timm|orbax] [--num-heads N]

SRC is anything `vit_jax.checkpoint.load` reads (released vit_jax/AugReg or
big_vision `.npz`, timm or transformers `.safetensors` or Hub folder, an Orbax
training checkpoint). DST's format defaults from its extension:

  .npz           released vit_jax layout (timm's and vit_jax's loaders read it)
  .safetensors   timm `VisionTransformer` (or `Eva`, for EVA-02 / DINOv3 params) state dict
  --format orbax a standalone Orbax item {"params": ...} (a directory)

Parameters are converted as they are; adapt them to a model with
`vit_jax.checkpoint.adapt` when fine-tuning.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from vit_jax import checkpoint, errors
from vit_jax.checkpoint import tree as tree_lib

OUTPUT_FORMATS = ("npz", "safetensors-timm", "orbax")


def _output_format(dst: str, requested: str | None) -> str:
  if requested:
    return requested
  if dst.endswith(".npz"):
    return "npz"
  if dst.endswith(".safetensors"):
    return "safetensors-timm"
  raise SystemExit(f"Cannot tell the output format of {dst!r} from its extension: "
                   f"pass --format ({', '.join(OUTPUT_FORMATS)}).")


def save_orbax(params, path: str, overwrite: bool = False) -> None:
  """Writes {"params": params} as one Orbax item; `checkpoint.load(path)` reads it."""
  import orbax.checkpoint as ocp

  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(os.path.abspath(path), {"params": params}, force=overwrite)


def convert(src: str, dst: str, fmt: str | None = None, num_heads: int | None = None,
            overwrite: bool = False) -> str:
  """Reads `src`, writes `dst` (refused if it exists, unless `overwrite`); a summary line."""
  fmt = _output_format(dst, fmt)
  if os.path.exists(dst) and not overwrite:
    raise checkpoint.CheckpointError(
        f"{dst} already exists: pass --overwrite to replace it, or choose another "
        "destination. Nothing was written.")
  params, src_fmt = checkpoint.load_with_format(src, num_heads=num_heads)
  if fmt == "npz":
    checkpoint.save_npz(params, dst)
  elif fmt == "safetensors-timm":
    checkpoint.save_safetensors_timm(params, dst)
  else:
    save_orbax(params, dst, overwrite)
  count = sum(np.size(v) for v in tree_lib.flatten(params).values())
  return f"{src} ({src_fmt}) -> {dst} ({fmt}): {count:,} parameters"


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m vit_jax.convert",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("src", help="checkpoint to read (format detected from the file)")
  parser.add_argument("dst", help="file (or directory for orbax) to write")
  parser.add_argument("--format", choices=OUTPUT_FORMATS, default=None,
                      help="output format; default from DST's extension")
  parser.add_argument("--num-heads", type=int, default=None,
                      help="head count of a .safetensors SRC of non-standard width")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace DST if it exists (by default an existing DST is an error)")
  parser.add_argument("--verbose", action="store_true",
                      help="show the traceback of errors vit_jax reports on purpose")
  args = parser.parse_args(argv)
  with errors.reported("vit_jax.convert", args.verbose):
    print(convert(args.src, args.dst, args.format, args.num_heads, args.overwrite))
  return 0


if __name__ == "__main__":
  sys.exit(main())
