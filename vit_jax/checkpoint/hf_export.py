"""Writes a ViT or DINOv2 as a Hugging Face transformers model folder.

    checkpoint.save_hf(params, model, "exported/")   # -> config.json + model.safetensors
    # transformers: AutoModel.from_pretrained("exported/")  (ViTModel / Dinov2Model /
    #               Dinov2WithRegistersModel, or ViTForImageClassification with a head)

The weights go through timm's names (`safetensors_io.linen_to_timm`) and then to the
names transformers saves (for DINOv2 the names `hf_model.read_hf` reads; HF ViT's v4 names,
`transformers/models/vit/modeling_vit.py`). A DINOv2 with registers in timm's layout
(`no_embed_class`: the cls token already holds position row 0) is written with a zero
cls position row, which transformers adds to the cls token: the same function.

Which models: a cls-token ViT with the plain MLP and GELU (erf for parity; a tanh-GELU
model is written with transformers' `gelu_pytorch_tanh`), LayerNorm on both residual
branches, optional LayerScale (then DINOv2), registers (DINOv2 with registers), packed
SwiGLU (DINOv2-g). Anything else (MAP heads, RoPE, fc_norm, QuickGELU, ...) is refused by
name: export those to timm safetensors instead.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from vit_jax import families
from vit_jax.checkpoint import npz, safetensors_io
from vit_jax.checkpoint.errors import CheckpointError
from vit_jax.models import positions


def _unsupported(model: Any) -> list[str]:
  o = model.options
  checks = [
      (model.classifier != "token", f"classifier={model.classifier!r} (HF ViT/DINOv2 pool the "
                                    "cls token)"),
      (o.distilled, "a distillation token"), (o.rope is not None, "RoPE"),
      (o.fc_norm, "fc_norm"), (o.pre_norm, "pre_norm"), (o.qk_norm, "QK-norm"),
      (o.qkv_bias != "qkv", f"qkv_bias={o.qkv_bias!r}"), (not o.patch_bias, "no patch bias"),
      (o.mlp_activation not in ("gelu", "swiglu"), f"mlp_activation={o.mlp_activation!r}"),
      (o.mlp_inner_norm, "an MLP inner norm"), (model.representation_size is not None,
                                                "pre_logits (ViT's pooler is tanh(Dense))"),
      (model.posemb != "learn", f"posemb={model.posemb!r}"),
  ]
  return [why for bad, why in checks if bad]


def _dinov2_mlp_ratio(model: Any) -> int:
  """transformers' Dinov2Config.mlp_ratio (an int) that gives this model's MLP width.

  Plain MLP: mlp_dim = D * ratio. SwiGLU (Dinov2SwiGLUFFN): the half width is
  int(int(D * ratio) * 2 / 3) rounded up to a multiple of 8.
  """
  width, mlp = model.hidden_size, model.mlp_dim
  swiglu = model.options.mlp_activation == "swiglu"
  for ratio in range(1, 17):
    size = ((int(int(width * ratio) * 2 / 3) + 7) // 8 * 8) if swiglu else width * ratio
    if size == mlp:
      return ratio
  raise CheckpointError(f"MLP width {mlp} at width {width}{' (SwiGLU)' if swiglu else ''} is "
                        "not one transformers' Dinov2Config (an integer mlp_ratio) can "
                        "express: export to timm safetensors instead.")


def _model_type(name: str) -> str:
  """A transformers model_type this project also reads (a family's, vit_jax.families)."""
  families.hf_model_type(name)
  return name


def hf_config(model: Any, image_size: int, num_classes: int | None) -> dict[str, Any]:
  o = model.options
  dinov2 = o.layer_scale is not None or o.num_registers or o.mlp_activation == "swiglu"
  patch = model.patch_size if isinstance(model.patch_size, int) else model.patch_size[0]
  config: dict[str, Any] = {
      "hidden_size": model.hidden_size, "num_hidden_layers": model.num_layers,
      "num_attention_heads": model.num_heads, "image_size": image_size, "patch_size": patch,
      "num_channels": 3, "layer_norm_eps": o.layernorm_epsilon, "qkv_bias": True,
      "hidden_act": families.activation_name("gelu", o.gelu_approximate)}
  if dinov2:
    regs = o.num_registers
    config.update(model_type=_model_type("dinov2_with_registers" if regs else "dinov2"),
                  architectures=["Dinov2WithRegistersModel" if regs else "Dinov2Model"],
                  mlp_ratio=_dinov2_mlp_ratio(model), layerscale_value=1.0,
                  use_swiglu_ffn=o.mlp_activation == "swiglu")
    if regs:
      config["num_register_tokens"] = regs
  else:
    config.update(model_type=_model_type("vit"), intermediate_size=model.mlp_dim,
                  architectures=["ViTForImageClassification" if num_classes else "ViTModel"])
  if num_classes:
    config["id2label"] = {str(i): f"LABEL_{i}" for i in range(num_classes)}
    config["label2id"] = {f"LABEL_{i}": i for i in range(num_classes)}
  return config


def to_hf(params: dict[str, Any], model: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Our params -> (transformers state dict, config.json)."""
  problems = _unsupported(model)
  if problems:
    raise CheckpointError(f"cannot write a transformers ViT/DINOv2 for this model: "
                          f"{'; '.join(problems)}. Export it to timm safetensors instead "
                          "(checkpoint.save_safetensors_timm).")
  sd = safetensors_io.linen_to_timm(params, "vit")
  o = model.options
  width = model.hidden_size
  image_size = positions.input_size_from_rows(
      sd["pos_embed"].shape[1], positions.posemb_prefix_rows(model), model.patch_size)[0]
  num_classes = sd["head.weight"].shape[0] if "head.weight" in sd else None
  config = hf_config(model, image_size, num_classes)
  dinov2 = config["model_type"].startswith("dinov2")
  pre = "" if dinov2 or not num_classes else "vit."  # ViTForImageClassification nests
  out = {f"{pre}embeddings.patch_embeddings.projection.{p}": sd[f"patch_embed.proj.{p}"]
         for p in ("weight", "bias")}
  pos, cls = sd["pos_embed"], sd["cls_token"]
  if o.num_registers:
    out[f"{pre}embeddings.register_tokens"] = sd["reg_token"]
  if o.no_embed_class:  # transformers adds row 0 to cls: zero it, cls already holds it
    pos = np.concatenate([np.zeros_like(pos[:, :1]), pos], axis=1)
  out[f"{pre}embeddings.cls_token"] = cls
  out[f"{pre}embeddings.position_embeddings"] = pos
  if dinov2:
    out["embeddings.mask_token"] = np.zeros((1, width), cls.dtype)
  for i in range(model.num_layers):
    t, h = f"blocks.{i}.", f"{pre}encoder.layer.{i}."
    q, k, v = np.split(sd[t + "attn.qkv.weight"], 3, axis=0)
    qb, kb, vb = np.split(sd[t + "attn.qkv.bias"], 3, axis=0)
    for name, w, b in (("query", q, qb), ("key", k, kb), ("value", v, vb)):
      out[f"{h}attention.attention.{name}.weight"] = w
      out[f"{h}attention.attention.{name}.bias"] = b
    names = ({"attn.proj": "attention.output.dense", "norm1": "norm1", "norm2": "norm2",
              "mlp.fc1": "mlp.weights_in" if o.mlp_activation == "swiglu" else "mlp.fc1",
              "mlp.fc2": "mlp.weights_out" if o.mlp_activation == "swiglu" else "mlp.fc2"}
             if dinov2 else
             {"attn.proj": "attention.output.dense", "norm1": "layernorm_before",
              "norm2": "layernorm_after", "mlp.fc1": "intermediate.dense",
              "mlp.fc2": "output.dense"})
    for src, dst in names.items():
      for p in ("weight", "bias"):
        out[f"{h}{dst}.{p}"] = sd[f"{t}{src}.{p}"]
    if dinov2:
      for n in (1, 2):
        gamma = sd.get(f"{t}ls{n}.gamma")
        out[f"{h}layer_scale{n}.lambda1"] = (gamma if gamma is not None
                                             else np.ones(width, cls.dtype))
  for p in ("weight", "bias"):
    out[f"{pre}layernorm.{p}"] = sd[f"norm.{p}"]
    if num_classes:
      if dinov2:
        raise CheckpointError("transformers' Dinov2ForImageClassification reads the cls token "
                              "and the mean patch token: a DINOv2 with a cls-token head has no "
                              "transformers equivalent; export it with num_classes=None or to "
                              "timm safetensors.")
      out[f"classifier.{p}"] = sd[f"head.{p}"]
  return out, config


def save_hf(params: dict[str, Any], model: Any, folder: str) -> None:
  """Writes config.json and model.safetensors into `folder` (each atomically)."""
  import safetensors.numpy  # noqa: PLC0415

  state, config = to_hf(params, model)
  os.makedirs(folder, exist_ok=True)
  state = {k: np.ascontiguousarray(v) for k, v in state.items()}
  npz.atomic_write(os.path.join(folder, "model.safetensors"),
                   lambda f: f.write(safetensors.numpy.save(state, metadata={"format": "pt"})))
  npz.atomic_write(os.path.join(folder, "config.json"),
                   lambda f: f.write(json.dumps(config, indent=2, sort_keys=True).encode()))
