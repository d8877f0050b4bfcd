"""Checkpoints: load the files researchers already have, adapt them, export them.

    pre = checkpoint.load_pretrained("hf-hub:facebook/dinov2-small")   # model + params +
    out = pre.model.apply({"params": pre.params}, images)              # preprocessing
    params = checkpoint.load("ViT-B_16.npz")            # params only, any supported format
    params, report = checkpoint.adapt(params, model_init_params)
    checkpoint.save_npz(params, "finetuned.npz")          # released vit_jax layout
    checkpoint.save_safetensors_timm(params, "finetuned.safetensors")
    checkpoint.save_hf(params, model, "finetuned_hf/")    # transformers ViT / DINOv2 folder

Formats read (detected from the file): released vit_jax/AugReg `.npz`,
big_vision `.npz`, this project's params `.npz`, timm and transformers
`.safetensors`, this project's Orbax training checkpoints, Scenic's flax
msgpack files. One concern per module: `formats` (detection, `load`), `npz`,
`safetensors_io`, `timm_model` (which model a timm file or Hub folder holds:
`read_timm`), `hf_model` (transformers model directories: `read_hf`),
`openclip_io` (OpenCLIP image towers: `read_openclip`), `model_spec`, `orbax_io`, `scenic_io`, `adapt`, `inflate` (image ViT -> ViViT),
`video` (image ViT or video checkpoint -> ViViT), `report` (the per-key report of
every surgery), `posemb` (position-embedding resize), `patch_resize` (FlexiViT),
`convert` (`python -m vit_jax.convert`), `pretrained` (`load_pretrained`: the model a
file holds, with its preprocessing), `hub` (`hf-hub:` ids), `preprocessing` (the input a
checkpoint expects), `hf_export` (`save_hf`: transformers ViT / DINOv2 folders). The file
formats, their key names and shapes: docs/checkpoint_formats.md.

Video models:

    params = checkpoint.load("vit_or_vivit_file", allow_video=True)
    params, report = checkpoint.adapt_video(params, init, variant=..., token_grid=...)
"""

from vit_jax.checkpoint.adapt import adapt
from vit_jax.checkpoint.errors import CheckpointError
from vit_jax.checkpoint.formats import (
    FORMATS,
    container,
    is_video_params,
    load,
    load_with_format,
)
from vit_jax.checkpoint.hf_export import save_hf
from vit_jax.checkpoint.hf_model import read_hf, read_hub_directory
from vit_jax.checkpoint.inflate import inflate_from_image
from vit_jax.checkpoint.model_spec import ModelSpec
from vit_jax.checkpoint.npz import save_npz
from vit_jax.checkpoint.openclip_io import read_openclip
from vit_jax.checkpoint.orbax_io import resolve_item_dir
from vit_jax.checkpoint.patch_resize import resize_patch_kernel
from vit_jax.checkpoint.posemb import resize_posemb
from vit_jax.checkpoint.pretrained import Pretrained, is_run, load_pretrained
from vit_jax.checkpoint.report import AdaptReport, KeyAction
from vit_jax.checkpoint.safetensors_io import linen_to_timm, save_safetensors_timm
from vit_jax.checkpoint.timm_model import read_timm
from vit_jax.checkpoint.video import adapt_video
from vit_jax.models.positions import posemb_prefix_rows, prefix_rows_from_params

__all__ = [
    "FORMATS", "AdaptReport", "CheckpointError", "KeyAction", "adapt", "adapt_video",
    "inflate_from_image", "posemb_prefix_rows", "prefix_rows_from_params",
    "container", "is_video_params", "linen_to_timm", "load", "load_with_format", "resize_patch_kernel", "resize_posemb",
    "resolve_item_dir", "save_npz", "save_safetensors_timm", "ModelSpec", "read_hf",
    "read_openclip", "read_hub_directory", "read_timm", "Pretrained", "is_run", "load_pretrained",
    "save_hf",
]
