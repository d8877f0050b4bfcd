"""Checkpoints: load the files researchers already have, adapt them, export them.

One entry point reads any checkpoint, detecting its format from its content:

    pre = checkpoint.load_pretrained("hf-hub:facebook/dinov2-small")   # model + params +
    out = pre.model.apply({"params": pre.params}, images)              # preprocessing
    params = checkpoint.load("ViT-B_16.npz")    # the same detector, params only
    params, report = checkpoint.adapt(params, model_init_params)
    checkpoint.save_npz(params, "finetuned.npz")          # released vit_jax layout
    checkpoint.save_safetensors_timm(params, "finetuned.safetensors")
    checkpoint.save_hf(params, model, "finetuned_hf/")    # transformers ViT / DINOv2 folder

`load_pretrained(source)` takes a file, a folder, a `hf-hub:` id or a training run's
workdir and returns a `Pretrained` bundle (model, params, preprocessing, class names): the
one type predict, visualize, the evaluators and the driver use. `load` is its params-only
form (also for ViViT and this project's params, whose files do not say the model);
`load_with_format` is `load` returning the detected format too. The per-format readers
(`timm_model.read_timm`, `hf_model.read_hf`, `openclip_io.read_openclip`) are what
`load_pretrained` dispatches to (`formats.detect`); what each family is comes from
`vit_jax.families`.

Formats read: released vit_jax/AugReg `.npz`, big_vision `.npz`, this project's params
`.npz`, timm and transformers `.safetensors` (files and Hub folders), OpenCLIP towers, this
project's Orbax training checkpoints and workdirs, Scenic's flax msgpack files. One
concern per module: `formats` (detection, `load`), `npz`, `safetensors_io`, `timm_model`,
`hf_model`, `openclip_io`, `model_spec`, `orbax_io`, `scenic_io`, `adapt`, `inflate`
(image ViT -> ViViT), `video` (image ViT or video checkpoint -> ViViT), `report` (the
per-key report of every surgery), `posemb` (position-embedding resize), `patch_resize`
(FlexiViT), `convert` (`python -m vit_jax.convert`), `pretrained` (`load_pretrained`),
`hub` (`hf-hub:` ids), `preprocessing` (the input a checkpoint expects), `hf_export`
(`save_hf`). The file formats, their key names and shapes: docs/checkpoint_formats.md.

Video models:

    params = checkpoint.load("vit_or_vivit_file", allow_video=True)
    params, report = checkpoint.adapt_video(params, init, variant=..., token_grid=...)
    pre = checkpoint.load_pretrained("videomae-base-finetuned-kinetics")  # transformers folder
    checkpoint.save_hf_video(pre.params, pre.model, "exported/", num_frames=16)
"""

from vit_jax.checkpoint.adapt import adapt
from vit_jax.checkpoint.errors import CheckpointError
from vit_jax.checkpoint.formats import (
    FORMATS,
    container,
    detect,
    is_run,
    is_video_params,
    load,
    load_with_format,
)
from vit_jax.checkpoint.hf_export import save_hf
from vit_jax.checkpoint.hf_video import save_hf_video
from vit_jax.checkpoint.inflate import inflate_from_image
from vit_jax.checkpoint.model_spec import ModelSpec
from vit_jax.checkpoint.npz import save_npz
from vit_jax.checkpoint.orbax_io import resolve_item_dir
from vit_jax.checkpoint.patch_resize import resize_patch_kernel
from vit_jax.checkpoint.posemb import resize_posemb
from vit_jax.checkpoint.pretrained import Pretrained, load_pretrained
from vit_jax.checkpoint.report import AdaptReport, KeyAction
from vit_jax.checkpoint.safetensors_io import linen_to_timm, save_safetensors_timm
from vit_jax.checkpoint.video import adapt_video
from vit_jax.models.positions import posemb_prefix_rows, prefix_rows_from_params

__all__ = [
    "FORMATS", "AdaptReport", "CheckpointError", "KeyAction", "ModelSpec", "Pretrained",
    "adapt", "adapt_video", "container", "detect", "inflate_from_image", "is_run",
    "is_video_params", "linen_to_timm", "load", "load_pretrained", "load_with_format",
    "posemb_prefix_rows", "prefix_rows_from_params", "resize_patch_kernel", "resize_posemb",
    "resolve_item_dir", "save_hf", "save_npz", "save_safetensors_timm",
    "save_hf_video",
]
