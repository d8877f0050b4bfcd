"""VideoPrism's original Flax release (google-deepmind/videoprism) -> VideoTransformer.

The released video encoders `flax_base_f16r288_repeated.npz` and
`flax_large_f8r288_repeated.npz` (`videoprism/models.py`, CHECKPOINTS) hold
`encoders.FactorizedEncoder`'s variables, flattened with "/" (`utils.load_checkpoint`),
its layers stacked on a leading axis (`scan=True`, the "repeated" layout):

  params/patch_projection/linear/{kernel [P*P*3, D], bias}   pixels (p, q, c) of a patch
  params/spatial_pos_emb/emb_var [n, D], params/temporal_pos_emb/emb_var [T, D]
  params/{spatial,temporal}_encoder/transformers_stack/x_layers/    (each [L, ...])
    layer_norm/{scale, bias}                     pre-attention LayerNorm (scale + 1)
    self_attention/{query,key,value}/{w [D, H, hd], b [H, hd]}, post/{w [D, H, hd], b [D]}
    ff_layer/layer_norm, ff_layer/ffn_layer{1,2}/linear/{kernel, bias}
  params/{spatial,temporal}_ln/{scale, bias}     final LayerNorms (scale + 1)

Praxis's LayerNorm multiplies by `1 + scale`, so the scales are stored here with the 1
added. The model is the transformers port's (`hf_videoprism`): variant
"factorised_encoder_tokens" without a pooling head; the encoder's output is the tokens
[B, T*n, D] and our pooled features their mean (classifier "gap").

The npz does not say the attention logit cap, so the architecture read from the shapes
must be one of the documented configs (`models.py`, CONFIGS: v1 base, large, giant),
which give it (50); any other npz is refused. The video-text (LvT) files are refused too.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np

from vit_jax.checkpoint.errors import CheckpointError
from vit_jax.checkpoint.hf_video import VideoRead
from vit_jax.models import vivit
from vit_jax.models.options import EncoderOptions

_STACK = "params/{}_encoder/transformers_stack/x_layers/"
# google-deepmind/videoprism videoprism/models.py CONFIGS: the released encoders' configs.
DOCUMENTED = {
    "videoprism_v1_base": dict(patch_size=18, pos_emb_shape=(16, 16, 16), model_dim=768,
                               num_spatial_layers=12, num_temporal_layers=4, num_heads=12,
                               mlp_dim=3072, atten_logit_cap=50.0),
    "videoprism_v1_large": dict(patch_size=18, pos_emb_shape=(8, 16, 16), model_dim=1024,
                                num_spatial_layers=24, num_temporal_layers=4, num_heads=16,
                                mlp_dim=4096, atten_logit_cap=50.0),
    "videoprism_v1_giant": dict(patch_size=18, pos_emb_shape=(8, 16, 16), model_dim=1408,
                                num_spatial_layers=40, num_temporal_layers=4, num_heads=16,
                                mlp_dim=6144, atten_logit_cap=50.0),
}


def is_videoprism_npz(keys: Any) -> bool:
  """Whether npz keys are VideoPrism's FactorizedEncoder (or its LvT video-text model)."""
  return any(k.startswith(("params/spatial_encoder/", "params/vision_encoder/"))
             for k in keys)


def architecture(shapes: Mapping[str, tuple[int, ...]], path: str) -> dict[str, Any]:
  """The FactorizedEncoder config that the array shapes show (all but the logit cap)."""
  if any(k.startswith("params/vision_encoder/") for k in shapes):
    raise CheckpointError(f"{path}: a VideoPrism video-text (LvT) checkpoint; only the video "
                          "encoders (flax_{base,large}_f*r288_repeated.npz) are read.")
  try:
    rows, width = shapes["params/patch_projection/linear/kernel"]
    n = shapes["params/spatial_pos_emb/emb_var"][0]
    frames = shapes["params/temporal_pos_emb/emb_var"][0]
    spatial_layers, _, heads, _ = shapes[_STACK.format("spatial") + "self_attention/query/w"]
    temporal_layers = shapes[_STACK.format("temporal") + "self_attention/query/w"][0]
    mlp_dim = shapes[_STACK.format("spatial") + "ff_layer/ffn_layer1/linear/kernel"][-1]
  except (KeyError, ValueError) as e:
    raise CheckpointError(f"{path}: not VideoPrism's scanned (\"repeated\") FactorizedEncoder "
                          f"layout: {e!r} is missing or of another rank.") from e
  patch = math.isqrt(rows // 3)
  side = math.isqrt(n)
  if patch * patch * 3 != rows or side * side != n:
    raise CheckpointError(f"{path}: patch_projection rows {rows} / spatial_pos_emb rows {n} "
                          "are not a square RGB patch / a square grid.")
  return dict(patch_size=patch, pos_emb_shape=(frames, side, side), model_dim=width,
              num_spatial_layers=spatial_layers, num_temporal_layers=temporal_layers,
              num_heads=heads, mlp_dim=mlp_dim)


def documented_config(arch: Mapping[str, Any], path: str) -> dict[str, Any]:
  """The documented config with these shapes (it adds atten_logit_cap), else an error."""
  for name, config in DOCUMENTED.items():
    if all(config[k] == v for k, v in arch.items()):
      return dict(config, name=name)
  raise CheckpointError(
      f"{path}: its shapes give {dict(arch)}, which is none of VideoPrism's documented "
      f"configs ({', '.join(DOCUMENTED)}); the npz does not state its attention logit cap, "
      "so it is not loaded. If you know the cap, call vit_jax.checkpoint.videoprism_npz."
      "convert(arrays, dict(architecture(...), atten_logit_cap=CAP)).")


class _Used(dict):
  """The arrays, remembering which were read (every one must be)."""

  def __init__(self, arrays: Mapping[str, np.ndarray]):
    super().__init__(arrays)
    self.used: set[str] = set()

  def __getitem__(self, key: str) -> np.ndarray:
    if key not in self:
      raise CheckpointError(f"VideoPrism npz: missing array {key!r}.")
    self.used.add(key)
    return super().__getitem__(key)


def _norm(arrays: Mapping[str, np.ndarray], name: str, index: Optional[int] = None) -> dict:
  pick = (lambda a: a) if index is None else (lambda a: a[index])
  return {"scale": pick(arrays[f"{name}/scale"]) + np.float32(1.0),
          "bias": pick(arrays[f"{name}/bias"])}


def _encoder(arrays: Mapping[str, np.ndarray], which: str, depth: int) -> dict[str, Any]:
  stack = _STACK.format(which)
  blocks = {}
  for i in range(depth):
    a = lambda name, i=i: arrays[stack + name][i]
    attention = {proj: {"kernel": a(f"self_attention/{proj}/w"), "bias": a(f"self_attention/{proj}/b")}
                 for proj in ("query", "key", "value")}
    # post: w [D, H, hd] applied as "...NH,DNH->...D" -> DenseGeneral kernel [H, hd, D]
    attention["out"] = {"kernel": a("self_attention/post/w").transpose(1, 2, 0),
                        "bias": a("self_attention/post/b")}
    blocks[f"encoderblock_{i}"] = {
        "LayerNorm_0": _norm(arrays, stack + "layer_norm", i),
        "MultiHeadDotProductAttention_0": attention,
        "LayerNorm_1": _norm(arrays, stack + "ff_layer/layer_norm", i),
        "MlpBlock_0": {f"Dense_{j}": {"kernel": a(f"ff_layer/ffn_layer{j + 1}/linear/kernel"),
                                      "bias": a(f"ff_layer/ffn_layer{j + 1}/linear/bias")}
                       for j in (0, 1)}}
  blocks["encoder_norm"] = _norm(arrays, f"params/{which}_ln")
  return blocks


def convert(arrays: Mapping[str, np.ndarray], config: Mapping[str, Any], path: str = "npz"
            ) -> tuple[vivit.VideoTransformer, dict[str, Any]]:
  """FactorizedEncoder arrays and their config (`architecture` plus atten_logit_cap) ->
  (model, params); every array must be used."""
  patch, width = config["patch_size"], config["model_dim"]
  arrays = _Used(arrays)
  kernel = arrays["params/patch_projection/linear/kernel"]  # [(p q c), D]
  spatial = _encoder(arrays, "spatial", config["num_spatial_layers"])
  temporal = _encoder(arrays, "temporal", config["num_temporal_layers"])
  spatial["posembed_input"] = {"pos_embedding": arrays["params/spatial_pos_emb/emb_var"][None]}
  temporal["posembed_input"] = {"pos_embedding": arrays["params/temporal_pos_emb/emb_var"][None]}
  params = {"embedding": {"kernel": kernel.reshape(patch, patch, 3, width),
                          "bias": arrays["params/patch_projection/linear/bias"]},
            "SpatialTransformer": spatial, "TemporalTransformer": temporal}
  left = sorted(set(arrays) - arrays.used)
  if left:
    raise CheckpointError(f"{path}: {len(left)} array(s) outside VideoPrism's "
                          f"FactorizedEncoder layout would be dropped: {left[:8]}.")
  options = EncoderOptions(layernorm_epsilon=1e-6, gelu_approximate=False,
                           attention_logit_cap=float(config["atten_logit_cap"]) or None,
                           posemb_resize="bilinear_antialias")
  model = vivit.VideoTransformer(
      num_classes=None, patch_size=patch, hidden_size=width,
      num_layers=config["num_spatial_layers"], mlp_dim=config["mlp_dim"],
      num_heads=config["num_heads"], tubelet_size=1, variant=vivit.FACTORISED_TOKENS,
      embedding="frame", classifier="gap",
      temporal_encoder_layers=config["num_temporal_layers"], options=options)
  return model, params


def read(path: str) -> VideoRead:
  """A released VideoPrism encoder .npz -> VideoRead (family "videoprism")."""
  with np.load(os.fspath(path), allow_pickle=False) as npz:
    arrays = {k: npz[k] for k in npz.files}
  arch = architecture({k: v.shape for k, v in arrays.items()}, path)
  config = documented_config(arch, path)
  model, params = convert(arrays, config, path)
  frames, gh, gw = config["pos_emb_shape"]
  return VideoRead(model=model, params=params, family="videoprism", num_frames=frames,
                   input_size=(gh * config["patch_size"], gw * config["patch_size"]))
