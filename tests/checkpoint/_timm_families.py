"""Test helpers: timm state dicts of the later ViT families and a numpy timm forward.

`family_state_dict` writes exactly the key names and shapes timm's `state_dict()` has
for each family (timm/models/vision_transformer.py, deit.py, eva.py), at a tiny width,
with random values. `timm_family_forward` is timm's forward pass written out in numpy
from those definitions (torch layouts, float64): fused or separate qkv, q/v biases,
LayerScale, registers, SwiGLU (packed and separate), RoPE built as timm builds it
(sin/cos tables, `rot` / `rope_rotate_half`), fc_norm, MAP, distillation head. It shares
no code with the loader, so a misplaced value changes the output.
"""

from __future__ import annotations

import numpy as np
from _ckpt_helpers import Filler, gelu, softmax
from _ckpt_helpers import _layer_norm as _ln
from _ckpt_helpers import _linear as _lin

WIDTH, DEPTH, HEADS, MLP, PATCH, CLASSES = 32, 2, 2, 64, 4, 5

# family -> (timm architecture, what the state dict has, what only the architecture says)
FAMILIES = {
    "deit": ("deit_tiny_patch16_224", dict(cls=True), dict()),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", dict(cls=True, dist=True), dict()),
    "deit3": ("deit3_small_patch16_224", dict(cls=True, ls="vit"), dict(no_embed_class=True)),
    "dinov2": ("vit_small_patch14_dinov2", dict(cls=True, ls="vit"), dict()),
    "dinov2_reg4": ("vit_small_patch14_reg4_dinov2", dict(cls=True, ls="vit", reg=4),
                    dict(no_embed_class=True)),
    "dinov2_g": ("vit_giant_patch14_dinov2", dict(cls=True, ls="vit", mlp="packed"), dict()),
    "dinov3": ("vit_small_patch16_dinov3",
               dict(cls=True, ls="eva", reg=4, posemb=False, qkv="none"),
               dict(rope="dinov3", eps=1e-5, pool="avg")),
    # DINOv3 S+ with q/v biases: SwiGLU as separate fc1_g / fc1_x (timm swiglu_align_to),
    # the key bias a zero buffer (not saved).
    "dinov3_splus_qkvb": ("vit_small_plus_patch16_dinov3_qkvb",
                          dict(cls=True, ls="eva", reg=4, posemb=False, qkv="qv_fused",
                               mlp="separate"),
                          dict(rope="dinov3", eps=1e-5, pool="avg")),
    "clip": ("vit_base_patch16_clip_quickgelu_224",
             dict(cls=True, norm_pre=True, patch_bias=False),
             dict(act="quick_gelu", eps=1e-5)),
    "siglip": ("vit_base_patch16_siglip_224", dict(map=True), dict()),
    # A name added for SigLIP 2: timm's definition states act_layer="gelu_tanh" (the MAP
    # head's MLP too).
    "siglip2_tanh": ("vit_so400m_patch16_siglip_256", dict(map=True), dict(act="gelu_tanh")),
    "ijepa_g": ("vit_giant_patch16_gap_224", dict(), dict(pool="avg")),  # no cls token
    "eva02_ti": ("eva02_tiny_patch14_224",
                 dict(cls=True, qkv="qv_fused", mlp="packed", fc_norm=True),
                 dict(rope="eva02", pool="avg")),
    "eva02_b": ("eva02_base_patch14_224",
                dict(cls=True, qkv="qv_separate", mlp="separate_norm", fc_norm=True),
                dict(rope="eva02", pool="avg")),
}


def family_state_dict(family, grid, seed=0, classes=CLASSES):
  """The timm state dict of `family` (FAMILIES) for a (gh, gw) patch grid."""
  keys = FAMILIES[family][1]
  only_arch = FAMILIES[family][2]
  fill = Filler(seed)
  linear = lambda out, inp: fill(out, inp, scale=inp ** -0.5)
  norm = lambda name, n=WIDTH: {f"{name}.weight": fill(n, around=1.0), f"{name}.bias": fill(n)}
  sd = {"patch_embed.proj.weight": fill(WIDTH, 3, PATCH, PATCH, scale=(PATCH * PATCH * 3) ** -0.5)}
  if keys.get("patch_bias", True):
    sd["patch_embed.proj.bias"] = fill(WIDTH)
  prefix = 0
  for flag, name, count in (("cls", "cls_token", 1), ("dist", "dist_token", 1),
                            ("reg", "reg_token", keys.get("reg", 0))):
    if keys.get(flag):
      sd[name] = fill(1, count, WIDTH, scale=0.5)
      prefix += count
  if keys.get("posemb", True):
    rows = grid[0] * grid[1] + (0 if only_arch.get("no_embed_class") else prefix)
    sd["pos_embed"] = fill(1, rows, WIDTH, scale=0.5)
  if keys.get("norm_pre"):
    sd.update(norm("norm_pre"))
  for i in range(DEPTH):
    p = f"blocks.{i}."
    sd.update(norm(p + "norm1"))
    sd.update(norm(p + "norm2"))
    qkv = keys.get("qkv", "fused")
    if qkv == "qv_separate":
      for short in "qkv":
        sd[f"{p}attn.{short}_proj.weight"] = linear(WIDTH, WIDTH)
      sd[p + "attn.q_proj.bias"], sd[p + "attn.v_proj.bias"] = fill(WIDTH), fill(WIDTH)
    else:
      sd[p + "attn.qkv.weight"] = linear(3 * WIDTH, WIDTH)
      if qkv == "fused":
        sd[p + "attn.qkv.bias"] = fill(3 * WIDTH)
      elif qkv == "qv_fused":
        sd[p + "attn.q_bias"], sd[p + "attn.v_bias"] = fill(WIDTH), fill(WIDTH)
    sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"] = linear(WIDTH, WIDTH), fill(WIDTH)
    mlp = keys.get("mlp", "gelu")
    if mlp in ("separate_norm", "separate"):
      for name in ("fc1_g", "fc1_x"):
        sd[f"{p}mlp.{name}.weight"], sd[f"{p}mlp.{name}.bias"] = linear(MLP, WIDTH), fill(MLP)
      if mlp == "separate_norm":
        sd.update(norm(p + "mlp.norm", MLP))
    else:
      rows = 2 * MLP if mlp == "packed" else MLP
      sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"] = linear(rows, WIDTH), fill(rows)
    sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"] = linear(WIDTH, MLP), fill(WIDTH)
    if keys.get("ls") == "vit":
      sd[p + "ls1.gamma"], sd[p + "ls2.gamma"] = fill(WIDTH, around=1.0), fill(WIDTH, around=1.0)
    elif keys.get("ls") == "eva":
      sd[p + "gamma_1"], sd[p + "gamma_2"] = fill(WIDTH, around=1.0), fill(WIDTH, around=1.0)
  sd.update(norm("fc_norm" if keys.get("fc_norm") else "norm"))
  if keys.get("map"):
    sd.update({"attn_pool.latent": fill(1, 1, WIDTH, scale=0.5),
               "attn_pool.q.weight": linear(WIDTH, WIDTH), "attn_pool.q.bias": fill(WIDTH),
               "attn_pool.kv.weight": linear(2 * WIDTH, WIDTH),
               "attn_pool.kv.bias": fill(2 * WIDTH),
               "attn_pool.proj.weight": linear(WIDTH, WIDTH), "attn_pool.proj.bias": fill(WIDTH),
               "attn_pool.mlp.fc1.weight": linear(MLP, WIDTH), "attn_pool.mlp.fc1.bias": fill(MLP),
               "attn_pool.mlp.fc2.weight": linear(WIDTH, MLP),
               "attn_pool.mlp.fc2.bias": fill(WIDTH)})
    sd.update(norm("attn_pool.norm"))
  if classes:
    sd["head.weight"], sd["head.bias"] = linear(classes, WIDTH), fill(classes)
    if keys.get("dist"):
      sd["head_dist.weight"], sd["head_dist.bias"] = linear(classes, WIDTH), fill(classes)
  return sd


# ------------------------------------------------------------------ numpy timm forward

def _rope_tables(kind, grid, head_dim):
  """timm's (sin, cos) [N, hd]: RotaryEmbeddingCat (EVA-02, in_pixels=False,
  ref_feat_shape=(16, 16), interleaved) or RotaryEmbeddingDinoV3 (temperature 100,
  half layout)."""
  nb = head_dim // 4
  if kind == "eva02":
    bands = 1.0 / 10000.0 ** (np.arange(nb) / nb)  # freq_bands(step=1)
    axes = [np.arange(s) / s * 16 for s in grid]  # t / feat_shape * ref_feat_shape
  else:
    bands = 1.0 / (100.0 ** (2.0 * np.arange(nb) / (head_dim // 2)) / (2 * np.pi))
    axes = [2.0 * ((np.arange(s) + 0.5) / s) - 1.0 for s in grid]  # 'centered' grid
  mesh = np.stack(np.meshgrid(*axes, indexing="ij"), -1)  # [gh, gw, 2]
  pos = (mesh[..., None] * bands).reshape(-1, 2 * nb)  # [N, (y bands, x bands)]
  if kind == "eva02":
    layout = lambda a: np.repeat(a, 2, axis=-1)  # [f0, f0, f1, f1, ...]
  else:
    layout = lambda a: np.concatenate([a, a], axis=-1)  # [f0, f1, ..., f0, f1, ...]
  return layout(np.sin(pos)), layout(np.cos(pos))


def _apply_rope(x, sin, cos, kind):
  if kind == "eva02":  # rot: [-x1, x0, -x3, x2, ...]
    rotated = np.stack([-x[..., 1::2], x[..., ::2]], -1).reshape(x.shape)
  else:  # rope_rotate_half: [-x_hi, x_lo]
    lo, hi = np.split(x, 2, axis=-1)
    rotated = np.concatenate([-hi, lo], axis=-1)
  return x * cos + rotated * sin


def _attention(y, sd, p, heads, rope, prefix):
  b, n, d = y.shape
  if p + "attn.qkv.weight" in sd:
    w = sd[p + "attn.qkv.weight"]
    if p + "attn.qkv.bias" in sd:
      bias = sd[p + "attn.qkv.bias"]
    elif p + "attn.q_bias" in sd:
      bias = np.concatenate([sd[p + "attn.q_bias"], np.zeros(d), sd[p + "attn.v_bias"]])
    else:
      bias = np.zeros(3 * d)
    qkv = (y @ w.T + bias).reshape(b, n, 3, heads, d // heads).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv
  else:
    split = lambda t: t.reshape(b, n, heads, -1).transpose(0, 2, 1, 3)
    q, k, v = (split(_lin(y, sd, f"{p}attn.{s}_proj")) for s in "qkv")
  if rope is not None:
    kind, sin, cos = rope
    q = np.concatenate([q[:, :, :prefix], _apply_rope(q[:, :, prefix:], sin, cos, kind)], 2)
    k = np.concatenate([k[:, :, :prefix], _apply_rope(k[:, :, prefix:], sin, cos, kind)], 2)
  attn = softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1]))
  out = (attn @ v).transpose(0, 2, 1, 3).reshape(b, n, d)
  return _lin(out, sd, p + "attn.proj")


def _mlp(y, sd, p, act, eps):
  if p + "mlp.fc1_g.weight" in sd:
    g, x = _lin(y, sd, p + "mlp.fc1_g"), _lin(y, sd, p + "mlp.fc1_x")
    h = g / (1 + np.exp(-g)) * x
  else:
    h = _lin(y, sd, p + "mlp.fc1")
    if h.shape[-1] == 2 * sd[p + "mlp.fc2.weight"].shape[1]:  # GluMlp(gate_last=False)
      g, x = np.split(h, 2, axis=-1)
      h = g / (1 + np.exp(-g)) * x
    elif act == "quick_gelu":
      h = h / (1 + np.exp(-1.702 * h))
    elif act == "gelu_tanh":
      h = gelu(h, approximate=True)
    else:
      h = gelu(h, approximate=False)
  if p + "mlp.norm.weight" in sd:
    h = _ln(h, sd, p + "mlp.norm", eps)
  return _lin(h, sd, p + "mlp.fc2")


def _cubic(x, a):
  x = np.abs(x)
  return np.where(x <= 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                  np.where(x < 2, a * x ** 3 - 5 * a * x * x + 8 * a * x - 4 * a, 0.0))


def _torch_axis(n_in, n_out, mode, antialias):
  """[n_out, n_in] weights of torch's F.interpolate(mode, align_corners=False, antialias)
  along one axis, from aten's upsample kernels: `_upsample_*_aa` (separable filter
  stretched by the scale when shrinking, taps clipped to the input and renormalised;
  cubic a = -0.5) and upsample_bicubic2d (a = -0.75, border indices clamped)."""
  scale = n_in / n_out
  w = np.zeros((n_out, n_in))
  for i in range(n_out):
    if antialias:
      stretch = max(scale, 1.0)
      support = (1.0 if mode == "bilinear" else 2.0) * stretch
      center = scale * (i + 0.5)
      taps = np.arange(max(int(center - support + 0.5), 0),
                       min(int(center + support + 0.5), n_in))
      x = (taps + 0.5 - center) / stretch
      f = np.maximum(1 - np.abs(x), 0) if mode == "bilinear" else _cubic(x, -0.5)
      w[i, taps] = f / f.sum()
    elif mode == "bicubic":
      src = (i + 0.5) * scale - 0.5
      i0 = int(np.floor(src))
      for k in range(-1, 3):
        w[i, min(max(i0 + k, 0), n_in - 1)] += _cubic(src - (i0 + k), -0.75)
    else:
      src = max((i + 0.5) * scale - 0.5, 0.0)
      i0 = int(np.floor(src))
      w[i, i0] += 1 - (src - i0)
      w[i, min(i0 + 1, n_in - 1)] += src - i0
  return w


def torch_resize(grid, size, mode="bicubic", antialias=True):
  """A position embedding grid [gh, gw, D] resized to `size` as F.interpolate does it."""
  rows, cols = (_torch_axis(n, m, mode, antialias) for n, m in zip(grid.shape[:2], size))
  return np.einsum("ph,qw,hwd->pqd", rows, cols, grid)


def _resampled_posemb(posemb, prefix_rows, grid, resize):
  """timm's resample_abs_pos_embed(pos_embed, grid, num_prefix_tokens=prefix_rows,
  interpolation, antialias) of a square stored grid: [1, P + N, D] -> [1, P + gh*gw, D]."""
  stored = posemb[0, prefix_rows:]
  if len(stored) == grid[0] * grid[1]:  # the grid it was made for
    return posemb
  side = int(round(np.sqrt(len(stored))))
  resized = torch_resize(stored.reshape(side, side, -1), grid, *resize)
  return np.concatenate([posemb[:, :prefix_rows], resized.reshape(1, -1, posemb.shape[-1])], 1)


def timm_family_forward(family, sd, images, heads=HEADS, depth=DEPTH,
                        resize=("bicubic", True)):
  """timm's eval forward of `family` on NHWC images; logits (or pooled features).

  Images of another grid than the stored position embedding's resize it as timm's
  `dynamic_img_size` does (`resize`: F.interpolate's mode and antialias)."""
  arch = FAMILIES[family][2]
  eps, act = arch.get("eps", 1e-6), arch.get("act", "gelu")
  x = images.astype(np.float64).transpose(0, 3, 1, 2)  # NCHW, as timm takes it
  b, _, h, w = x.shape
  grid = (h // PATCH, w // PATCH)
  patches = x.reshape(b, 3, grid[0], PATCH, grid[1], PATCH)
  tokens = np.einsum("bciyjx,dcyx->bijd", patches, sd["patch_embed.proj.weight"])
  tokens = tokens.reshape(b, -1, WIDTH)  # flatten(2).transpose(1, 2)
  if "patch_embed.proj.bias" in sd:
    tokens = tokens + sd["patch_embed.proj.bias"]
  prefix = [np.broadcast_to(sd[k], (b,) + sd[k].shape[1:])
            for k in ("cls_token", "dist_token", "reg_token") if k in sd]
  num_prefix = sum(t.shape[1] for t in prefix)
  if "pos_embed" in sd:
    sd = dict(sd, pos_embed=_resampled_posemb(
        sd["pos_embed"], 0 if arch.get("no_embed_class") else num_prefix, grid, resize))
  if "pos_embed" in sd and arch.get("no_embed_class"):
    tokens = np.concatenate(prefix + [tokens + sd["pos_embed"]], 1)
  else:
    tokens = np.concatenate(prefix + [tokens], 1)
    if "pos_embed" in sd:
      tokens = tokens + sd["pos_embed"]
  if "norm_pre.weight" in sd:
    tokens = _ln(tokens, sd, "norm_pre", eps)
  rope = None
  if arch.get("rope"):
    rope = (arch["rope"],) + _rope_tables(arch["rope"], grid, WIDTH // heads)
  for i in range(depth):
    p = f"blocks.{i}."
    gamma = [sd.get(p + "ls1.gamma", sd.get(p + "gamma_1", 1.0)),
             sd.get(p + "ls2.gamma", sd.get(p + "gamma_2", 1.0))]
    tokens = tokens + gamma[0] * _attention(_ln(tokens, sd, p + "norm1", eps), sd, p, heads,
                                            rope, num_prefix)
    tokens = tokens + gamma[1] * _mlp(_ln(tokens, sd, p + "norm2", eps), sd, p, act, eps)
  if "norm.weight" in sd:
    tokens = _ln(tokens, sd, "norm", eps)
  if "dist_token" in sd:  # DeiT distilled: mean of both heads (eval)
    if "head.weight" not in sd:
      return (tokens[:, 0] + tokens[:, 1]) / 2
    return (_lin(tokens[:, 0], sd, "head") + _lin(tokens[:, 1], sd, "head_dist")) / 2
  patch_tokens = tokens[:, num_prefix:]
  if "attn_pool.latent" in sd:
    d = WIDTH
    split = lambda t: t.reshape(b, t.shape[1], heads, -1).transpose(0, 2, 1, 3)
    q = split(np.broadcast_to(sd["attn_pool.latent"], (b, 1, d)) @ sd["attn_pool.q.weight"].T
              + sd["attn_pool.q.bias"])
    kv = _lin(patch_tokens, sd, "attn_pool.kv").reshape(b, -1, 2, heads, d // heads)
    k, v = kv.transpose(2, 0, 3, 1, 4)
    out = (softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // heads)) @ v)
    y = _lin(out.transpose(0, 2, 1, 3).reshape(b, 1, d), sd, "attn_pool.proj")
    y = y + _lin(gelu(_lin(_ln(y, sd, "attn_pool.norm", eps), sd, "attn_pool.mlp.fc1"),
                      act == "gelu_tanh"), sd, "attn_pool.mlp.fc2")
    pooled = y[:, 0]
  elif arch.get("pool") == "avg" or "cls_token" not in sd:
    pooled = patch_tokens.mean(1)
  else:
    pooled = tokens[:, 0]
  if "fc_norm.weight" in sd:
    pooled = _ln(pooled, sd, "fc_norm", eps)
  return _lin(pooled, sd, "head") if "head.weight" in sd else pooled
