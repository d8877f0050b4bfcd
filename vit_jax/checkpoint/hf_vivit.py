"""transformers ViViT folders (`model_type: vivit`) <-> `VideoTransformer("spatio_temporal")`.

    found = hf_video.read_folder("vivit-b-16x2-kinetics400", config)   # via load_pretrained
    tensors, config = to_hf(params, model, num_frames=32)               # export (save_hf_video)

Keys (VivitForVideoClassification: prefix "vivit."; VivitModel: none), beside the shared
layer names of `hf_video_layers`:

  {p}embeddings.cls_token                 [1, 1, D]           cls
  {p}embeddings.position_embeddings       [1, 1 + t*gh*gw, D] Transformer/posembed_input
  {p}layernorm.{weight, bias}                                 Transformer/encoder_norm
  pooler.dense.{weight, bias}             VivitModel only     pre_logits (tanh, pooler_act)
  classifier.{weight, bias}               classifier only     output_projection

The pooled output is the reference's: the classifier's logits on the normed cls token,
VivitModel's `pooler_output` (tanh(Dense(cls))). The learned table covers one frame count
and size (transformers' `interpolate_pos_encoding` treats all t*gh*gw rows as one square
grid, which a video table is not): other clips are refused by the model with the shape to
feed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from vit_jax import families
from vit_jax.checkpoint import hf_video, hf_video_layers
from vit_jax.checkpoint import safetensors_io as st
from vit_jax.checkpoint.errors import CheckpointError
from vit_jax.models import options as options_lib
from vit_jax.models import vivit

MODEL_TYPE = "vivit"


def read(folder: str, config: Mapping[str, Any]) -> hf_video.VideoRead:
  """A transformers ViViT folder -> the model that gives its outputs, and its params."""
  c = hf_video.settings(config, MODEL_TYPE)
  tensors, weights = hf_video.read_weights(folder)
  prefix = hf_video_layers.model_prefix(tensors, "vivit.", weights)
  get = st.Consumer(tensors, weights)
  kernel, width, depth, heads = hf_video_layers.check_encoder(tensors, prefix, c, weights)
  check = lambda field, value, found, what: hf_video.check_field(weights, field, value, found,
                                                                 what)
  check("tubelet_size", list(c["tubelet_size"]), list(kernel.shape[2:]),
        "the tubelet embedding's kernel (frames, height, width)")
  first = f"{prefix}encoder.layer.0."
  check("qkv_bias", bool(c["qkv_bias"]), first + "attention.attention.query.bias" in tensors,
        "query/key/value biases")
  t, ph, pw = (int(v) for v in c["tubelet_size"])
  height, image_width = hf_video.pair(c["image_size"])
  grid = (int(c["num_frames"]) // t, height // ph, image_width // pw)
  rows = tensors[f"{prefix}embeddings.position_embeddings"].shape[1]
  check("num_frames / image_size", 1 + grid[0] * grid[1] * grid[2], rows,
        f"position embedding rows: 1 + {grid[0]} x {grid[1]} x {grid[2]} tubelets")

  pooled = "pooler.dense.weight" in tensors
  if pooled and c["pooler_act"] != "tanh":
    raise CheckpointError(f"{weights}: pooler_act={c['pooler_act']!r}; the pooler this "
                          "project builds (pre_logits) is tanh(Dense).")
  head = "classifier.weight" in tensors
  options = options_lib.EncoderOptions(
      layernorm_epsilon=float(c["layer_norm_eps"]), qkv_bias="qkv" if c["qkv_bias"] else "none",
      **families.activation_options(c["hidden_act"], weights))
  model = vivit.VideoTransformer(
      num_classes=tensors["classifier.weight"].shape[0] if head else None,
      patch_size=(ph, pw), tubelet_size=t, hidden_size=width, num_layers=depth,
      mlp_dim=int(c["intermediate_size"]), num_heads=heads, variant="spatio_temporal",
      classifier="token", representation_size=width if pooled else None, options=options)

  encoder = {f"encoderblock_{i}": hf_video_layers.layer_to_linen(get, prefix, i, heads)
             for i in range(depth)}
  encoder["posembed_input"] = {"pos_embedding": get(f"{prefix}embeddings.position_embeddings")}
  encoder["encoder_norm"] = st.layer_norm(get, f"{prefix}layernorm")
  params: dict[str, Any] = {"embedding": hf_video_layers.tubelet_to_linen(get, prefix),
                            "cls": get(f"{prefix}embeddings.cls_token"), "Transformer": encoder}
  if pooled:
    params["pre_logits"] = st.linear(get, "pooler.dense")
  if head:
    params["output_projection"] = st.linear(get, "classifier")
  get.check_all_used("transformers ViViT")
  return hf_video.VideoRead(model, params, "vivit_hf", int(c["num_frames"]),
                            (height, image_width))


def _unsupported(model: Any) -> list[str]:
  o = model.options
  checks = [
      (not isinstance(model, vivit.VideoTransformer), "not a VideoTransformer"),
      (getattr(model, "variant", None) != "spatio_temporal",
       f"variant={getattr(model, 'variant', None)!r} (transformers' ViViT is spatio_temporal)"),
      (getattr(model, "embedding", None) != "tubelet", "frame embedding"),
      (getattr(model, "classifier_in_use", None) != "token", "pooling other than the cls token"),
      (getattr(model, "posemb", None) != "learn", "a position embedding other than learned"),
      (o.num_registers or o.layer_scale is not None or o.fc_norm or o.pre_norm or o.qk_norm
       or o.rope is not None or o.mlp_inner_norm or o.distilled,
       "architecture options transformers' ViViT lacks (registers, LayerScale, fc_norm, "
       "pre_norm, QK-norm, RoPE, ...)"),
      (o.qkv_bias == "qv", "qkv_bias='qv'"), (not o.patch_bias, "no patch bias"),
      (o.mlp_activation != "gelu", f"mlp_activation={o.mlp_activation!r}"),
      (o.attention_score != "scaled_dot", f"attention_score={o.attention_score!r}"),
      (model.representation_size not in (None, model.hidden_size)
       or (model.representation_size is not None and model.num_classes is not None),
       "pre_logits with a head (transformers' ViViT classifier has none)"),
  ]
  return [why for bad, why in checks if bad]


def to_hf(params: Mapping[str, Any], model: Any, num_frames: int
          ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Our spatio-temporal ViViT -> (transformers tensors, config.json).

  `num_frames`: the clip length the position embedding was made for (with the tubelet,
  the patch grid and its rows it fixes image_size, which must be square).
  """
  problems = _unsupported(model)
  if problems:
    raise CheckpointError(f"cannot write a transformers ViViT for this model: "
                          f"{'; '.join(problems)}.")
  ph, pw = model.patch_hw
  t = model.tubelet_size
  if num_frames % t:
    raise CheckpointError(f"num_frames={num_frames} is not a multiple of the tubelet ({t}).")
  rows = np.shape(params["Transformer"]["posembed_input"]["pos_embedding"])[1] - 1
  per_frame = rows // (num_frames // t)
  side = int(round(per_frame ** 0.5))
  if rows % (num_frames // t) or side * side != per_frame or ph != pw:
    raise CheckpointError(
        f"the position embedding's {rows} patch rows are not {num_frames // t} square frame "
        f"grids of square patches: transformers' ViViT config has one image_size.")
  o = model.options
  head = model.num_classes is not None
  prefix = "vivit." if head else ""
  out = hf_video_layers.encoder_from_linen(params, prefix, separate_qv_bias=False)
  out[f"{prefix}embeddings.cls_token"] = np.asarray(params["cls"])
  out[f"{prefix}embeddings.position_embeddings"] = np.asarray(
      params["Transformer"]["posembed_input"]["pos_embedding"])
  hf_video_layers.norm_from_linen(out, f"{prefix}layernorm", params["Transformer"]["encoder_norm"])
  if head:
    hf_video_layers.linear_from_linen(out, "classifier", params["output_projection"])
  elif model.representation_size is not None:
    hf_video_layers.linear_from_linen(out, "pooler.dense", params["pre_logits"])
  act = "gelu_fast" if o.gelu_approximate else "gelu"
  config: dict[str, Any] = {
      "model_type": MODEL_TYPE,
      "architectures": ["VivitForVideoClassification" if head else "VivitModel"],
      "image_size": side * ph, "num_frames": num_frames, "tubelet_size": [t, ph, pw],
      "num_channels": 3, "hidden_size": model.hidden_size, "num_hidden_layers": model.num_layers,
      "num_attention_heads": model.num_heads, "intermediate_size": model.mlp_dim,
      "hidden_act": act, "layer_norm_eps": o.layernorm_epsilon,
      "qkv_bias": o.qkv_bias == "qkv", "hidden_dropout_prob": 0.0,
      "attention_probs_dropout_prob": 0.0, "pooler_act": "tanh",
      "pooler_output_size": model.hidden_size}
  if head:
    config["id2label"] = {str(i): f"LABEL_{i}" for i in range(model.num_classes)}
    config["label2id"] = {f"LABEL_{i}": i for i in range(model.num_classes)}
  return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}, config
