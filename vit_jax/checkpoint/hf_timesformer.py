"""TimeSformer folders of transformers (`model_type: timesformer`) -> VideoTransformer.

TimesformerForVideoClassification (keys under `timesformer.`, plus `classifier`) gives
logits; TimesformerModel (no prefix) the pooled features: the final LayerNorm's cls token
(docs/checkpoint_formats.md, 'TimeSformer: transformers'). The model is ViViT's
"divided_space_time" variant with a frame embedding; key -> parameter:

  embeddings.patch_embeddings.projection [D, C, ph, pw] -> embedding [ph, pw, C, D]
  embeddings.cls_token [1, 1, D]                       -> cls
  embeddings.position_embeddings [1, 1 + n, D]         -> Transformer/posembed_space_time/
  embeddings.time_embeddings [1, T, D]                      pos_embedding, time_embedding
  encoder.layer.{i}.                                   -> Transformer/encoderblock_{i}/
    temporal_layernorm                                      LayerNorm_time
    temporal_attention.attention.qkv [3D, D], .output.dense MultiHeadDotProductAttention_time
    temporal_dense                                          Dense_time
    layernorm_before                                        LayerNorm_space
    attention.attention.qkv, attention.output.dense         MultiHeadDotProductAttention_space
    layernorm_after                                         LayerNorm_mlp
    intermediate.dense, output.dense                        MlpBlock/Dense_0, Dense_1
  layernorm                                            -> Transformer/encoder_norm
  classifier                                           -> output_projection

config.json gives what the weights cannot (head count, hidden_act, layer_norm_eps,
attention_type); every size it states is checked against the tensors. Only
`attention_type: divided_space_time` (every released checkpoint) is built; the
"space_only" and "joint_space_time" ablations are refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from vit_jax import families
from vit_jax.checkpoint import safetensors_io as st
from vit_jax.checkpoint import tree
from vit_jax.checkpoint.errors import CheckpointError
from vit_jax.checkpoint.hf_video import VideoRead
from vit_jax.models import layers, vivit
from vit_jax.models.options import EncoderOptions

WEIGHTS_FILE = "model.safetensors"
_LAYER = "{}encoder.layer.{}."


def _fields(config: Mapping[str, Any]) -> dict[str, Any]:
  """config.json over the TimesformerConfig defaults (the family's)."""
  defaults = families.get("timesformer").hf["timesformer"].config_defaults
  return {**defaults, **config}


def _check(folder: str, field: str, stated: Any, found: Any, where: str) -> None:
  if stated != found:
    raise CheckpointError(f"{folder}: config.json {field}={stated!r}, but the weights have "
                          f"{found!r} ({where}): the config does not describe these weights.")


def _attention(get: st.Consumer, src: str, heads: int, qkv_bias: bool) -> dict[str, Any]:
  """TimesformerSelfAttention's fused qkv ([q; k; v] rows) and its output Linear."""
  weight = get(f"{src}.attention.qkv.weight")  # [3D, D]
  biases = (np.split(get(f"{src}.attention.qkv.bias"), 3) if qkv_bias else [None] * 3)
  out = {}
  for name, w, b in zip(("query", "key", "value"), np.split(weight, 3), biases):
    kernel = w.T.reshape(w.shape[1], heads, -1)  # [D, H*hd] -> [D, H, hd]
    out[name] = {"kernel": kernel} if b is None else {"kernel": kernel,
                                                      "bias": b.reshape(heads, -1)}
  out["out"] = st.heads_out(get(f"{src}.output.dense.weight"), get(f"{src}.output.dense.bias"),
                            heads)
  return out


def read(folder: str, config: Mapping[str, Any]) -> VideoRead:
  """TimesformerForVideoClassification / TimesformerModel folder -> VideoRead."""
  c = _fields(config)
  if c["attention_type"] != vivit.DIVIDED:
    raise CheckpointError(
        f"{folder}: config.json attention_type={c['attention_type']!r}; only TimeSformer's "
        f"{vivit.DIVIDED!r} (every released checkpoint) is implemented here.")
  path = os.path.join(folder, WEIGHTS_FILE)
  tensors = st.read_safetensors(path)
  prefix = "timesformer." if "timesformer.embeddings.cls_token" in tensors else ""
  get = st.Consumer(tensors, path)
  e = prefix + "embeddings."

  projection = get(e + "patch_embeddings.projection.weight")  # [D, C, ph, pw]
  width, channels, ph, pw = projection.shape
  _check(folder, "hidden_size", c["hidden_size"], width, "patch projection")
  _check(folder, "num_channels", c["num_channels"], channels, "patch projection")
  _check(folder, "patch_size", layers.pair(c["patch_size"]), (ph, pw), "patch projection")
  image_h, image_w = layers.pair(c["image_size"])
  posemb = get(e + "position_embeddings")
  _check(folder, "image_size", 1 + (image_h // ph) * (image_w // pw), posemb.shape[1],
         "rows of embeddings.position_embeddings, cls included")
  time = get(e + "time_embeddings")
  _check(folder, "num_frames", c["num_frames"], time.shape[1], "rows of time_embeddings")
  depth = st.count_blocks(tensors, rf"{prefix}encoder\.layer\.(\d+)\.")
  _check(folder, "num_hidden_layers", c["num_hidden_layers"], depth, "encoder.layer.*")
  first = _LAYER.format(prefix, 0)
  mlp_dim = tensors[first + "intermediate.dense.weight"].shape[0] if depth else None
  _check(folder, "intermediate_size", c["intermediate_size"], mlp_dim, "intermediate.dense")
  _check(folder, "qkv_bias", bool(c["qkv_bias"]), first + "attention.attention.qkv.bias" in tensors,
         "attention.attention.qkv.bias")
  heads = c["num_attention_heads"]
  if width % heads:
    raise CheckpointError(f"{folder}: config.json num_attention_heads={heads} does not divide "
                          f"the width {width}.")

  flat: dict[str, Any] = {
      "embedding/kernel": projection.transpose(2, 3, 1, 0),
      "embedding/bias": get(e + "patch_embeddings.projection.bias"),
      "cls": get(e + "cls_token"),
      "Transformer/posembed_space_time/pos_embedding": posemb,
      "Transformer/posembed_space_time/time_embedding": time,
  }
  blocks = {}
  for i in range(depth):
    src = _LAYER.format(prefix, i)
    blocks[f"encoderblock_{i}"] = {
        "LayerNorm_time": st.layer_norm(get, src + "temporal_layernorm"),
        "MultiHeadDotProductAttention_time": _attention(get, src + "temporal_attention", heads,
                                                        c["qkv_bias"]),
        "Dense_time": st.linear(get, src + "temporal_dense"),
        "LayerNorm_space": st.layer_norm(get, src + "layernorm_before"),
        "MultiHeadDotProductAttention_space": _attention(get, src + "attention", heads,
                                                         c["qkv_bias"]),
        "LayerNorm_mlp": st.layer_norm(get, src + "layernorm_after"),
        "MlpBlock": {"Dense_0": st.linear(get, src + "intermediate.dense"),
                     "Dense_1": st.linear(get, src + "output.dense")},
    }
  params = tree.unflatten(flat)
  params["Transformer"].update(blocks)
  params["Transformer"]["encoder_norm"] = st.layer_norm(get, prefix + "layernorm")
  num_classes = None
  if "classifier.weight" in tensors:
    params["output_projection"] = st.linear(get, "classifier")
    num_classes = params["output_projection"]["kernel"].shape[1]
    labels = config.get("id2label")
    if labels is not None:
      _check(folder, "id2label", len(labels), num_classes, "rows of classifier.weight")
  get.check_all_used("TimeSformer")

  options = EncoderOptions(layernorm_epsilon=float(c["layer_norm_eps"]),
                           qkv_bias="qkv" if c["qkv_bias"] else "none",
                           **families.activation_options(c["hidden_act"], folder))
  model = vivit.VideoTransformer(
      num_classes=num_classes, patch_size=(ph, pw), hidden_size=width, num_layers=depth,
      mlp_dim=mlp_dim, num_heads=heads, tubelet_size=1, variant=vivit.DIVIDED,
      embedding="frame", classifier="token", options=options)
  return VideoRead(model=model, params=params, family="timesformer",
                   num_frames=int(c["num_frames"]), input_size=(image_h, image_w))
