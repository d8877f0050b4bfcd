"""The layer names transformers' ViViT and VideoMAE share, in both directions.

Both store BERT-style encoder layers and a Conv3d tubelet embedding (docs/
checkpoint_formats.md, 'ViViT and VideoMAE: transformers'):

  {p}embeddings.patch_embeddings.projection.{weight [D, C, t, h, w], bias [D]}
  {p}encoder.layer.{i}.layernorm_before.{weight, bias}                 LayerNorm_0
  {p}encoder.layer.{i}.attention.attention.{query,key,value}.weight    [D, D]
  {p}encoder.layer.{i}.attention.attention.{query,key,value}.bias      ViViT
  {p}encoder.layer.{i}.attention.attention.{q_bias, v_bias}            VideoMAE (no k bias)
  {p}encoder.layer.{i}.attention.output.dense.{weight, bias}           out
  {p}encoder.layer.{i}.layernorm_after.{weight, bias}                  LayerNorm_1
  {p}encoder.layer.{i}.intermediate.dense.{weight, bias}               MlpBlock_0/Dense_0
  {p}encoder.layer.{i}.output.dense.{weight, bias}                     MlpBlock_0/Dense_1

`p` is "vivit." / "videomae." in the task models and "" in the bare VivitModel /
VideoMAEModel. The Conv3d runs on [B, C, T, H, W] and flattens its output (t, gh, gw)
row-major: the time-major token order of `VideoTransformer`, so only the kernel axes move
([D, C, t, h, w] -> [t, h, w, C, D]).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from vit_jax.checkpoint import safetensors_io as st
from vit_jax.checkpoint.errors import CheckpointError

PATCH = "embeddings.patch_embeddings.projection"
LAYER = "encoder.layer.{}."


def model_prefix(keys: Mapping[str, Any], task_prefix: str, path: str) -> str:
  """`task_prefix` ("vivit.") for the task models, "" for the bare model."""
  for prefix in (task_prefix, ""):
    if f"{prefix}{PATCH}.weight" in keys:
      return prefix
  raise CheckpointError(f"{path}: no {task_prefix}{PATCH}.weight (nor {PATCH}.weight): not a "
                        f"transformers {task_prefix.rstrip('.')} file.")


def num_layers(keys: Mapping[str, Any], prefix: str) -> int:
  return st.count_blocks(keys, re.escape(prefix) + r"encoder\.layer\.(\d+)\.")


def check_encoder(tensors: Mapping[str, Any], prefix: str, c: Mapping[str, Any],
                  weights: str) -> tuple[Any, int, int, int]:
  """The config.json fields ViViT and VideoMAE share, checked against the weights (a
  disagreement is a CheckpointError naming the field): width, input channels, depth, MLP
  width and the head count. Returns (tubelet kernel [D, C, t, h, w], width, depth, heads)."""
  from vit_jax.checkpoint import hf_video  # noqa: PLC0415 (hf_video imports the families)

  kernel = tensors[f"{prefix}{PATCH}.weight"]  # [D, C, t, h, w]
  width, channels = kernel.shape[:2]
  check = lambda field, value, found, what: hf_video.check_field(weights, field, value, found,
                                                                 what)
  check("hidden_size", c.get("hidden_size"), width, "the tubelet embedding's width")
  check("num_channels", c["num_channels"], channels, "input channels of the tubelet embedding")
  depth = num_layers(tensors, prefix)
  check("num_hidden_layers", c.get("num_hidden_layers"), depth, "encoder layers")
  check("intermediate_size", c.get("intermediate_size"),
        tensors[f"{prefix}encoder.layer.0.intermediate.dense.weight"].shape[0], "the MLP width")
  heads = int(c.get("num_attention_heads") or 0)
  if not heads or width % heads:
    raise CheckpointError(f"{weights}: config.json num_attention_heads={heads or None} does not "
                          f"divide the width {width}.")
  return kernel, width, depth, heads


def tubelet_to_linen(get: st.Consumer, prefix: str) -> dict[str, np.ndarray]:
  """Conv3d [D, C, t, h, w] -> flax Conv kernel [t, h, w, C, D] and bias."""
  return {"kernel": get(f"{prefix}{PATCH}.weight").transpose(2, 3, 4, 1, 0),
          "bias": get(f"{prefix}{PATCH}.bias")}


def layer_to_linen(get: st.Consumer, prefix: str, i: int, heads: int) -> dict[str, Any]:
  """Encoder layer i -> the Encoder1DBlock params (a missing q/k/v bias stays absent)."""
  src = prefix + LAYER.format(i)
  attn = {}
  for name, short in (("query", "q"), ("key", "k"), ("value", "v")):
    weight = get(f"{src}attention.attention.{name}.weight")
    attn[name] = {"kernel": weight.T.reshape(weight.shape[1], heads, -1)}
    for bias_key in (f"{src}attention.attention.{name}.bias", f"{src}attention.attention.{short}_bias"):
      if bias_key in get:
        attn[name]["bias"] = get(bias_key).reshape(heads, -1)
  attn["out"] = st.heads_out(get(f"{src}attention.output.dense.weight"),
                             get(f"{src}attention.output.dense.bias"), heads)
  return {"LayerNorm_0": st.layer_norm(get, src + "layernorm_before"),
          "MultiHeadDotProductAttention_0": attn,
          "LayerNorm_1": st.layer_norm(get, src + "layernorm_after"),
          "MlpBlock_0": {"Dense_0": st.linear(get, src + "intermediate.dense"),
                         "Dense_1": st.linear(get, src + "output.dense")}}


# ---- Export: our params -> transformers' names.

def _linear(out: dict[str, np.ndarray], name: str, dense: Mapping[str, Any]) -> None:
  out[f"{name}.weight"] = np.asarray(dense["kernel"]).T
  if "bias" in dense:
    out[f"{name}.bias"] = np.asarray(dense["bias"])


def _norm(out: dict[str, np.ndarray], name: str, norm: Mapping[str, Any]) -> None:
  out[f"{name}.weight"] = np.asarray(norm["scale"])
  out[f"{name}.bias"] = np.asarray(norm["bias"])


def norm_from_linen(out: dict[str, np.ndarray], name: str, norm: Mapping[str, Any]) -> None:
  _norm(out, name, norm)


def linear_from_linen(out: dict[str, np.ndarray], name: str, dense: Mapping[str, Any]) -> None:
  _linear(out, name, dense)


def encoder_from_linen(params: Mapping[str, Any], prefix: str, separate_qv_bias: bool
                       ) -> dict[str, np.ndarray]:
  """Tubelet embedding and encoder layers -> transformers tensors (float32 numpy).

  separate_qv_bias: VideoMAE's `q_bias` / `v_bias` (the key has none) instead of ViViT's
  per-projection `.bias`.
  """
  out: dict[str, np.ndarray] = {}
  emb = params["embedding"]
  out[f"{prefix}{PATCH}.weight"] = np.asarray(emb["kernel"]).transpose(4, 3, 0, 1, 2)
  out[f"{prefix}{PATCH}.bias"] = np.asarray(emb["bias"])
  encoder = params["Transformer"]
  i = 0
  while f"encoderblock_{i}" in encoder:
    block, src = encoder[f"encoderblock_{i}"], prefix + LAYER.format(i)
    _norm(out, src + "layernorm_before", block["LayerNorm_0"])
    attn = block["MultiHeadDotProductAttention_0"]
    for name, short in (("query", "q"), ("key", "k"), ("value", "v")):
      kernel = np.asarray(attn[name]["kernel"])  # [D, H, hd]
      out[f"{src}attention.attention.{name}.weight"] = kernel.reshape(kernel.shape[0], -1).T
      if "bias" in attn[name]:
        bias = np.asarray(attn[name]["bias"]).reshape(-1)
        key = (f"{src}attention.attention.{short}_bias" if separate_qv_bias
               else f"{src}attention.attention.{name}.bias")
        out[key] = bias
    kernel = np.asarray(attn["out"]["kernel"])  # [H, hd, D]
    out[f"{src}attention.output.dense.weight"] = kernel.reshape(-1, kernel.shape[-1]).T
    out[f"{src}attention.output.dense.bias"] = np.asarray(attn["out"]["bias"])
    _norm(out, src + "layernorm_after", block["LayerNorm_1"])
    _linear(out, src + "intermediate.dense", block["MlpBlock_0"]["Dense_0"])
    _linear(out, src + "output.dense", block["MlpBlock_0"]["Dense_1"])
    i += 1
  return out
