"""`load_pretrained(source)`: the model a checkpoint holds, its params and its preprocessing.

    pre = checkpoint.load_pretrained("hf-hub:facebook/dinov2-small")
    features = pre.model.apply({"params": pre.params}, images)   # pooled output [B, D]

Everything comes from the file (and the configs beside it), nothing from the caller:

  source                                  architecture from               preprocessing from
  timm file / Hub folder                  keys + config.json architecture  pretrained_cfg
  transformers folder (config.json        model_type, sizes, eps, act     preprocessor_config.json
    with model_type; hf_model)
  OpenCLIP (`visual.*`; openclip_io)      keys + open_clip_config.json    preprocess_cfg
  .npz (vit_jax / AugReg / big_vision),   the parameter shapes            the JAX default
    Orbax checkpoint, Scenic msgpack                                        (big_vision's for
                                                                            a two-tower .npz)
  a training run's workdir (config.json   its saved config, as the        its saved evaluation
    with config and data_info)              driver builds it                preprocessing
  hf-hub:ORG/NAME                         its cached snapshot folder, as above

`formats.detect` tells which (the one detector; `load` uses it too). The family's published
preprocessing (its module in `vit_jax.families`) stands in where no config says it. A file
with a classification head gives a model whose output is that head's logits (a distilled
DeiT: the mean of both heads); one without gives `num_classes=None` and the family's pooled
representation (the normed cls token for DINOv2 and CLIP, the MAP head for SigLIP,
`pre_logits` for a ViT with a pooler).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from typing import Any, Optional

from vit_jax import families
from vit_jax.checkpoint import (
    formats,
    hf_model,
    hf_video,
    npz,
    openclip_io,
    orbax_io,
    safetensors_io,
    timm_model,
    videoprism_npz,
)
from vit_jax.checkpoint import preprocessing as prep
from vit_jax.checkpoint.errors import CheckpointError
from vit_jax.families import siglip as siglip_family
from vit_jax.models import positions, vit

HF_PREPROCESSOR = "preprocessor_config.json"
RUN_CONFIG = formats.RUN_CONFIG


@dataclasses.dataclass(frozen=True)
class Pretrained:
  """A model, its parameters and the input it expects: what `load_pretrained` returns, and
  what predict, visualize, the evaluators and the driver's `init_from` use.

  Attributes:
    model: the module (`model.apply({"params": params}, images)`).
    params: its parameters (per-layer Linen layout; numpy from `load_pretrained`, on the
      device from `vit_jax.tools.inference`'s loaders).
    preprocessing: the input it expects (`preprocessing.data_overrides()` for config.data).
    format: "timm", "hf:<model_type>", "openclip", "run", or a `formats.FORMATS` name.
    source: the file (or run) the weights came from.
    left_out: keys of the file that are not part of the vision model (a text tower,
      MAE's decoder), for the caller to log.
    class_names: one name per output class ("0", "1", ... when the file has no names).
    is_video: the model takes clips [T, H, W, 3].
    model_name: the registered name it was built from, when it was.
    eval_data: the `config.data` keys of its evaluation input as a run saved them
      (video clips and views included); None: those of `preprocessing` (`data_config`).
  """
  model: Any
  params: Any
  preprocessing: Optional[prep.Preprocessing] = None
  format: str = ""
  source: str = ""
  left_out: tuple[str, ...] = ()
  class_names: tuple[str, ...] = ()
  is_video: bool = False
  model_name: Optional[str] = None
  eval_data: Optional[Mapping[str, Any]] = None

  def data_config(self) -> dict[str, Any]:
    """The `config.data` keys `vit_jax.data.preprocess_for_eval` needs for this model."""
    if self.eval_data is not None:
      return dict(self.eval_data)
    from vit_jax import data  # noqa: PLC0415 (tensorflow only for callers that preprocess)

    keys = ("image_size", "resize_small", "resize_method", "value_range", "mean", "std")
    out = {k: v for k, v in data.default_config().to_dict().items() if k in keys}
    out.update(self.preprocessing.data_overrides())
    return out

  # Inference on the bundle: vit_jax.tools.inference holds the code.
  def preprocess(self, raw_examples):
    """uint8 images [H, W, C] or videos [T, H, W, C] -> model inputs (inference.preprocess)."""
    from vit_jax.tools import inference  # noqa: PLC0415

    return inference.preprocess(self, raw_examples)

  def logits(self, inputs, batch_size: int = 64):
    """Logits [N, C] of preprocessed inputs (inference.logits)."""
    from vit_jax.tools import inference  # noqa: PLC0415

    return inference.logits(self, inputs, batch_size)

  def probabilities(self, inputs, batch_size: int = 64):
    """Softmax of `logits`: [N, C]."""
    from vit_jax.tools import inference  # noqa: PLC0415

    return inference.probabilities(self, inputs, batch_size)

  @functools.cached_property
  def device_params(self) -> Any:
    """`params` placed on the default device once (host numpy leaves would be copied in
    again on every forward pass: 344 MB for ViT-B/16)."""
    import jax  # noqa: PLC0415

    return jax.device_put(self.params)


def _class_names(model: Any) -> tuple[str, ...]:
  return tuple(str(i) for i in range(getattr(model, "num_classes", None) or 0))


def _input_size(model: vit.VisionTransformer, params: Mapping[str, Any],
                default: int) -> tuple[int, int]:
  """Input (H, W) in pixels from the position embedding's square grid, else `default`."""
  posemb = params.get("Transformer", {}).get("posembed_input", {}).get("pos_embedding")
  if posemb is None:
    return (default, default)
  return positions.input_size_from_rows(posemb.shape[1], positions.posemb_prefix_rows(model),
                                        model.patch_size)


def _family_default(family: Optional[str], model: vit.VisionTransformer,
                    params: Mapping[str, Any], default_size: int = 224) -> prep.Preprocessing:
  """The published preprocessing of `family` (a plain ViT's when unknown) at the input
  size of the position embedding."""
  return prep.family_default(family or "vit", _input_size(model, params, default_size))


def _left_out(keys: Mapping[str, Any]) -> tuple[str, ...]:
  """Keys of the file that are not the image model (a text tower, MAE's decoder)."""
  return tuple(sorted(k for k in keys if hf_model.NOT_THE_IMAGE_MODEL.match(k)))


def describe_linen(params: Mapping[str, Any], fmt: str) -> vit.VisionTransformer:
  """The VisionTransformer of per-layer Linen params (npz, Orbax): sizes from the shapes.

  This covers the released JAX families (vit_jax / AugReg, big_vision, SigLIP). A run of
  this project with the later families' options (registers, LayerScale, ...) holds
  settings the params cannot show (epsilon, RoPE, position rows): load it with its
  config (`vit_jax.tools.inference.load_run(workdir)`), or export it to timm first.
  """
  later = sorted({"registers", "dist", "head_dist", "fc_norm"} & set(params))
  if later:
    raise CheckpointError(
        f"a {fmt} checkpoint with {later}: its architecture is not in the params alone; "
        "load the run with its config (vit_jax.tools.inference.load_run(workdir)) or export "
        "it to timm safetensors (python -m vit_jax.convert) and load that.")
  try:
    block = params["Transformer"]["encoderblock_0"]
    heads = block["MultiHeadDotProductAttention_0"]["query"]["kernel"].shape[1]
    # The one describe: the params in timm's names, with what the JAX formats imply.
    sd = safetensors_io.linen_to_timm(params, "vit")
  except (KeyError, IndexError) as e:
    raise CheckpointError(f"a {fmt} checkpoint without the ViT parameter tree this project "
                          f"builds (missing {e}).") from e
  settings = dict(act_layer="gelu" if fmt in ("timm", "hf") else "gelu_tanh")
  spec = timm_model.describe(sd, fmt, settings=settings, num_heads=heads)
  fields = dict(spec.fields)
  if "posembed_input" not in params["Transformer"]:
    fields["posemb"] = "sincos2d"  # big_vision's fixed table: not a parameter
  return vit.VisionTransformer(options=spec.options, **fields)


def _linen_pretrained(found: formats.Source) -> Pretrained:
  params, fmt = formats.read_params(found)
  model = describe_linen(params, fmt)
  pre = _family_default("vit", model, params)
  if found.kind == "npz" and npz.is_image_text(found.path):  # SigLIP (2), LiT: big_vision's
    d = siglip_family.BIG_VISION_IMAGE_TEXT
    pre = prep.Preprocessing(d.mean, d.std, pre.input_size, d.interpolation, d.crop_pct,
                             "big_vision image-text default")
  return Pretrained(model, params, pre, fmt, found.path)


HF_VIDEO_PREPROCESSOR = "video_preprocessor_config.json"


def _hf_video_pretrained(folder: str, config: Mapping[str, Any]) -> Pretrained:
  """A transformers video folder (hf_video): the family's reader builds the model; the clip
  preprocessing comes from video_preprocessor_config.json (transformers' video processors),
  else preprocessor_config.json (its image processors), else the family's published one;
  the frame count from config.json (`num_frames`)."""
  found = hf_video.read_folder(folder, config)
  default = dataclasses.replace(prep.family_default(found.family, found.input_size),
                                num_frames=found.num_frames)
  pre = default
  for name in (HF_VIDEO_PREPROCESSOR, HF_PREPROCESSOR):
    path = os.path.join(folder, name)
    pre_cfg = prep.read_json(path)
    if pre_cfg:
      pre = prep.from_hf_video_processor(pre_cfg, default, found.num_frames, path)
      break
  weights = os.path.join(folder, hf_model.WEIGHTS_FILE)
  return Pretrained(found.model, found.params, pre, f"hf:{config.get('model_type')}",
                    weights, found.left_out, _class_names_of(config, found.model),
                    is_video=True)


def _class_names_of(config: Mapping[str, Any], model: Any) -> tuple[str, ...]:
  """config.json's id2label (Kinetics class names), else "0", "1", ..."""
  names = config.get("id2label") or {}
  count = getattr(model, "num_classes", None) or 0
  if count and all(str(i) in names for i in range(count)):
    return tuple(str(names[str(i)]) for i in range(count))
  return _class_names(model)


def _hf_pretrained(folder: str, config: Mapping[str, Any]) -> Pretrained:
  if hf_video.reader_of(config.get("model_type")) is not None:
    return _hf_video_pretrained(folder, config)
  params, spec = hf_model.read_hf(folder)
  model = spec.model()
  vision = config.get("vision_config", config)
  pre_cfg = prep.read_json(os.path.join(folder, HF_PREPROCESSOR))
  if pre_cfg and families.get(spec.family).preprocessing.max_num_patches:  # NaFlex
    pre = prep.from_naflex_processor(pre_cfg, model.patch_hw[0],
                                     os.path.join(folder, HF_PREPROCESSOR))
  else:
    pre = (prep.from_hf_preprocessor(pre_cfg, os.path.join(folder, HF_PREPROCESSOR))
           if pre_cfg else
           _family_default(spec.family, model, params, int(vision.get("image_size", 224))))
  files = hf_model.weights_files(folder)
  return Pretrained(model, params, pre, f"hf:{config.get('model_type')}", files[0],
                    _left_out([k for file in files for k in formats.header_keys(file)]))


def _openclip_pretrained(weights: str, keys: Mapping[str, Any], config: Optional[Mapping[str, Any]],
                         architecture: Optional[str]) -> Pretrained:
  quick_gelu = ("quickgelu" in architecture) if architecture else None
  params, spec = openclip_io.read_openclip(weights, quick_gelu=quick_gelu)
  model = spec.model()
  pre = (prep.from_openclip_config(config, _input_size(model, params, 224)) if config
         else _family_default(spec.family, model, params))
  return Pretrained(model, params, pre, "openclip", weights, _left_out(keys))


def _timm_pretrained(path: str, architecture: Optional[str]) -> Pretrained:
  params, found = timm_model.read_timm(path, architecture)
  weights = os.path.join(path, timm_model.WEIGHTS_FILE) if os.path.isdir(path) else path
  model = found.model()
  pre = prep.from_timm_config({"pretrained_cfg": found.pretrained_cfg}, weights) \
      if found.pretrained_cfg else None
  pre = pre or _family_default(found.family, model, params)
  budget = found.family and families.get(found.family).preprocessing.max_num_patches
  if budget and pre.max_num_patches is None:  # NaFlexViT: pretrained_cfg has no budget
    pre = dataclasses.replace(pre, max_num_patches=budget)
  return Pretrained(model, params, pre, "timm", weights)


def _run_pretrained(workdir: str, saved: Mapping[str, Any]) -> Pretrained:
  """A training run of this project: the model its config.json builds (as the driver
  builds it), the weights the evaluator scores (the EMA when the run kept one) and the
  evaluation preprocessing it saved."""
  from vit_jax.driver import config as config_lib  # noqa: PLC0415 (a run's own config)

  config, info = saved["config"], saved["data_info"]
  # Inference needs no remat (nothing is kept for a backward pass): "auto" -> off.
  model = config_lib.build_model(dict(config, model=config.get("model", {})),
                                 info["num_classes"])
  params, _ = orbax_io.load_orbax(workdir, entry="eval")
  eval_data = dict(info["preprocessing"])
  return Pretrained(model, params, prep.from_data_config(eval_data, workdir), "run", workdir,
                    class_names=tuple(info["class_names"]), is_video=bool(info["is_video"]),
                    model_name=config["model_name"], eval_data=eval_data)


def load_pretrained(source: str, *, architecture: Optional[str] = None) -> Pretrained:
  """The model, params and preprocessing of any checkpoint (see the module docstring).

  The one entry point for reading a checkpoint: it detects the format (`load` is its
  params-only form for the formats that do not say the model).

  Args:
    source: a file (.safetensors, .npz, Scenic msgpack), a folder (timm Hub,
      transformers, OpenCLIP, a training run's workdir, an Orbax checkpoint), or
      `hf-hub:ORG/NAME[@REVISION]`.
    architecture: a timm architecture name, for a bare file whose keys leave the model
      open (RoPE settings, QuickGELU).
  """
  found = _load_pretrained(os.fspath(source), architecture)
  if not found.class_names:
    found = dataclasses.replace(found, class_names=_class_names(found.model))
  return found


def _load_pretrained(path: str, architecture: Optional[str]) -> Pretrained:
  found = formats.detect(path)
  if found.kind == "run":
    return _run_pretrained(found.path, prep.read_json(os.path.join(found.path, RUN_CONFIG)))
  if found.kind == "hf":
    return _hf_pretrained(found.path, prep.read_json(
        os.path.join(found.path, hf_model.CONFIG_FILE)))
  if found.kind in ("orbax", "npz", "scenic"):
    return _linen_pretrained(found)
  if found.kind == "videoprism_npz":
    read = videoprism_npz.read(found.path)
    return Pretrained(read.model, read.params, prep.family_default(read.family, read.input_size),
                      "videoprism_npz", found.path, read.left_out, is_video=True)
  if found.kind == "hf_weights":
    raise CheckpointError(
        f"{found.weights}: transformers weights without their config.json (model_type, "
        "sizes): load the model folder (or hf-hub:ORG/NAME) rather than the file alone.")
  if found.kind == "openclip":
    folder = os.path.dirname(os.path.abspath(found.weights))
    return _openclip_pretrained(found.weights, formats.header_keys(found.weights),
                                prep.read_json(os.path.join(folder, openclip_io.CONFIG_FILE)),
                                architecture)
  return _timm_pretrained(found.weights, architecture)
