"""transformers VideoMAE folders (`model_type: videomae`) <-> `VideoTransformer`.

    found = hf_video.read_folder("videomae-base-finetuned-kinetics", config)  # load_pretrained
    tensors, config = to_hf(params, model, num_frames=16, image_size=224)  # export

Keys (VideoMAEForVideoClassification / ForPreTraining: prefix "videomae."; VideoMAEModel:
none), beside the shared layer names of `hf_video_layers` (q_bias / v_bias: no key bias):

  {p}layernorm.{weight, bias}      use_mean_pooling=false only      Transformer/encoder_norm
  fc_norm.{weight, bias}           classifier, use_mean_pooling      fc_norm (eps 1e-5, torch's
                                                                     default: the classifier
                                                                     does not pass the config's)
  classifier.{weight, bias}        classifier only                   output_projection
  decoder.*, encoder_to_decoder.*, mask_token    ForPreTraining      left out (reported)

No position embedding is stored: the fixed sinusoidal table over the t*gh*gw tokens
(positions.sincos1d_posemb) is recomputed for the clip, any frame count or size.

What the model returns: the classifier's logits (fc_norm of the token mean); for the
encoders without a head, the mean of the tokens after the final norm when the file has one
(use_mean_pooling=false, the pre-training releases), else fc_norm of the mean with a unit
fc_norm (scale 1, bias 0; what VideoMAE's fine-tuning starts from). A classifier with
use_mean_pooling=false classifies the first patch token (there is no cls token): refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from vit_jax import families
from vit_jax.checkpoint import hf_video, hf_video_layers
from vit_jax.checkpoint import safetensors_io as st
from vit_jax.checkpoint.errors import CheckpointError
from vit_jax.families import videomae as family
from vit_jax.models import options as options_lib
from vit_jax.models import vivit

MODEL_TYPE = "videomae"
FC_NORM_EPSILON = 1e-5  # nn.LayerNorm(hidden_size) in VideoMAEForVideoClassification
# VideoMAEForPreTraining's decoder: not part of the video encoder.
PRETRAINING_ONLY = re.compile(r"^(decoder\.|encoder_to_decoder\.|mask_token$)")


def read(folder: str, config: Mapping[str, Any]) -> hf_video.VideoRead:
  """A transformers VideoMAE folder -> the model that gives its outputs, and its params."""
  c = hf_video.settings(config, MODEL_TYPE)
  tensors, weights = hf_video.read_weights(folder)
  left_out = tuple(sorted(k for k in tensors if PRETRAINING_ONLY.match(k)))
  tensors = {k: v for k, v in tensors.items() if k not in left_out}
  prefix = hf_video_layers.model_prefix(tensors, "videomae.", weights)
  get = st.Consumer(tensors, weights)
  kernel, width, depth, heads = hf_video_layers.check_encoder(tensors, prefix, c, weights)
  check = lambda field, value, found, what: hf_video.check_field(weights, field, value, found,
                                                                 what)
  check("tubelet_size", int(c["tubelet_size"]), kernel.shape[2], "the tubelet's frames")
  check("patch_size", hf_video.pair(c["patch_size"]), tuple(kernel.shape[3:]),
        "the tubelet's height and width")
  first = f"{prefix}encoder.layer.0."
  check("qv_bias", bool(c["qv_bias"]), first + "attention.attention.q_bias" in tensors,
        "query/value biases")
  mean_pooling = bool(c["use_mean_pooling"])
  final_norm = f"{prefix}layernorm.weight" in tensors
  check("use_mean_pooling", mean_pooling, not final_norm,
        "a final layernorm (VideoMAEModel has one only without mean pooling)")
  head = "classifier.weight" in tensors
  if head and not mean_pooling:
    raise CheckpointError(
        f"{weights}: a VideoMAE classifier with use_mean_pooling=false classifies the first "
        "patch token (VideoMAE has no cls token); this project does not build that model.")
  if head:
    check("use_mean_pooling", mean_pooling, "fc_norm.weight" in tensors, "fc_norm")

  fc_norm = not final_norm
  options = options_lib.EncoderOptions(
      layernorm_epsilon=float(c["layer_norm_eps"]), fc_norm=fc_norm,
      qkv_bias="qv" if c["qv_bias"] else "none",
      **families.activation_options(c["hidden_act"], weights))
  ph, pw = hf_video.pair(c["patch_size"])
  model = vivit.VideoTransformer(
      num_classes=tensors["classifier.weight"].shape[0] if head else None,
      patch_size=(ph, pw), tubelet_size=int(c["tubelet_size"]), hidden_size=width,
      num_layers=depth, mlp_dim=int(c["intermediate_size"]), num_heads=heads,
      variant="spatio_temporal", classifier="gap", posemb="sincos1d",
      fc_norm_epsilon=FC_NORM_EPSILON if fc_norm else None, options=options)

  encoder = {f"encoderblock_{i}": hf_video_layers.layer_to_linen(get, prefix, i, heads)
             for i in range(depth)}
  if final_norm:
    encoder["encoder_norm"] = st.layer_norm(get, f"{prefix}layernorm")
  params: dict[str, Any] = {"embedding": hf_video_layers.tubelet_to_linen(get, prefix),
                            "Transformer": encoder}
  if fc_norm:
    params["fc_norm"] = (st.layer_norm(get, "fc_norm") if "fc_norm.weight" in tensors else
                         {"scale": np.ones(width, np.float32), "bias": np.zeros(width, np.float32)})
  if head:
    params["output_projection"] = st.linear(get, "classifier")
  get.check_all_used("transformers VideoMAE")
  return hf_video.VideoRead(model, params, family.FAMILY.name, int(c["num_frames"]),
                            hf_video.pair(c["image_size"]), left_out)


def _unsupported(model: Any) -> list[str]:
  o = model.options
  checks = [
      (not isinstance(model, vivit.VideoTransformer), "not a VideoTransformer"),
      (getattr(model, "variant", None) != "spatio_temporal",
       f"variant={getattr(model, 'variant', None)!r} (VideoMAE is spatio_temporal)"),
      (getattr(model, "embedding", None) != "tubelet", "frame embedding"),
      (getattr(model, "posemb", None) != "sincos1d", "a position embedding other than sincos1d"),
      (getattr(model, "classifier_in_use", None) != "gap", "pooling other than the token mean"),
      (o.num_registers or o.layer_scale is not None or o.pre_norm or o.qk_norm
       or o.rope is not None or o.mlp_inner_norm or o.class_token,
       "architecture options transformers' VideoMAE lacks (registers, LayerScale, "
       "pre_norm, QK-norm, RoPE, a cls token, ...)"),
      (o.qkv_bias == "qkv", "a key bias (VideoMAE has query/value biases only)"),
      (not o.patch_bias, "no patch bias"), (model.representation_size is not None, "pre_logits"),
      (o.mlp_activation != "gelu", f"mlp_activation={o.mlp_activation!r}"),
      (o.attention_score != "scaled_dot", f"attention_score={o.attention_score!r}"),
      (model.num_classes is not None and not o.fc_norm,
       "a classifier without fc_norm (transformers' would classify the first patch token)"),
      (o.fc_norm and model.num_classes is not None and model.fc_norm_epsilon != FC_NORM_EPSILON,
       f"fc_norm epsilon {model.fc_norm_epsilon or o.layernorm_epsilon} (transformers' "
       f"classifier has {FC_NORM_EPSILON}: build the model with fc_norm_epsilon="
       f"{FC_NORM_EPSILON})"),
  ]
  return [why for bad, why in checks if bad]


def to_hf(params: Mapping[str, Any], model: Any, num_frames: int, image_size: int
          ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Our VideoMAE -> (transformers tensors, config.json): VideoMAEForVideoClassification
  with a head, else VideoMAEModel (its final layernorm when the model has encoder_norm).

  num_frames, image_size: the clip config.json states (the table is recomputed for any).
  """
  problems = _unsupported(model)
  if problems:
    raise CheckpointError(f"cannot write a transformers VideoMAE for this model: "
                          f"{'; '.join(problems)}.")
  o = model.options
  ph, pw = model.patch_hw
  head = model.num_classes is not None
  if not head and o.fc_norm:
    raise CheckpointError("a VideoMAE encoder without a head pools with fc_norm, which "
                          "transformers' VideoMAEModel does not hold: export it with a head.")
  prefix = "videomae." if head else ""
  out = hf_video_layers.encoder_from_linen(params, prefix, separate_qv_bias=True)
  if o.fc_norm:
    hf_video_layers.norm_from_linen(out, "fc_norm", params["fc_norm"])
  else:
    hf_video_layers.norm_from_linen(out, f"{prefix}layernorm",
                                    params["Transformer"]["encoder_norm"])
  if head:
    hf_video_layers.linear_from_linen(out, "classifier", params["output_projection"])
  config: dict[str, Any] = {
      "model_type": MODEL_TYPE,
      "architectures": ["VideoMAEForVideoClassification" if head else "VideoMAEModel"],
      "image_size": image_size, "patch_size": ph, "num_channels": 3, "num_frames": num_frames,
      "tubelet_size": model.tubelet_size, "hidden_size": model.hidden_size,
      "num_hidden_layers": model.num_layers, "num_attention_heads": model.num_heads,
      "intermediate_size": model.mlp_dim,
      "hidden_act": "gelu_pytorch_tanh" if o.gelu_approximate else "gelu",
      "layer_norm_eps": o.layernorm_epsilon, "qv_bias": o.qkv_bias == "qv",
      "use_mean_pooling": bool(o.fc_norm), "hidden_dropout_prob": 0.0,
      "attention_probs_dropout_prob": 0.0}
  if ph != pw:
    raise CheckpointError(f"patch {ph}x{pw}: transformers' VideoMAE config has square patches.")
  if head:
    config["id2label"] = {str(i): f"LABEL_{i}" for i in range(model.num_classes)}
    config["label2id"] = {f"LABEL_{i}": i for i in range(model.num_classes)}
  return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}, config
