"""OpenCLIP / OpenAI CLIP image towers (`visual.*` in `.safetensors`).

The file has open_clip's key names and shapes (open_clip/transformer.py
`VisionTransformer`: conv1 without bias, class_embedding [D], positional_embedding
[N+1, D], ln_pre, resblocks with fused in_proj, mlp.c_fc / c_proj, ln_post, proj [D, E]
used as x @ proj), plus text-tower tensors that are not read; the loaded model must give
the output of a numpy forward of open_clip's tower.
"""

import json

import _ckpt_helpers as H
import jax
import numpy as np
import pytest
import safetensors.numpy

from vit_jax import checkpoint
from vit_jax.checkpoint import openclip_io

WIDTH, DEPTH, HEADS, MLP, PATCH, EMBED = 64, 2, 2, 128, 4, 8  # head_width 32


def openclip_state_dict(grid, seed=0):
  fill = H.Filler(seed)
  v = "visual."
  sd = {v + "conv1.weight": fill(WIDTH, 3, PATCH, PATCH, scale=(3 * PATCH ** 2) ** -0.5),
        v + "class_embedding": fill(WIDTH, scale=0.5),
        v + "positional_embedding": fill(grid[0] * grid[1] + 1, WIDTH, scale=0.5),
        v + "proj": fill(WIDTH, EMBED, scale=WIDTH ** -0.5),
        # The text tower of a full model: not part of the image model.
        "token_embedding.weight": fill(10, 8), "ln_final.weight": fill(8),
        "text_projection": fill(8, EMBED), "logit_scale": np.zeros((), np.float32)}
  for name in ("ln_pre", "ln_post"):
    sd[f"{v}{name}.weight"], sd[f"{v}{name}.bias"] = fill(WIDTH, around=1.0), fill(WIDTH)
  for i in range(DEPTH):
    b = f"{v}transformer.resblocks.{i}."
    for name in ("ln_1", "ln_2"):
      sd[f"{b}{name}.weight"], sd[f"{b}{name}.bias"] = fill(WIDTH, around=1.0), fill(WIDTH)
    sd[b + "attn.in_proj_weight"] = fill(3 * WIDTH, WIDTH, scale=WIDTH ** -0.5)
    sd[b + "attn.in_proj_bias"] = fill(3 * WIDTH)
    sd[b + "attn.out_proj.weight"] = fill(WIDTH, WIDTH, scale=WIDTH ** -0.5)
    sd[b + "attn.out_proj.bias"] = fill(WIDTH)
    sd[b + "mlp.c_fc.weight"], sd[b + "mlp.c_fc.bias"] = fill(MLP, WIDTH, scale=WIDTH ** -0.5), fill(MLP)
    sd[b + "mlp.c_proj.weight"] = fill(WIDTH, MLP, scale=MLP ** -0.5)
    sd[b + "mlp.c_proj.bias"] = fill(WIDTH)
  return sd


def openclip_forward(sd, images, quick_gelu):
  """open_clip VisionTransformer.forward (eval), float64."""
  v = "visual."
  ln = lambda x, n: H.layer_norm(x, sd[n + ".weight"], sd[n + ".bias"], 1e-5)
  act = (lambda h: h / (1 + np.exp(-1.702 * h))) if quick_gelu else (lambda h: H.gelu(h, False))
  x = images.astype(np.float64).transpose(0, 3, 1, 2)
  b, _, hgt, wid = x.shape
  x = x.reshape(b, 3, hgt // PATCH, PATCH, wid // PATCH, PATCH)
  x = np.einsum("bciyjx,dcyx->bijd", x, sd[v + "conv1.weight"]).reshape(b, -1, WIDTH)
  x = np.concatenate([np.broadcast_to(sd[v + "class_embedding"], (b, 1, WIDTH)), x], 1)
  x = ln(x + sd[v + "positional_embedding"], v + "ln_pre")
  for i in range(DEPTH):
    p = f"{v}transformer.resblocks.{i}."
    y = ln(x, p + "ln_1")
    q, k, val = np.split(y @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"], 3, -1)
    split = lambda t: t.reshape(b, -1, HEADS, WIDTH // HEADS).transpose(0, 2, 1, 3)
    attn = H.softmax(split(q) @ split(k).transpose(0, 1, 3, 2) / np.sqrt(WIDTH // HEADS))
    out = (attn @ split(val)).transpose(0, 2, 1, 3).reshape(b, -1, WIDTH)
    x = x + out @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
    y = act(ln(x, p + "ln_2") @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"])
    x = x + y @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
  return ln(x[:, 0], v + "ln_post") @ sd[v + "proj"]


@pytest.mark.parametrize("quick_gelu", [True, False])
def test_openclip_tower_gives_the_reference_output(tmp_path, quick_gelu):
  sd = openclip_state_dict((4, 3))
  path = tmp_path / "open_clip_model.safetensors"
  safetensors.numpy.save_file(sd, str(path))
  (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": {
      "embed_dim": EMBED, "quick_gelu": quick_gelu,
      "vision_cfg": {"width": WIDTH, "head_width": WIDTH // HEADS, "layers": DEPTH}}}))
  params, spec = openclip_io.read_openclip(str(tmp_path))
  assert spec.options.mlp_activation == ("quick_gelu" if quick_gelu else "gelu")
  x = H.images()  # 16x12: a 4x3 grid
  out = np.asarray(jax.jit(spec.model().apply)({"params": params}, x))
  np.testing.assert_allclose(out, openclip_forward(sd, x, quick_gelu), atol=1e-4)
  loaded, fmt = checkpoint.load_with_format(str(path), num_heads=HEADS)
  assert fmt == "openclip" and sorted(loaded) == sorted(params)


def test_bare_openclip_file_asks_for_the_activation(tmp_path):
  path = tmp_path / "tower.safetensors"
  safetensors.numpy.save_file(openclip_state_dict((4, 3)), str(path))
  with pytest.raises(checkpoint.CheckpointError, match="pass quick_gelu=True"):
    openclip_io.read_openclip(str(path))
  _, spec = openclip_io.read_openclip(str(path), quick_gelu=True, num_heads=HEADS)
  assert spec.fields["num_heads"] == HEADS and spec.fields["num_classes"] == EMBED


@pytest.mark.parametrize("field,value", [("width", 128), ("layers", 12)])
def test_a_config_of_another_tower_names_the_field(tmp_path, field, value):
  safetensors.numpy.save_file(openclip_state_dict((4, 3)),
                              str(tmp_path / "open_clip_model.safetensors"))
  vision = dict({"width": WIDTH, "head_width": WIDTH // HEADS, "layers": DEPTH}, **{field: value})
  (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": {
      "quick_gelu": True, "vision_cfg": vision}}))
  with pytest.raises(checkpoint.CheckpointError,
                     match=rf"vision_cfg\.{field}={value}, the weights have"):
    checkpoint.load_pretrained(str(tmp_path))
