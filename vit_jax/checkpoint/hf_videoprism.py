"""VideoPrism folders of transformers (`model_type: videoprism_vision_model`) -> VideoTransformer.

VideoPrismForVideoClassification (the encoder under `vision_model.`, then `head`,
`head_layernorm`, `classifier`) gives logits [B, classes] (transformers' are [B, 1,
classes]); VideoPrismVisionModel (no prefix, no head) the mean of its output tokens
`last_hidden_state` [B, T*n, D] as the pooled features. The model is ViViT's
"factorised_encoder_tokens" variant with a frame embedding (docs/checkpoint_formats.md,
'VideoPrism: transformers'); key -> parameter:

  spatial_embeddings.patch_embeddings.projection [D, C, 1, ph, pw] -> embedding [ph, pw, C, D]
  spatial_embeddings.position_embeddings [1, n, D]  -> SpatialTransformer/posembed_input
  temporal_embeddings.position_embeddings [1, T, D] -> TemporalTransformer/posembed_input
  {spatial,temporal}_layers.{i}.                    -> {Spatial,Temporal}Transformer/encoderblock_{i}/
    layernorm_before, layernorm_after                    LayerNorm_0, LayerNorm_1
    attention.{q,k,v}_proj, attention.o_proj              MultiHeadDotProductAttention_0
    mlp.fc1, mlp.fc2                                      MlpBlock_0/Dense_0, Dense_1
  layernorm1, layernorm2                            -> {Spatial,Temporal}Transformer/encoder_norm
  head.pooling_attention_query, head.{q,k,v,o}_proj, head.per_dim_scale, head_layernorm
                                                    -> AttentionPool/{probe, query, key, value,
                                                       out, per_dim_scale, LayerNorm}
  classifier                                        -> output_projection

VideoPrism's LayerNorms scale by `weight + 1` (VideoPrismLayerNorm): the scales are
stored here with the 1 added. config.json gives the head count, `hidden_act`,
`layer_norm_eps` and `attn_logit_softcapping` (EncoderOptions.attention_logit_cap);
every size it states is checked against the tensors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from vit_jax import families
from vit_jax.checkpoint import safetensors_io as st
from vit_jax.checkpoint.errors import CheckpointError
from vit_jax.checkpoint.hf_video import VideoRead
from vit_jax.models import layers, vivit
from vit_jax.models.options import EncoderOptions

WEIGHTS_FILE = "model.safetensors"
MODEL_TYPE = "videoprism_vision_model"


def _check(folder: str, field: str, stated: Any, found: Any, where: str) -> None:
  if stated != found:
    raise CheckpointError(f"{folder}: config.json {field}={stated!r}, but the weights have "
                          f"{found!r} ({where}): the config does not describe these weights.")


def _norm(get: st.Consumer, name: str) -> dict[str, np.ndarray]:
  """VideoPrismLayerNorm: F.layer_norm(x, weight + 1, bias)."""
  return {"scale": get(f"{name}.weight") + np.float32(1.0), "bias": get(f"{name}.bias")}


def _attention(get: st.Consumer, src: str, heads: int) -> dict[str, Any]:
  """Separate q/k/v Linears (H*hd, D) and the output Linear (D, H*hd)."""
  out = {name: st.heads_in(get(f"{src}.{proj}.weight"), get(f"{src}.{proj}.bias"), heads)
         for name, proj in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj"))}
  out["out"] = st.heads_out(get(f"{src}.o_proj.weight"), get(f"{src}.o_proj.bias"), heads)
  return out


def _encoder(get: st.Consumer, tensors: Mapping[str, Any], prefix: str, stack: str,
             heads: int) -> tuple[dict[str, Any], int]:
  depth = st.count_blocks(tensors, rf"{prefix}{stack}\.(\d+)\.")
  blocks = {}
  for i in range(depth):
    src = f"{prefix}{stack}.{i}."
    blocks[f"encoderblock_{i}"] = {
        "LayerNorm_0": _norm(get, src + "layernorm_before"),
        "MultiHeadDotProductAttention_0": _attention(get, src + "attention", heads),
        "LayerNorm_1": _norm(get, src + "layernorm_after"),
        "MlpBlock_0": {"Dense_0": st.linear(get, src + "mlp.fc1"),
                       "Dense_1": st.linear(get, src + "mlp.fc2")}}
  return blocks, depth


def read(folder: str, config: Mapping[str, Any]) -> VideoRead:
  """VideoPrismForVideoClassification / VideoPrismVisionModel folder -> VideoRead."""
  c = {**families.get("videoprism").hf[MODEL_TYPE].config_defaults, **config}
  path = os.path.join(folder, WEIGHTS_FILE)
  tensors = st.read_safetensors(path)
  prefix = "vision_model." if "vision_model.layernorm1.weight" in tensors else ""
  get = st.Consumer(tensors, path)
  if not c["qkv_bias"]:
    raise CheckpointError(f"{folder}: config.json qkv_bias=false: VideoPrism without "
                          "attention biases is not implemented (every release has them).")

  projection = get(prefix + "spatial_embeddings.patch_embeddings.projection.weight")
  width, channels, pt, ph, pw = projection.shape  # [D, C, 1, ph, pw]
  _check(folder, "hidden_size", c["hidden_size"], width, "patch projection")
  _check(folder, "num_channels", c["num_channels"], channels, "patch projection")
  _check(folder, "tubelet_size", list(c["tubelet_size"]), [pt, ph, pw], "patch projection")
  if pt != 1:
    raise CheckpointError(f"{folder}: tubelet_size {[pt, ph, pw]}: VideoPrism embeds each frame "
                          "alone (tubelet 1); another tubelet depth is not implemented.")
  image_h, image_w = layers.pair(c["image_size"])
  spatial_posemb = get(prefix + "spatial_embeddings.position_embeddings")
  _check(folder, "image_size", (image_h // ph) * (image_w // pw), spatial_posemb.shape[1],
         "rows of spatial_embeddings.position_embeddings")
  temporal_posemb = get(prefix + "temporal_embeddings.position_embeddings")
  _check(folder, "num_frames", c["num_frames"], temporal_posemb.shape[1],
         "rows of temporal_embeddings.position_embeddings")
  heads = c["num_attention_heads"]
  if width % heads or c["intermediate_size"] % heads:
    raise CheckpointError(f"{folder}: config.json num_attention_heads={heads} does not divide "
                          f"the width {width} and intermediate_size {c['intermediate_size']}.")

  spatial, spatial_depth = _encoder(get, tensors, prefix, "spatial_layers", heads)
  temporal, temporal_depth = _encoder(get, tensors, prefix, "temporal_layers", heads)
  _check(folder, "num_spatial_layers", c["num_spatial_layers"], spatial_depth, "spatial_layers.*")
  _check(folder, "num_temporal_layers", c["num_temporal_layers"], temporal_depth,
         "temporal_layers.*")
  if not spatial_depth or not temporal_depth:
    raise CheckpointError(f"{folder}: VideoPrism needs spatial and temporal layers; found "
                          f"{spatial_depth} and {temporal_depth}.")
  mlp_dim = tensors[f"{prefix}spatial_layers.0.mlp.fc1.weight"].shape[0]
  _check(folder, "intermediate_size", c["intermediate_size"], mlp_dim, "mlp.fc1")
  spatial.update(posembed_input={"pos_embedding": spatial_posemb},
                 encoder_norm=_norm(get, prefix + "layernorm1"))
  temporal.update(posembed_input={"pos_embedding": temporal_posemb},
                  encoder_norm=_norm(get, prefix + "layernorm2"))
  params: dict[str, Any] = {
      "embedding": {"kernel": projection[:, :, 0].transpose(2, 3, 1, 0),  # -> [ph, pw, C, D]
                    "bias": get(prefix + "spatial_embeddings.patch_embeddings.projection.bias")},
      "SpatialTransformer": spatial, "TemporalTransformer": temporal}

  num_classes, classifier = None, "gap"
  if "head.pooling_attention_query" in tensors:
    classifier = "map"
    pool = _attention(get, "head", heads)
    pool.update(probe=get("head.pooling_attention_query"), per_dim_scale=get("head.per_dim_scale"),
                LayerNorm=_norm(get, "head_layernorm"))
    params["AttentionPool"] = pool
    if "classifier.weight" in tensors:
      params["output_projection"] = st.linear(get, "classifier")
      num_classes = params["output_projection"]["kernel"].shape[1]
  get.check_all_used("VideoPrism")

  cap = c["attn_logit_softcapping"]
  options = EncoderOptions(layernorm_epsilon=float(c["layer_norm_eps"]),
                           attention_logit_cap=None if cap is None else float(cap),
                           # transformers' interpolate_pos_encoding for another frame size
                           posemb_resize="bilinear_antialias",
                           **families.activation_options(c["hidden_act"], folder))
  model = vivit.VideoTransformer(
      num_classes=num_classes, patch_size=(ph, pw), hidden_size=width,
      num_layers=spatial_depth, mlp_dim=mlp_dim, num_heads=heads, tubelet_size=1,
      variant=vivit.FACTORISED_TOKENS, embedding="frame", classifier=classifier,
      temporal_encoder_layers=temporal_depth, options=options)
  return VideoRead(model=model, params=params, family="videoprism",
                   num_frames=int(c["num_frames"]), input_size=(image_h, image_w))
