"""transformers V-JEPA 2 folders (`model_type: vjepa2`) -> a spatio_temporal VideoTransformer.

Key names (docs/checkpoint_formats.md, 'V-JEPA 2: transformers'); `E` is `encoder.`
(VJEPA2Model) or `vjepa2.encoder.` (VJEPA2ForVideoClassification):

  E embeddings.patch_embeddings.proj.{weight [D, C, t, p, p], bias}  -> embedding
  E layer.{i}.norm1, .norm2                          -> encoderblock_i/LayerNorm_{0,1}
  E layer.{i}.attention.{query,key,value}            -> .../MultiHeadDotProductAttention_0
  E layer.{i}.attention.proj                         -> .../MultiHeadDotProductAttention_0/out
  E layer.{i}.mlp.fc1, .fc2                          -> .../MlpBlock_0/Dense_{0,1}
  E layernorm                                        -> Transformer/encoder_norm
  pooler.query_tokens [1, 1, D]                      -> pooler/query_tokens
  pooler.self_attention_layers.{i}.{layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2,
                                    mlp.fc1, mlp.fc2} -> pooler/encoderblock_i/...
  pooler.cross_attention_layer.{layer_norm1, cross_attn.{q,k,v}_proj, layer_norm2, mlp}
                                                     -> pooler/{kv_norm, cross_attention,
                                                        mlp_norm, mlp}
  classifier.{weight, bias}                          -> output_projection
  (vjepa2.)predictor.*                               left out (pre-training only)

config.json fields read: hidden_size, num_hidden_layers, num_attention_heads, mlp_ratio,
patch_size, tubelet_size, in_chans, qkv_bias, num_pooler_layers (checked against the
weights), layer_norm_eps, hidden_act, crop_size, frames_per_clip (what the weights cannot
show). The encoder without a classifier gives the mean of its tokens ([B, D]; transformers'
VJEPA2Model returns the tokens only).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from vit_jax import families
from vit_jax.checkpoint import hf_video
from vit_jax.checkpoint import safetensors_io as st
from vit_jax.checkpoint.errors import CheckpointError
from vit_jax.models import options as options_lib
from vit_jax.models import vivit

WEIGHTS_FILE = "model.safetensors"
_PREFIXES = ("vjepa2.encoder.", "encoder.")
_LEFT_OUT = ("predictor.", "vjepa2.predictor.")


def _linear_heads(get: st.Consumer, name: str, heads: int) -> dict[str, np.ndarray]:
  """q/k/v Linear -> DenseGeneral [D, H, hd] (bias [H, hd] when the file has one)."""
  weight = get(f"{name}.weight")
  out = {"kernel": weight.T.reshape(weight.shape[1], heads, -1)}
  if f"{name}.bias" in get:
    out["bias"] = get(f"{name}.bias").reshape(heads, -1)
  return out


def _mlp(get: st.Consumer, name: str) -> dict[str, Any]:
  return {"Dense_0": st.linear(get, f"{name}.fc1"), "Dense_1": st.linear(get, f"{name}.fc2")}


def _block(get: st.Consumer, src: str, heads: int, names: Mapping[str, str]) -> dict[str, Any]:
  """A pre-LN block (encoder layer or pooler self-attention layer) -> encoderblock_i."""
  attention = {k: _linear_heads(get, f"{src}.{names[k]}", heads)
               for k in ("query", "key", "value")}
  attention["out"] = st.heads_out(get(f"{src}.{names['out']}.weight"),
                                  get(f"{src}.{names['out']}.bias"), heads)
  return {"LayerNorm_0": st.layer_norm(get, f"{src}.{names['norm1']}"),
          "MultiHeadDotProductAttention_0": attention,
          "LayerNorm_1": st.layer_norm(get, f"{src}.{names['norm2']}"),
          "MlpBlock_0": _mlp(get, f"{src}.mlp")}


_ENCODER_NAMES = dict(query="attention.query", key="attention.key", value="attention.value",
                      out="attention.proj", norm1="norm1", norm2="norm2")
_POOLER_NAMES = dict(query="self_attn.q_proj", key="self_attn.k_proj", value="self_attn.v_proj",
                     out="self_attn.out_proj", norm1="layer_norm1", norm2="layer_norm2")


def _field(config: Mapping[str, Any], name: str) -> Any:
  _, hf_type = families.hf_model_type("vjepa2")
  return config.get(name, hf_type.config_defaults.get(name))


def _check(source: str, name: str, in_config: Any, in_weights: Any) -> None:
  if in_config != in_weights:
    raise CheckpointError(f"{source}: config.json says {name}={in_config!r}, but the weights "
                          f"have {in_weights!r}: the folder's config.json does not belong to "
                          "its model.safetensors.")


def read(folder: str, config: Mapping[str, Any]) -> hf_video.VideoRead:
  """A V-JEPA 2 folder -> VideoRead (the model, its params, the predictor's keys left out)."""
  source = os.path.join(folder, WEIGHTS_FILE)
  tensors = st.read_safetensors(source)
  left_out = tuple(sorted(k for k in tensors if k.startswith(_LEFT_OUT)))
  get = st.Consumer({k: v for k, v in tensors.items() if k not in left_out}, source)
  prefix = next((p for p in _PREFIXES if f"{p}embeddings.patch_embeddings.proj.weight" in get),
                None)
  if prefix is None:
    raise CheckpointError(f"{source}: no V-JEPA 2 encoder: expected "
                          "`encoder.embeddings.patch_embeddings.proj.weight` (VJEPA2Model) or "
                          "`vjepa2.encoder.…` (VJEPA2ForVideoClassification).")
  field = lambda name: _field(config, name)

  # [D, C, t, p, p] -> [t, p, p, C, D]
  patch = get(f"{prefix}embeddings.patch_embeddings.proj.weight")
  width, channels, tubelet, ph, pw = patch.shape
  patch_size = field("patch_size")
  patch_size = tuple(patch_size) if isinstance(patch_size, (list, tuple)) else (
      int(patch_size), int(patch_size))
  _check(source, "hidden_size", field("hidden_size"), width)
  _check(source, "in_chans", field("in_chans"), channels)
  _check(source, "tubelet_size", field("tubelet_size"), tubelet)
  _check(source, "patch_size", patch_size, (ph, pw))
  num_layers = st.count_blocks(get.tensors, rf"{prefix}layer\.(\d+)\.")
  _check(source, "num_hidden_layers", field("num_hidden_layers"), num_layers)
  heads = int(field("num_attention_heads"))
  if width % heads:
    raise CheckpointError(f"{source}: config.json's num_attention_heads={heads} does not "
                          f"divide hidden_size={width}.")
  mlp_dim = get.tensors[f"{prefix}layer.0.mlp.fc1.weight"].shape[0]
  _check(source, "mlp_ratio (hidden_size * mlp_ratio = fc1 width)",
         int(width * float(field("mlp_ratio"))), mlp_dim)
  has_bias = f"{prefix}layer.0.attention.query.bias" in get
  _check(source, "qkv_bias", bool(field("qkv_bias")), has_bias)

  params: dict[str, Any] = {"embedding": {
      "kernel": patch.transpose(2, 3, 4, 1, 0),
      "bias": get(f"{prefix}embeddings.patch_embeddings.proj.bias")}}
  encoder = {f"encoderblock_{i}": _block(get, f"{prefix}layer.{i}", heads, _ENCODER_NAMES)
             for i in range(num_layers)}
  encoder["encoder_norm"] = st.layer_norm(get, f"{prefix}layernorm")
  params["Transformer"] = encoder

  classifier, num_classes, pooler_layers = "gap", None, None
  if "pooler.query_tokens" in get:
    classifier = "attentive"
    pooler_layers = st.count_blocks(get.tensors, r"pooler\.self_attention_layers\.(\d+)\.")
    _check(source, "num_pooler_layers", field("num_pooler_layers"), pooler_layers)
    pooler = {f"encoderblock_{i}": _block(get, f"pooler.self_attention_layers.{i}", heads,
                                          _POOLER_NAMES)
              for i in range(pooler_layers)}
    cross = "pooler.cross_attention_layer"
    pooler.update(
        query_tokens=get("pooler.query_tokens"),
        kv_norm=st.layer_norm(get, f"{cross}.layer_norm1"),
        cross_attention={k: _linear_heads(get, f"{cross}.cross_attn.{k[0]}_proj", heads)
                         for k in ("query", "key", "value")},
        mlp_norm=st.layer_norm(get, f"{cross}.layer_norm2"),
        mlp=_mlp(get, f"{cross}.mlp"))
    params["pooler"] = pooler
    pooler_mlp = pooler["mlp"]["Dense_0"]["kernel"].shape[1]
    if pooler_mlp != 4 * width:
      raise CheckpointError(f"{source}: the pooler's MLP is {pooler_mlp} wide; V-JEPA 2's is "
                            f"4 * hidden_size = {4 * width} (transformers' VJEPA2MLP default).")
  if "classifier.weight" in get:
    params["output_projection"] = st.linear(get, "classifier")
    num_classes = params["output_projection"]["kernel"].shape[1]
    if classifier != "attentive":
      raise CheckpointError(f"{source}: a `classifier` without the attentive `pooler`: "
                            "VJEPA2ForVideoClassification has both.")
  get.check_all_used("V-JEPA 2")

  options = options_lib.EncoderOptions(
      rope="vjepa2", layernorm_epsilon=float(field("layer_norm_eps")),
      qkv_bias="qkv" if has_bias else "none",
      **families.activation_options(field("hidden_act"), f"{source}: config.json hidden_act"))
  if options.mlp_activation != "gelu":
    raise CheckpointError(f"{source}: hidden_act={field('hidden_act')!r}: V-JEPA 2 models are "
                          "read with a GELU MLP only.")
  model = vivit.VideoTransformer(
      num_classes=num_classes, patch_size=(ph, pw), hidden_size=width, num_layers=num_layers,
      mlp_dim=mlp_dim, num_heads=heads, tubelet_size=tubelet, variant="spatio_temporal",
      embedding="tubelet", classifier=classifier, posemb="none", pooler_layers=pooler_layers,
      options=options)
  crop = int(field("crop_size"))
  if crop % ph or crop % pw:
    raise CheckpointError(f"{source}: crop_size={crop} is not a multiple of the patch "
                          f"{ph}x{pw}.")
  return hf_video.VideoRead(model=model, params=params, family="vjepa2",
                            num_frames=int(field("frames_per_clip")), input_size=(crop, crop),
                            left_out=left_out)
