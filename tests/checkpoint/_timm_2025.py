"""Test helpers: timm state dicts of the 2025 families and their numpy timm forward.

`state_dict(case)` fills the real key names and shapes (data/timm_2025_keys.json, dumped
from timm's own tiny models) with random values. `timm_forward` is timm's eval forward
written out in numpy, float64, from timm's definitions (eva.py `Eva` with
`AttentionRope` and the RotaryEmbeddingCat / RotaryEmbeddingMixed tables,
vision_transformer.py `VisionTransformer`, naflexvit.py `NaFlexEmbeds`): `ARCH` states per case what only the
architecture says. It shares no code with the loader.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
from _ckpt_helpers import Filler, gelu, softmax
from _ckpt_helpers import _linear as _lin
from _timm_families import torch_resize

DATA = json.loads((pathlib.Path(__file__).parent / "data" / "timm_2025_keys.json").read_text())
CASES = sorted(k for k in DATA if not k.startswith("_"))
WIDTH, PATCH, CLASSES = 32, 4, 5
GRID = (4, 3)  # model_args img_size [16, 12]

# What the keys cannot show, from timm's model definitions:
#   eps: the norm epsilon; rms: RmsNorm; rope: ("cat", grid offset, indexing, reference
#   grid, temperature) or ("mixed", indexing); pool: "map" / "avg" / "token"; map_heads:
#   attn_pool heads; map_all: attn_pool reads the prefix tokens too (Eva, not ViT);
#   no_embed_class: the position embedding has no prefix rows.
_PE = dict(eps=1e-5, rope=("cat", 1.0, "xy", 32, 10000.0), pool="avg")
ARCH = {
    "pe_core": dict(_PE, rope=("cat", 1.0, "xy", 14, 10000.0), pool="map", map_heads=4,
                    map_all=True),
    "pe_lang": _PE,
    "pe_spatial": _PE,
    "aimv2": dict(eps=1e-5, rms=True, pool="avg"),
    "so150m_map": dict(pool="map"),
    "so150m2": dict(pool="avg"),
    "rope_axial": dict(rope=("cat", 0.0, "xy", None, 100.0), pool="token"),
    "rope_axial_ape": dict(rope=("cat", 0.0, "xy", None, 100.0), pool="token",
                           no_embed_class=True),
    "rope_mixed": dict(rope=("mixed", "xy"), pool="token"),
    "rope_mixed_ape": dict(rope=("mixed", "xy"), pool="token", no_embed_class=True),
    # NaFlexViT (naflexvit.py NaFlexEmbeds): the grid is the patches' only.
    "naflex_so150m2_gap": dict(pool="avg", no_embed_class=True),
    "naflex_so150m2_map": dict(pool="map", no_embed_class=True),
}


def state_dict(case: str, seed: int = 0) -> dict[str, np.ndarray]:
  """Random values under the real key names and shapes of `case`."""
  fill = Filler(seed)
  sd = {}
  for key, shape in DATA[case]["keys"].items():
    name = key.removeprefix("embeds.")  # NaFlexViT's tokens and grid
    if key.endswith("gamma_1") or key.endswith("gamma_2") or key.endswith(".gamma") or (
        len(shape) == 1 and "norm" in key and key.endswith("weight")):
      sd[key] = fill(*shape, scale=0.2, around=1.0)
    elif key == "rope.freqs":
      sd[key] = fill(*shape, scale=0.7)
    elif len(shape) == 1 or name in ("cls_token", "reg_token", "pos_embed", "attn_pool.latent"):
      sd[key] = fill(*shape, scale=0.5 if len(shape) > 1 else 0.1)
    elif len(shape) == 4:  # conv OIHW
      sd[key] = fill(*shape, scale=(np.prod(shape[1:])) ** -0.5)
    else:  # Linear (out, in)
      sd[key] = fill(*shape, scale=shape[1] ** -0.5)
  return sd


def hub_config(case: str) -> dict:
  """config.json as timm's save_for_hf writes it for the tiny model."""
  args = DATA[case]["model_args"]
  return {"architecture": DATA[case]["architecture"], "num_classes": CLASSES,
          "num_features": WIDTH, "model_args": dict(args, num_classes=CLASSES),
          "pretrained_cfg": dict(DATA[case]["pretrained_cfg"], input_size=[3, 16, 12])}


def _norm(x, sd, name, eps, rms):
  if rms:  # timm RmsNorm: x / sqrt(mean(x^2) + eps) * weight
    return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * sd[f"{name}.weight"]
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * sd[f"{name}.weight"] + sd[f"{name}.bias"]


def _grid(grid, offset, indexing, ref):
  """timm _build_grid('index'): [gh*gw, 2] coordinates, channels (x, y) for 'xy'."""
  shape = list(grid)[::-1] if indexing == "xy" else list(grid)
  t = [np.arange(s, dtype=np.float64) + offset for s in shape]
  if ref is not None:
    t = [x / s * ref for x, s in zip(t, shape)]
  return np.stack(np.meshgrid(*t, indexing=indexing), -1).reshape(-1, 2)


def rope_tables(rope, grid, head_dim, freqs=None, depth=2, heads=2):
  """Per block: (sin, cos) [N, hd] (cat, shared) or [H, N, hd] (mixed), interleaved."""
  if rope[0] == "cat":
    _, offset, indexing, ref, temperature = rope
    nb = head_dim // 4
    bands = 1.0 / temperature ** (np.arange(nb) / nb)
    pos = (_grid(grid, offset, indexing, ref)[..., None] * bands).reshape(-1, 2 * nb)
    tables = [(np.repeat(np.sin(pos), 2, -1), np.repeat(np.cos(pos), 2, -1))] * depth
  else:
    coords = _grid(grid, 0.0, rope[1], None)
    t_x, t_y = coords[:, 0], coords[:, 1]
    tables = []
    for i in range(depth):  # freqs [2, depth, H, hd/2]
      angles = t_x[None, :, None] * freqs[0, i][:, None] + t_y[None, :, None] * freqs[1, i][:, None]
      tables.append((np.repeat(np.sin(angles), 2, -1), np.repeat(np.cos(angles), 2, -1)))
  return tables


def _rot(x):  # timm rot: [-x1, x0, -x3, x2, ...]
  return np.stack([-x[..., 1::2], x[..., ::2]], -1).reshape(x.shape)


def _attention(y, sd, p, heads, table, prefix):
  b, n, d = y.shape
  qkv = _lin(y, sd, p + "attn.qkv").reshape(b, n, 3, heads, d // heads).transpose(2, 0, 3, 1, 4)
  q, k, v = qkv  # [B, H, N, hd]
  if table is not None:
    sin, cos = table
    rope = lambda t: np.concatenate(
        [t[:, :, :prefix], t[:, :, prefix:] * cos + _rot(t[:, :, prefix:]) * sin], axis=2)
    q, k = rope(q), rope(k)
  out = softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // heads)) @ v
  return _lin(out.transpose(0, 2, 1, 3).reshape(b, n, d), sd, p + "attn.proj")


def _mlp(y, sd, p):
  if p + "mlp.fc1_g.weight" in sd:  # timm SwiGLU
    g = _lin(y, sd, p + "mlp.fc1_g")
    h = g / (1 + np.exp(-g)) * _lin(y, sd, p + "mlp.fc1_x")
  else:
    h = gelu(_lin(y, sd, p + "mlp.fc1"), approximate=False)
  return _lin(h, sd, p + "mlp.fc2")


def _attn_pool(x, sd, heads, eps):
  b, n, d = x.shape
  split = lambda t: t.reshape(b, t.shape[1], heads, -1).transpose(0, 2, 1, 3)
  q = split(_lin(np.broadcast_to(sd["attn_pool.latent"], (b, 1, d)), sd, "attn_pool.q"))
  k, v = _lin(x, sd, "attn_pool.kv").reshape(b, n, 2, heads, d // heads).transpose(2, 0, 3, 1, 4)
  out = softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // heads)) @ v
  y = _lin(out.transpose(0, 2, 1, 3).reshape(b, 1, d), sd, "attn_pool.proj")
  h = gelu(_lin(_norm(y, sd, "attn_pool.norm", eps, False), sd, "attn_pool.mlp.fc1"), False)
  return (y + _lin(h, sd, "attn_pool.mlp.fc2"))[:, 0]


def _naflex_as_vit(sd, size):
  """NaFlexEmbeds' tensors for an image of `size` pixels: the Linear patch embedding, and
  the grid [1, GH, GW, D] F.interpolate'd (bicubic, antialias) to the image's patch grid,
  flattened; the register as a prefix token (added after the position embedding)."""
  grid = (size[0] // PATCH, size[1] // PATCH)
  table = sd["embeds.pos_embed"][0]
  if table.shape[:2] != grid:
    table = torch_resize(table, grid, "bicubic", True)
  out = {k: v for k, v in sd.items() if not k.startswith("embeds.")}
  out.update({"patch_embed.linear": sd["embeds.proj.weight"],
              "patch_embed.proj.bias": sd["embeds.proj.bias"],
              "reg_token": sd["embeds.reg_token"],
              "pos_embed": table.reshape(1, -1, table.shape[-1])})
  return out


def timm_forward(case, sd, images, heads=2, depth=2):
  """timm's eval forward of `case` on NHWC images -> logits [B, CLASSES]."""
  arch = ARCH[case]
  eps, rms = arch.get("eps", 1e-6), arch.get("rms", False)
  if "embeds.proj.weight" in sd:
    sd = _naflex_as_vit(sd, images.shape[1:3])
  x = images.astype(np.float64).transpose(0, 3, 1, 2)  # NCHW
  b, _, h, w = x.shape
  grid = (h // PATCH, w // PATCH)
  patches = x.reshape(b, 3, grid[0], PATCH, grid[1], PATCH)
  if "patch_embed.linear" in sd:  # NaFlexViT: each patch flattened (y, x, channel)
    flat = patches.transpose(0, 2, 4, 3, 5, 1).reshape(b, grid[0] * grid[1], -1)
    tokens = flat @ sd["patch_embed.linear"].T
  else:
    tokens = np.einsum("bciyjx,dcyx->bijd", patches, sd["patch_embed.proj.weight"])
  tokens = tokens.reshape(b, -1, WIDTH)
  if "patch_embed.proj.bias" in sd:
    tokens = tokens + sd["patch_embed.proj.bias"]
  if "patch_embed.norm.weight" in sd:
    tokens = _norm(tokens, sd, "patch_embed.norm", eps, rms)
  prefix = [np.broadcast_to(sd[k], (b,) + sd[k].shape[1:]) for k in ("cls_token", "reg_token")
            if k in sd]
  num_prefix = sum(t.shape[1] for t in prefix)
  if arch.get("no_embed_class"):
    tokens = np.concatenate(prefix + [tokens + sd.get("pos_embed", 0.0)], 1)
  else:
    tokens = np.concatenate(prefix + [tokens], 1) + sd.get("pos_embed", 0.0)
  if "norm_pre.weight" in sd:
    tokens = _norm(tokens, sd, "norm_pre", eps, rms)
  tables = ([None] * depth if "rope" not in arch else
            rope_tables(arch["rope"], grid, WIDTH // heads, sd.get("rope.freqs"), depth, heads))
  for i in range(depth):
    p = f"blocks.{i}."
    gamma = [sd.get(p + "gamma_1", sd.get(p + "ls1.gamma", 1.0)),
             sd.get(p + "gamma_2", sd.get(p + "ls2.gamma", 1.0))]
    y = _norm(tokens, sd, p + "norm1", eps, rms)
    tokens = tokens + gamma[0] * _attention(y, sd, p, heads, tables[i], num_prefix)
    tokens = tokens + gamma[1] * _mlp(_norm(tokens, sd, p + "norm2", eps, rms), sd, p)
  if "norm.weight" in sd:
    tokens = _norm(tokens, sd, "norm", eps, rms)
  if arch["pool"] == "map":
    pooled = _attn_pool(tokens if arch.get("map_all") else tokens[:, num_prefix:], sd,
                        arch.get("map_heads", heads), eps)
  elif arch["pool"] == "avg":
    pooled = tokens[:, num_prefix:].mean(1)
  else:
    pooled = tokens[:, 0]
  if "fc_norm.weight" in sd:
    pooled = _norm(pooled, sd, "fc_norm", eps, rms)
  return _lin(pooled, sd, "head")
