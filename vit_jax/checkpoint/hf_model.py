"""Hugging Face `transformers` model directories (config.json + model.safetensors).

The vision models researchers fine-tune from, read without torch or transformers
(docs/checkpoint_formats.md, 'Hugging Face model directories'):

  model_type              classes                                   key prefix
  vit                     ViTModel, ViTForImageClassification       "" / "vit."
  deit                    DeiTModel, DeiTForImageClassification(WithTeacher)   "" / "deit."
  dinov2                  Dinov2Model                               "" / "dinov2."
  dinov2_with_registers   Dinov2WithRegistersModel                  "" / "dinov2_with_registers."
  vit_mae                 ViTMAEModel, ViTMAEForPreTraining (the encoder; its decoder is left out)
  clip_vision_model, clip CLIPVisionModel(WithProjection), CLIPModel's vision tower
  siglip_vision_model, siglip   SiglipVisionModel, SiglipModel's vision tower
  siglip2_vision_model, siglip2 Siglip2VisionModel, Siglip2Model's vision tower (NaFlex:
                          a Linear patch embedding, a 16x16 grid resized per image)
  aimv2_vision_model      Aimv2VisionModel (RMSNorm, SwiGLU, its attention-pooling head)
  ijepa                   IJepaModel, IJepaForImageClassification   "" / "ijepa."
  dinov3_vit              DINOv3ViTModel, DINOv3ViTBackbone         ""

`config.json` gives what the weights cannot: head count, LayerNorm epsilon, activation
(`hidden_act`: "gelu" erf, "quick_gelu", "gelu_pytorch_tanh" tanh), SwiGLU
(`use_swiglu_ffn`). The model built is the one whose output is the file's: the
classifier's logits when it has one, else the reference's pooled output (ViT's
`pooler_output`, the normed cls token of DINOv2 / CLIP, the MAP head of SigLIP,
CLIP's `image_embeds` with a `visual_projection`).

    params, found = read_hf("path/to/dinov2-small")
    features = found.model().apply({"params": params}, images)
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np

from vit_jax import families
from vit_jax.checkpoint import naflex_io, timm_model
from vit_jax.checkpoint import safetensors_io as st
from vit_jax.checkpoint.errors import CheckpointError
from vit_jax.checkpoint.model_spec import ModelSpec

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# save_pretrained shards a large model (DINOv3 7B): the index maps each tensor to its file.
INDEX_FILE = "model.safetensors.index.json"
# Tensors of a full CLIP / SigLIP model that belong to the text tower: not read.
# ... and ViTMAEForPreTraining's decoder (the facebook/vit-mae-* files): not read either.
_TEXT_TOWER = re.compile(r"^(text_model\.|text_projection\.|logit_scale$|logit_bias$|decoder\.)")
NOT_THE_IMAGE_MODEL = _TEXT_TOWER
_BLOCK = "Transformer/encoderblock_{}/"


def _prefix(tensors: Mapping[str, np.ndarray], suffix: str, path: str) -> str:
  found = sorted({k[:-len(suffix)] for k in tensors if k.endswith(suffix)})
  if len(found) != 1:
    raise CheckpointError(f"{path}: expected one `*{suffix}` tensor, found {found or 'none'}.")
  return found[0]


def _qkv(get: st.Consumer, names: tuple[str, str, str], out: dict[str, np.ndarray],
         dst: str) -> None:
  """Separate q/k/v Linears (torch (D, D) weights, (D,) biases) -> timm's fused `qkv`
  ([q; k; v] rows): the canonical layout keeps them fused."""
  out[dst + ".weight"] = np.concatenate([get(n + ".weight") for n in names])
  out[dst + ".bias"] = np.concatenate([get(n + ".bias") for n in names])


def _copy(get: st.Consumer, src: str, dst: str, out: dict[str, np.ndarray],
          params: tuple[str, ...] = ("weight", "bias")) -> None:
  for name in params:
    if f"{src}.{name}" in get:
      out[f"{dst}.{name}"] = get(f"{src}.{name}")


def _vit_like(get: st.Consumer, tensors, path: str) -> tuple[dict[str, np.ndarray],
                                                             dict[str, Any]]:
  """ViT / DeiT / DINOv2 (+ registers) / ViTMAE names -> (timm state dict, settings the
  names show: `no_embed_class` with registers)."""
  p = _prefix(tensors, "embeddings.patch_embeddings.projection.weight", path)
  sd: dict[str, np.ndarray] = {}
  settings: dict[str, Any] = {}
  _copy(get, p + "embeddings.patch_embeddings.projection", "patch_embed.proj", sd)
  if p + "embeddings.cls_token" in get:  # I-JEPA has none: patches only, mean-pooled
    sd["cls_token"] = get(p + "embeddings.cls_token")
  posemb = get(p + "embeddings.position_embeddings")
  if p + "embeddings.distillation_token" in get:
    sd["dist_token"] = get(p + "embeddings.distillation_token")
  if p + "embeddings.register_tokens" in get:
    # HF adds the posemb to [cls, patches], then inserts the registers after cls: the
    # cls row is folded into the cls token and the rest covers the patches only.
    sd["reg_token"] = get(p + "embeddings.register_tokens")
    sd["cls_token"] = sd["cls_token"] + posemb[:, :1]
    posemb = posemb[:, 1:]
    settings["no_embed_class"] = True
  sd["pos_embed"] = posemb
  if p + "embeddings.mask_token" in get:
    get(p + "embeddings.mask_token")  # masked-image-modelling input only
  depth = st.count_blocks(tensors, re.escape(p) + r"encoder\.layer\.(\d+)\.")
  for i in range(depth):
    src, dst = f"{p}encoder.layer.{i}.", f"blocks.{i}."
    a = src + "attention."
    _qkv(get, tuple(a + "attention." + n for n in ("query", "key", "value")), sd,
         dst + "attn.qkv")
    _copy(get, a + "output.dense", dst + "attn.proj", sd)
    if src + "norm1.weight" in get:  # DINOv2 block
      _copy(get, src + "norm1", dst + "norm1", sd)
      _copy(get, src + "norm2", dst + "norm2", sd)
      sd[dst + "ls1.gamma"] = get(src + "layer_scale1.lambda1")
      sd[dst + "ls2.gamma"] = get(src + "layer_scale2.lambda1")
      if src + "mlp.weights_in.weight" in get:  # SwiGLU: [gate; x] rows, as timm packs
        _copy(get, src + "mlp.weights_in", dst + "mlp.fc1", sd)
        _copy(get, src + "mlp.weights_out", dst + "mlp.fc2", sd)
      else:
        _copy(get, src + "mlp.fc1", dst + "mlp.fc1", sd)
        _copy(get, src + "mlp.fc2", dst + "mlp.fc2", sd)
    else:  # ViT block
      _copy(get, src + "layernorm_before", dst + "norm1", sd)
      _copy(get, src + "layernorm_after", dst + "norm2", sd)
      _copy(get, src + "intermediate.dense", dst + "mlp.fc1", sd)
      _copy(get, src + "output.dense", dst + "mlp.fc2", sd)
  _copy(get, p + "layernorm", "norm", sd)
  if "cls_token" not in sd and p + "pooler.dense.weight" in get:
    raise CheckpointError(f"{path}: a pooler (Dense + tanh on the first token) without a cls "
                          "token (IJepaModel(add_pooling_layer=True)) is not built here: load "
                          "the weights without `pooler.*` (the model pools the mean token).")
  _copy(get, p + "pooler.dense", "pre_logits.fc", sd)
  if "cls_classifier.weight" in get:  # DeiTForImageClassificationWithTeacher
    _copy(get, "cls_classifier", "head", sd)
    _copy(get, "distillation_classifier", "head_dist", sd)
  elif "classifier.weight" in get:
    weight = tensors["classifier.weight"]
    width = sd["patch_embed.proj.weight"].shape[0]
    if weight.shape[1] != width:
      raise CheckpointError(
          f"{path}: classifier.weight {weight.shape} reads {weight.shape[1]} features, not "
          f"the width {width} (Dinov2ForImageClassification's [cls, mean "
          "patch] head is not built here): load the backbone without the classifier.")
    if "dist_token" in sd:
      raise CheckpointError(f"{path}: DeiTForImageClassification (a head on the cls token "
                            "only) with a distillation token is not built here.")
    _copy(get, "classifier", "head", sd)
  return sd, settings


def _clip_like(get: st.Consumer, tensors, path: str) -> tuple[dict[str, np.ndarray],
                                                              dict[str, Any]]:
  """CLIP / SigLIP vision tower names -> (timm state dict, {})."""
  p = _prefix(tensors, "embeddings.patch_embedding.weight", path)
  sd: dict[str, np.ndarray] = {}
  _copy(get, p + "embeddings.patch_embedding", "patch_embed.proj", sd)
  if p + "embeddings.class_embedding" in get:
    sd["cls_token"] = get(p + "embeddings.class_embedding").reshape(1, 1, -1)
  sd["pos_embed"] = get(p + "embeddings.position_embedding.weight")[None]
  _copy(get, p + "pre_layrnorm", "norm_pre", sd)  # (sic) CLIP's ln_pre
  depth = st.count_blocks(tensors, re.escape(p) + r"encoder\.layers\.(\d+)\.")
  for i in range(depth):
    src, dst = f"{p}encoder.layers.{i}.", f"blocks.{i}."
    a = src + "self_attn."
    _copy(get, src + "layer_norm1", dst + "norm1", sd)
    _qkv(get, (a + "q_proj", a + "k_proj", a + "v_proj"), sd, dst + "attn.qkv")
    _copy(get, a + "out_proj", dst + "attn.proj", sd)
    _copy(get, src + "layer_norm2", dst + "norm2", sd)
    _copy(get, src + "mlp.fc1", dst + "mlp.fc1", sd)
    _copy(get, src + "mlp.fc2", dst + "mlp.fc2", sd)
  _copy(get, p + "post_layernorm", "norm", sd)
  if p + "head.probe" in get:  # SigLIP's MAP head; in_proj rows [q; k; v] -> timm q, kv
    width = sd["patch_embed.proj.weight"].shape[0]
    w, b = get(p + "head.attention.in_proj_weight"), get(p + "head.attention.in_proj_bias")
    sd["attn_pool.latent"] = get(p + "head.probe")
    sd["attn_pool.q.weight"], sd["attn_pool.q.bias"] = w[:width], b[:width]
    sd["attn_pool.kv.weight"], sd["attn_pool.kv.bias"] = w[width:], b[width:]
    _copy(get, p + "head.attention.out_proj", "attn_pool.proj", sd)
    _copy(get, p + "head.layernorm", "attn_pool.norm", sd)
    _copy(get, p + "head.mlp.fc1", "attn_pool.mlp.fc1", sd)
    _copy(get, p + "head.mlp.fc2", "attn_pool.mlp.fc2", sd)
  _copy(get, "visual_projection", "head", sd)  # CLIP's projection: no bias
  return sd, {}


def _aimv2_like(get: st.Consumer, tensors, path: str) -> tuple[dict[str, np.ndarray],
                                                               dict[str, Any]]:
  """transformers AIMv2 vision names -> (timm state dict, {"norm": "rmsnorm"}).

  Its attention-pooling head (`head.*`: the cls token is the query, bias-free k/v, an
  output projection; no norm or MLP) becomes timm's attn_pool names without `q`, `norm`
  and `mlp` (MAPHead with `map_attention_only`)."""
  p = _prefix(tensors, "embeddings.patch_embed.weight", path)
  sd: dict[str, np.ndarray] = {}
  _copy(get, p + "embeddings.patch_embed", "patch_embed.proj", sd)
  _copy(get, p + "embeddings.rms_norm", "patch_embed.norm", sd)
  sd["pos_embed"] = get(p + "embeddings.position_embedding.weight")[None]  # [N, D] -> [1, N, D]
  depth = st.count_blocks(tensors, re.escape(p) + r"encoder\.layers\.(\d+)\.")
  for i in range(depth):
    src, dst = f"{p}encoder.layers.{i}.", f"blocks.{i}."
    a = src + "attention."
    _copy(get, src + "rms_norm1", dst + "norm1", sd)
    sd[dst + "attn.qkv.weight"] = np.concatenate([get(a + n + ".weight")
                                                  for n in ("q_proj", "k_proj", "v_proj")])
    if a + "q_proj.bias" in get:  # config qkv_bias=True
      sd[dst + "attn.qkv.bias"] = np.concatenate([get(a + n + ".bias")
                                                  for n in ("q_proj", "k_proj", "v_proj")])
    _copy(get, a + "out_proj", dst + "attn.proj", sd)
    _copy(get, src + "rms_norm2", dst + "norm2", sd)
    _copy(get, src + "ffn.gate_proj", dst + "mlp.fc1_g", sd)
    _copy(get, src + "ffn.up_proj", dst + "mlp.fc1_x", sd)
    _copy(get, src + "ffn.down_proj", dst + "mlp.fc2", sd)
  _copy(get, p + "rms_norm", "norm", sd)
  if p + "head.cls_token" in get:
    sd["attn_pool.latent"] = get(p + "head.cls_token")
    sd["attn_pool.kv.weight"] = np.concatenate([get(p + "head.k_proj.weight"),
                                                get(p + "head.v_proj.weight")])
    if p + "head.k_proj.bias" in get:
      sd["attn_pool.kv.bias"] = np.concatenate([get(p + "head.k_proj.bias"),
                                                get(p + "head.v_proj.bias")])
    _copy(get, p + "head.output_proj", "attn_pool.proj", sd)
  return sd, {"norm": "rmsnorm"}


def _dinov3_like(get: st.Consumer, tensors, path: str) -> tuple[dict[str, np.ndarray],
                                                                dict[str, Any]]:
  """DINOv3ViTModel names -> (timm `Eva` state dict as timm's DINOv3 has it, {}).

  q/k/v Linears -> fused `qkv` with `qkv.bias` (a key bias) or `q_bias` / `v_bias`
  (`query_bias` and `value_bias` only, the released config); `up_proj` / `down_proj` ->
  `fc1` / `fc2`, or with `gate_proj` (use_gated_mlp) SwiGLU `fc1_g` / `fc1_x` / `fc2`.
  transformers 5 names the blocks `model.layer.N.` in memory and `layer.N.` on disk:
  both are read.
  """
  p = _prefix(tensors, "embeddings.patch_embeddings.weight", path)
  sd: dict[str, np.ndarray] = {}
  _copy(get, p + "embeddings.patch_embeddings", "patch_embed.proj", sd)
  sd["cls_token"] = get(p + "embeddings.cls_token")
  if p + "embeddings.register_tokens" in get and tensors[p + "embeddings.register_tokens"].shape[1]:
    sd["reg_token"] = get(p + "embeddings.register_tokens")
  for name in ("embeddings.mask_token", "embeddings.register_tokens"):
    if p + name in get:
      get(p + name)  # the masked-image-modelling input / an empty register tensor
  blocks = p + ("model.layer." if any(k.startswith(p + "model.layer.") for k in tensors)
                else "layer.")
  depth = st.count_blocks(tensors, re.escape(blocks) + r"(\d+)\.")
  for i in range(depth):
    src, dst = f"{blocks}{i}.", f"blocks.{i}."
    a = src + "attention."
    missing = [n for n in (a + "o_proj.bias", src + "mlp.down_proj.bias") if n not in get]
    if missing:
      raise CheckpointError(f"{path}: no {missing[0]}: a DINOv3 with proj_bias=False or "
                            "mlp_bias=False is not built here (the released models have both).")
    sd[dst + "attn.qkv.weight"] = np.concatenate(
        [get(f"{a}{n}_proj.weight") for n in "qkv"])
    has_bias = [f"{a}{n}_proj.bias" in get for n in "qkv"]
    if all(has_bias):
      sd[dst + "attn.qkv.bias"] = np.concatenate([get(f"{a}{n}_proj.bias") for n in "qkv"])
    elif has_bias == [True, False, True]:
      sd[dst + "attn.q_bias"], sd[dst + "attn.v_bias"] = (get(a + "q_proj.bias"),
                                                          get(a + "v_proj.bias"))
    elif any(has_bias):
      raise CheckpointError(
          f"{path}: q/k/v biases {dict(zip('qkv', has_bias))}: a bias on all of them, on "
          "query and value (query_bias, value_bias) or on none is built here, not this mix.")
    _copy(get, a + "o_proj", dst + "attn.proj", sd)
    _copy(get, src + "norm1", dst + "norm1", sd)
    _copy(get, src + "norm2", dst + "norm2", sd)
    sd[dst + "gamma_1"] = get(src + "layer_scale1.lambda1")
    sd[dst + "gamma_2"] = get(src + "layer_scale2.lambda1")
    if src + "mlp.gate_proj.weight" in get:  # DINOv3ViTGatedMLP: act(gate) * up
      _copy(get, src + "mlp.gate_proj", dst + "mlp.fc1_g", sd)
      _copy(get, src + "mlp.up_proj", dst + "mlp.fc1_x", sd)
    else:
      _copy(get, src + "mlp.up_proj", dst + "mlp.fc1", sd)
    _copy(get, src + "mlp.down_proj", dst + "mlp.fc2", sd)
  _copy(get, p + "norm", "norm", sd)
  return sd, {}


_RENAMERS = {"vit": _vit_like, "clip": _clip_like, "siglip2": _clip_like, "aimv2": _aimv2_like,
             "dinov3": _dinov3_like}


def to_timm_names(tensors: Mapping[str, np.ndarray], keys: str, path: str
                  ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """A transformers state dict in timm's names (the canonical layout), and the settings
  its names show. `keys`: the key layout ("vit", "clip" or "dinov3",
  families.HfModelType.keys).

  Every tensor is used: a text tower or MAE's decoder is set aside by name
  (NOT_THE_IMAGE_MODEL); anything else left over is refused.
  """
  get = st.Consumer(tensors, path)
  sd, settings = _RENAMERS[keys](get, tensors, path)
  if keys == "siglip2":  # SigLIP 2 NaFlex: a Linear patch embedding on (ph, pw, C) patches
    sd["patch_embed.proj.weight"] = naflex_io.conv_from_linear(sd["patch_embed.proj.weight"])
  for key in tensors:
    if _TEXT_TOWER.match(key):
      get(key)  # a CLIPModel / SiglipModel's text tower, MAE's decoder: not the image model
  get.check_all_used("transformers")
  return sd, settings


def weights_files(path: str) -> list[str]:
  """The .safetensors file(s) of a transformers directory: model.safetensors, or the shards
  model.safetensors.index.json names (CheckpointError naming what is missing)."""
  single = os.path.join(path, WEIGHTS_FILE)
  if os.path.isfile(single):
    return [single]
  index = os.path.join(path, INDEX_FILE)
  if not os.path.isfile(index):
    raise CheckpointError(f"{path}: no {WEIGHTS_FILE}; a Hugging Face model directory has "
                          f"{CONFIG_FILE} and {WEIGHTS_FILE} or {INDEX_FILE} with its shards "
                          "(a pytorch_model.bin-only model must be saved with "
                          "save_pretrained(..., safe_serialization=True) first).")
  try:
    with open(index) as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    raise CheckpointError(f"{index}: cannot read its weight_map ({e}).") from e
  files = [os.path.join(path, name) for name in shards]
  missing = [name for name, file in zip(shards, files) if not os.path.isfile(file)]
  if missing:
    raise CheckpointError(f"{index} names {len(shards)} shard(s); missing: "
                          f"{', '.join(missing)} (download the whole folder).")
  return files


def read_hf(path: str) -> tuple[dict[str, Any], ModelSpec]:
  """Reads a transformers model directory (config.json + model.safetensors).

  The keys are renamed to timm's, and `timm_model.describe` / `timm_to_linen` (the one
  describe and builder) make the model and params, with what config.json says.

  Returns:
    (params in the tree of `found.model()`, found: ModelSpec with key_names "hf" and
    `architecture` = config.json's `architectures[0]`).
  """
  path = os.fspath(path)
  config_path = os.path.join(path, CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise CheckpointError(f"{path}: no {CONFIG_FILE}; a Hugging Face model directory has "
                          f"{CONFIG_FILE} and {WEIGHTS_FILE}.")
  files = weights_files(path)
  weights = files[0] if len(files) == 1 else os.path.join(path, INDEX_FILE)
  try:
    with open(config_path) as f:
      config = json.load(f)
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{config_path}: cannot read it as JSON ({e}).") from e
  model_type = config.get("model_type")
  family, hf_type = families.hf_model_type(model_type, config_path)
  architecture = (config.get("architectures") or [None])[0]
  # A full CLIPModel / SiglipModel keeps the vision tower's settings in vision_config.
  vision = (config.get("vision_config") or config) if hf_type.vision_config else config
  vision = dict(hf_type.config_defaults, **vision)
  width = int(vision.get("hidden_size", 0))
  heads = vision.get("num_attention_heads")
  if not width or not heads:
    raise CheckpointError(f"{config_path}: needs hidden_size and num_attention_heads.")
  tensors = {k: v for file in files for k, v in st.read_safetensors(file).items()}
  sd, settings = to_timm_names(tensors, hf_type.keys, weights)
  found_width = sd["patch_embed.proj.weight"].shape[0]
  if found_width != width:
    raise CheckpointError(f"{path}: {CONFIG_FILE} says hidden_size={width}, the weights have "
                          f"{found_width} (embedding): the config belongs to another model.")
  depth = st.count_blocks(sd, r"blocks\.(\d+)\.")
  if vision.get("num_hidden_layers") not in (None, depth):
    raise CheckpointError(f"{path}: {CONFIG_FILE} says num_hidden_layers="
                          f"{vision['num_hidden_layers']}, the weights have {depth} layers.")
  settings.update(layernorm_epsilon=float(vision.get("layer_norm_eps",
                                                     vision.get("rms_norm_eps"))),
                  act_layer=vision["hidden_act"],
                  layer_scale=float(vision.get("layerscale_value", 1.0)),
                  posemb_resize=hf_type.posemb_resize)
  settings.update(hf_type.options)
  if settings.get("rope") and "rope_theta" in vision:
    settings["rope_temperature"] = float(vision["rope_theta"])
  if "blocks.0.mlp.fc1_g.weight" in sd and vision["hidden_act"] != "silu":
    raise CheckpointError(f"{config_path}: a gated MLP with hidden_act="
                          f"{vision['hidden_act']!r} is not built here (SwiGLU is silu).")
  found = timm_model.describe(sd, weights, settings=settings, num_heads=heads)
  params = st.timm_to_linen(sd, weights, heads)
  return params, dataclasses.replace(found, architecture=architecture, key_names="hf",
                                     family=family.name)


def weights_to_linen(tensors: Mapping[str, np.ndarray], path: str,
                     num_heads: Optional[int] = None) -> dict[str, Any]:
  """transformers ViT-family weights without their config.json (a bare file) -> params.

  The same renames as `read_hf`; the head count comes from `num_heads`, a config.json
  beside the file, or the standard size of that width. `pooler.dense` (ViTModel's Dense +
  tanh on the cls token) is our `pre_logits`.
  """
  st.safetensors_format(tensors, path)  # a ViT's names, or the error naming the keys
  sd, _ = to_timm_names(tensors, "vit", path)
  width = sd["patch_embed.proj.weight"].shape[0]
  return st.timm_to_linen(sd, path, st.head_count(width, num_heads or st.config_heads(path),
                                                  path))


def is_hf_directory(path: str) -> bool:
  """A directory whose config.json names a transformers `model_type`."""
  config = os.path.join(path, CONFIG_FILE)
  if not os.path.isdir(path) or not os.path.isfile(config):
    return False
  try:
    with open(config) as f:
      return "model_type" in json.load(f)
  except (OSError, ValueError, TypeError):
    return False
