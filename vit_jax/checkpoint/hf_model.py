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

import json
import os
import re
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np

from vit_jax import families
from vit_jax.checkpoint import safetensors_io as st
from vit_jax.checkpoint import tree as tree_lib
from vit_jax.checkpoint.errors import CheckpointError
from vit_jax.checkpoint.model_spec import ModelSpec
from vit_jax.models import options as options_lib

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
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


def _attention(get: st.Consumer, names: dict[str, str], heads: int) -> dict[str, Any]:
  """Separate q/k/v/out Linears (names: query/key/value/out -> torch name)."""
  attn = {n: st.heads_in(get(f"{names[n]}.weight"), get(f"{names[n]}.bias"), heads)
          for n in ("query", "key", "value")}
  attn["out"] = st.heads_out(get(names["out"] + ".weight"), get(names["out"] + ".bias"), heads)
  return attn


def _vit_like(get: st.Consumer, tensors, config: dict, path: str,
              heads: int) -> tuple[dict[str, Any], dict[str, Any]]:
  """ViT / DeiT / DINOv2 (+ registers) / ViTMAE -> (flat params, options)."""
  p = _prefix(tensors, "embeddings.patch_embeddings.projection.weight", path)
  flat: dict[str, Any] = {}
  options: dict[str, Any] = {}
  for k, v in st.conv(get, p + "embeddings.patch_embeddings.projection").items():
    flat[f"embedding/{k}"] = v
  flat["cls"] = get(p + "embeddings.cls_token")
  posemb = get(p + "embeddings.position_embeddings")
  if p + "embeddings.distillation_token" in get:
    flat["dist"] = get(p + "embeddings.distillation_token")
    options["distilled"] = True
  if p + "embeddings.register_tokens" in get:
    # HF adds the posemb to [cls, patches], then inserts the registers after cls: the
    # cls row is folded into the cls token and the rest covers the patches only.
    flat["registers"] = get(p + "embeddings.register_tokens")
    flat["cls"] = flat["cls"] + posemb[:, :1]
    posemb = posemb[:, 1:]
    options.update(num_registers=flat["registers"].shape[1], no_embed_class=True)
  flat["Transformer/posembed_input/pos_embedding"] = posemb
  if p + "embeddings.mask_token" in get:
    get(p + "embeddings.mask_token")  # masked-image-modelling input only
  depth = st.count_blocks(tensors, re.escape(p) + r"encoder\.layer\.(\d+)\.")
  for i in range(depth):
    src = f"{p}encoder.layer.{i}."
    a = src + "attention."
    block = {"MultiHeadDotProductAttention_0": _attention(
        get, {"query": a + "attention.query", "key": a + "attention.key",
              "value": a + "attention.value", "out": a + "output.dense"}, heads)}
    if src + "norm1.weight" in get:  # DINOv2 block
      block["LayerNorm_0"] = st.layer_norm(get, src + "norm1")
      block["LayerNorm_1"] = st.layer_norm(get, src + "norm2")
      block["LayerScale_0"] = {"scale": get(src + "layer_scale1.lambda1")}
      block["LayerScale_1"] = {"scale": get(src + "layer_scale2.lambda1")}
      if src + "mlp.weights_in.weight" in get:  # SwiGLU: [gate; x] rows, as timm packs
        w, b = get(src + "mlp.weights_in.weight"), get(src + "mlp.weights_in.bias")
        half = w.shape[0] // 2
        block["MlpBlock_0"] = {"gate": {"kernel": w[:half].T, "bias": b[:half]},
                               "up": {"kernel": w[half:].T, "bias": b[half:]},
                               "Dense_1": st.linear(get, src + "mlp.weights_out")}
      else:
        block["MlpBlock_0"] = {"Dense_0": st.linear(get, src + "mlp.fc1"),
                               "Dense_1": st.linear(get, src + "mlp.fc2")}
    else:  # ViT block
      block["LayerNorm_0"] = st.layer_norm(get, src + "layernorm_before")
      block["LayerNorm_1"] = st.layer_norm(get, src + "layernorm_after")
      block["MlpBlock_0"] = {"Dense_0": st.linear(get, src + "intermediate.dense"),
                             "Dense_1": st.linear(get, src + "output.dense")}
    flat.update(tree_lib.flatten(block, _BLOCK.format(i)))
  flat.update(tree_lib.flatten(st.layer_norm(get, p + "layernorm"), "Transformer/encoder_norm/"))
  if p + "pooler.dense.weight" in get:
    flat.update(tree_lib.flatten(st.linear(get, p + "pooler.dense"), "pre_logits/"))
  if "cls_classifier.weight" in get:  # DeiTForImageClassificationWithTeacher
    flat.update(tree_lib.flatten(st.linear(get, "cls_classifier"), "head/"))
    flat.update(tree_lib.flatten(st.linear(get, "distillation_classifier"), "head_dist/"))
  elif "classifier.weight" in get:
    weight = tensors["classifier.weight"]
    if weight.shape[1] != flat["cls"].shape[-1]:
      raise CheckpointError(
          f"{path}: classifier.weight {weight.shape} reads {weight.shape[1]} features, not "
          f"the width {flat['cls'].shape[-1]} (Dinov2ForImageClassification's [cls, mean "
          "patch] head is not built here): load the backbone without the classifier.")
    if options.get("distilled"):
      raise CheckpointError(f"{path}: DeiTForImageClassification (a head on the cls token "
                            "only) with a distillation token is not built here.")
    flat.update(tree_lib.flatten(st.linear(get, "classifier"), "head/"))
  if any("/LayerScale_0/" in k for k in flat):
    options["layer_scale"] = float(config.get("layerscale_value", 1.0))
  if any("/MlpBlock_0/gate/" in k for k in flat):
    options["mlp_activation"] = "swiglu"
  return flat, options


def _clip_like(get: st.Consumer, tensors, config: dict, path: str,
               heads: int) -> tuple[dict[str, Any], dict[str, Any]]:
  """CLIP / SigLIP vision tower -> (flat params, options)."""
  p = _prefix(tensors, "embeddings.patch_embedding.weight", path)
  flat: dict[str, Any] = {}
  options: dict[str, Any] = {}
  flat["embedding/kernel"] = get(p + "embeddings.patch_embedding.weight").transpose(2, 3, 1, 0)
  if p + "embeddings.patch_embedding.bias" in get:
    flat["embedding/bias"] = get(p + "embeddings.patch_embedding.bias")
  else:
    options["patch_bias"] = False
  if p + "embeddings.class_embedding" in get:
    flat["cls"] = get(p + "embeddings.class_embedding").reshape(1, 1, -1)
  flat["Transformer/posembed_input/pos_embedding"] = get(
      p + "embeddings.position_embedding.weight")[None]
  if p + "pre_layrnorm.weight" in get:  # (sic) CLIP's ln_pre
    flat.update(tree_lib.flatten(st.layer_norm(get, p + "pre_layrnorm"), "Transformer/pre_norm/"))
    options["pre_norm"] = True
  depth = st.count_blocks(tensors, re.escape(p) + r"encoder\.layers\.(\d+)\.")
  for i in range(depth):
    src = f"{p}encoder.layers.{i}."
    a = src + "self_attn."
    block = {
        "LayerNorm_0": st.layer_norm(get, src + "layer_norm1"),
        "MultiHeadDotProductAttention_0": _attention(
            get, {"query": a + "q_proj", "key": a + "k_proj", "value": a + "v_proj",
                  "out": a + "out_proj"}, heads),
        "LayerNorm_1": st.layer_norm(get, src + "layer_norm2"),
        "MlpBlock_0": {"Dense_0": st.linear(get, src + "mlp.fc1"),
                       "Dense_1": st.linear(get, src + "mlp.fc2")},
    }
    flat.update(tree_lib.flatten(block, _BLOCK.format(i)))
  flat.update(tree_lib.flatten(st.layer_norm(get, p + "post_layernorm"),
                               "Transformer/encoder_norm/"))
  if p + "head.probe" in get:  # SigLIP's MAP head; in_proj rows [q; k; v]
    width = flat["embedding/kernel"].shape[-1]
    w = get(p + "head.attention.in_proj_weight").reshape(3, width, width)
    b = get(p + "head.attention.in_proj_bias").reshape(3, width)
    map_head = {
        "probe": get(p + "head.probe"),
        "MultiHeadDotProductAttention_0": {
            name: st.heads_in(w[j], b[j], heads)
            for j, name in enumerate(("query", "key", "value"))},
        "LayerNorm_0": st.layer_norm(get, p + "head.layernorm"),
        "MlpBlock_0": {"Dense_0": st.linear(get, p + "head.mlp.fc1"),
                       "Dense_1": st.linear(get, p + "head.mlp.fc2")},
    }
    map_head["MultiHeadDotProductAttention_0"]["out"] = st.heads_out(
        get(p + "head.attention.out_proj.weight"), get(p + "head.attention.out_proj.bias"), heads)
    flat.update(tree_lib.flatten(map_head, "MAPHead_0/"))
  if "visual_projection.weight" in get:  # CLIP's projection: no bias
    flat["head/kernel"] = get("visual_projection.weight").T
    options["head_bias"] = False
  return flat, options


def read_hf(path: str) -> tuple[dict[str, Any], ModelSpec]:
  """Reads a transformers model directory (config.json + model.safetensors).

  Returns:
    (params in the tree of `found.model()`, found: ModelSpec with key_names "hf" and
    `architecture` = config.json's `architectures[0]`).
  """
  path = os.fspath(path)
  config_path, weights = os.path.join(path, CONFIG_FILE), os.path.join(path, WEIGHTS_FILE)
  for needed in (config_path, weights):
    if not os.path.isfile(needed):
      raise CheckpointError(f"{path}: no {os.path.basename(needed)}; a Hugging Face model "
                            f"directory has {CONFIG_FILE} and {WEIGHTS_FILE} (a sharded or "
                            "pytorch_model.bin-only model must be saved with "
                            "save_pretrained(..., safe_serialization=True) first).")
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
  tensors = st.read_safetensors(weights)
  width = int(vision.get("hidden_size", 0))
  heads = vision.get("num_attention_heads")
  if not width or not heads:
    raise CheckpointError(f"{config_path}: needs hidden_size and num_attention_heads.")
  get = st.Consumer(tensors, weights)
  convert = _vit_like if hf_type.keys == "vit" else _clip_like
  flat, options = convert(get, tensors, vision, weights, heads)
  for key in tensors:
    if _TEXT_TOWER.match(key):
      get(key)  # a CLIPModel / SiglipModel's text tower, MAE's decoder: not the image model
  get.check_all_used("transformers")
  kernel = flat["embedding/kernel"]
  if kernel.shape[-1] != width:
    raise CheckpointError(f"{path}: {CONFIG_FILE} says hidden_size={width}, the weights have "
                          f"{kernel.shape[-1]} (embedding): the config belongs to another "
                          "model.")
  if options.get("mlp_activation") != "swiglu":
    options.update(families.activation_options(vision["hidden_act"],
                                               f"{config_path}: hidden_act"))
  depth = len({m.group(1) for k in flat if (m := re.match(r"Transformer/encoderblock_(\d+)/", k))})
  if vision.get("num_hidden_layers") not in (None, depth):
    raise CheckpointError(f"{path}: {CONFIG_FILE} says num_hidden_layers="
                          f"{vision['num_hidden_layers']}, the weights have {depth} layers.")
  mlp = flat.get(_BLOCK.format(0) + "MlpBlock_0/Dense_1/kernel")
  has_cls = "cls" in flat
  classifier = "map" if "MAPHead_0/probe" in flat else "token" if has_cls else "gap"
  options = options_lib.EncoderOptions(
      layernorm_epsilon=float(vision["layer_norm_eps"]),
      class_token=None if has_cls == (classifier == "token") else has_cls, **options)
  fields = dict(
      num_classes=flat["head/kernel"].shape[1] if "head/kernel" in flat else None,
      patch_size=kernel.shape[0] if kernel.shape[0] == kernel.shape[1] else kernel.shape[:2],
      hidden_size=width, num_layers=depth, mlp_dim=mlp.shape[0], num_heads=heads,
      classifier=classifier,
      representation_size=flat["pre_logits/kernel"].shape[1] if "pre_logits/kernel" in flat
      else None)
  return tree_lib.unflatten(flat), ModelSpec(architecture, fields, options, "hf",
                                             family=family.name)


def weights_to_linen(tensors: Mapping[str, np.ndarray], path: str,
                     num_heads: Optional[int] = None) -> dict[str, Any]:
  """transformers ViT-family weights without their config.json (a bare file) -> params.

  The same conversion as `read_hf` (`_vit_like`); the head count comes from `num_heads`,
  a config.json beside the file, or the standard size of that width. `pooler.dense` (ViTModel's
  Dense + tanh on the cls token) is our `pre_logits`.
  """
  st.safetensors_format(tensors, path)  # a ViT's names, or the error naming the keys
  p = _prefix(tensors, "embeddings.patch_embeddings.projection.weight", path)
  width = tensors[p + "embeddings.patch_embeddings.projection.weight"].shape[0]
  heads = st.head_count(width, num_heads or st.config_heads(path), path)
  get = st.Consumer(tensors, path)
  flat, _ = _vit_like(get, tensors, {}, path, heads)
  get.check_all_used("transformers")
  return tree_lib.unflatten(flat)


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
