"""timm checkpoints of the 2025 families: Perception Encoder, AIMv2, So150m, RoPE-ViT.

Each case is a timm Hub folder (model.safetensors + config.json as timm's save_for_hf
writes it) with the real key names and shapes (data/timm_2025_keys.json) and random
values, read through `load_pretrained`. Its logits must be those of an independent numpy
timm forward (_timm_2025.py), writing the params back must give the same file, and
attention maps and features must come out of the same model.
"""

import json

import _timm_2025 as T
import jax
import numpy as np
import pytest
import safetensors.numpy
from _ckpt_helpers import softmax, write_hub_folder

from vit_jax import checkpoint
from vit_jax.checkpoint import pretrained, safetensors_io, timm_model, tree

ATOL = 1e-4


def hub_folder(tmp_path, case, sd=None, config=None):
  sd = T.state_dict(case) if sd is None else sd
  return write_hub_folder(tmp_path / case, sd, config or T.hub_config(case)), sd


def images(seed=1):
  return np.random.default_rng(seed).uniform(
      -1, 1, (2, T.GRID[0] * T.PATCH, T.GRID[1] * T.PATCH, 3)).astype(np.float32)


FAMILY = {"pe_core": "pe", "pe_lang": "pe", "pe_spatial": "pe", "aimv2": "aimv2",
          "so150m_map": "so150m", "so150m2": "so150m", "rope_axial": "rope_vit",
          "rope_axial_ape": "rope_vit", "rope_mixed": "rope_vit", "rope_mixed_ape": "rope_vit",
          "naflex_so150m2_gap": "so150m", "naflex_so150m2_map": "so150m"}


@pytest.mark.parametrize("case", T.CASES)
def test_loads_matches_timm_and_exports_bit_exact(tmp_path, case):
  folder, sd = hub_folder(tmp_path, case)
  loaded = pretrained.load_pretrained(str(folder))
  assert loaded.format == "timm"
  # Preprocessing from the config's pretrained_cfg (timm's published values).
  cfg = T.DATA[case]["pretrained_cfg"]
  assert (loaded.preprocessing.mean, loaded.preprocessing.std, loaded.preprocessing.crop_pct) == (
      tuple(cfg["mean"]), tuple(cfg["std"]), cfg["crop_pct"])
  x = images()
  model = loaded.model.clone(sow_attention_weights=True)
  logits, state = jax.jit(lambda p, x: model.apply(
      {"params": p}, x, mutable=["intermediates"]))(loaded.params, x)
  np.testing.assert_allclose(np.asarray(logits), T.timm_forward(case, sd, x), atol=ATOL)
  # Attention maps of both blocks, [B, H, L, L] over the prefix and patch tokens.
  o = model.options
  tokens = T.GRID[0] * T.GRID[1] + o.num_prefix_tokens(model.classifier)
  maps = [m for m in jax.tree.leaves(state["intermediates"]) if m.shape[-2:] == (tokens,) * 2]
  assert len(maps) == 2 and all(m.shape == (2, 2, tokens, tokens) for m in maps)
  np.testing.assert_allclose(np.asarray(maps[0]).sum(-1), 1.0, atol=1e-5)

  params, found = timm_model.read_timm(str(folder))
  assert found.family == FAMILY[case] and found.architecture == T.DATA[case]["architecture"]
  # checkpoint.load (params only) reads the same tree: heads and final norm from the config.
  flat, loaded_flat = (tree.flatten(p) for p in (params, checkpoint.load(str(folder))))
  assert sorted(flat) == sorted(loaded_flat)
  assert all(np.array_equal(flat[k], loaded_flat[k]) for k in flat)
  back = safetensors_io.linen_to_timm(params, found.key_names)
  assert sorted(back) == sorted(sd)
  for key, value in sd.items():
    assert back[key].dtype == value.dtype and np.array_equal(back[key], value), key


def test_readers_refuse_what_the_architecture_contradicts(tmp_path):
  # RMSNorm weights (no norm biases) under a LayerNorm architecture.
  config = dict(T.hub_config("aimv2"), architecture="vit_so150m2_patch16_reg1_gap_256")
  folder, _ = hub_folder(tmp_path, "aimv2", config=config)
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"block norms have no bias, but the architecture's norm is "
                           r"'layernorm'.*aimv2_large_patch14_224"):
    pretrained.load_pretrained(str(folder))
  # A RoPE-Mixed architecture without the learned frequencies.
  config = dict(T.hub_config("rope_axial"), architecture="vit_small_patch16_rope_mixed_224")
  (tmp_path / "b").mkdir()
  folder, _ = hub_folder(tmp_path / "b", "rope_axial", config=config)
  with pytest.raises(checkpoint.CheckpointError, match=r"no `rope.freqs` for a RoPE-Mixed"):
    pretrained.load_pretrained(str(folder))
  # A bare PE file does not say its RoPE: asked for, then read with the architecture.
  path = tmp_path / "pe.safetensors"
  sd = T.state_dict("pe_lang")
  sd["pos_embed"] = sd["pos_embed"][:, :1].repeat(17, axis=1) * np.linspace(
      -1, 1, 17, dtype=np.float32)[:, None]  # a square 4 x 4 grid: the input size shows
  safetensors.numpy.save_file(sd, str(path))
  with pytest.raises(checkpoint.CheckpointError, match=r"do not determine the model.*"
                     r"architecture="):
    pretrained.load_pretrained(str(path))
  found = pretrained.load_pretrained(str(path), architecture="vit_pe_lang_large_patch14_448")
  x = np.random.default_rng(2).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  np.testing.assert_allclose(found.model.apply({"params": found.params}, x),
                             T.timm_forward("pe_lang", sd, x), atol=ATOL)


@pytest.mark.parametrize("case", ["naflex_so150m2_gap", "naflex_so150m2_map"])
def test_naflexvit_so150m2_at_native_sizes_alone_and_packed(tmp_path, case):
  # Two non-square grids (the 16 x 16 table resized bicubic with antialias to each) and
  # the square one, alone and packed three to a sequence, against timm's forward.
  from vit_jax.models.packed import pack_images  # noqa: PLC0415

  folder, sd = hub_folder(tmp_path, case)
  loaded = pretrained.load_pretrained(str(folder))
  o = loaded.model.options
  assert (o.posemb_resize, o.no_embed_class, o.num_registers, o.map_prefix_tokens) == (
      "bicubic_antialias", True, 1, False)
  rng = np.random.default_rng(4)
  imgs = [rng.uniform(-1, 1, (gh * T.PATCH, gw * T.PATCH, 3)).astype(np.float32)
          for gh, gw in [(2, 5), (5, 3), (16, 16)]]
  apply = jax.jit(loaded.model.apply)
  expected = [T.timm_forward(case, sd, image[None])[0] for image in imgs]
  for image, want in zip(imgs, expected):
    np.testing.assert_allclose(apply({"params": loaded.params}, image[None])[0], want,
                               atol=ATOL)
  packed, slots = pack_images(imgs, (T.PATCH, T.PATCH), seq_len=288, max_images=3)
  assert packed.patches.shape[0] == 1  # all three in one row, padding after them
  out = apply({"params": loaded.params}, packed)
  for slot, want in zip(slots, expected):
    np.testing.assert_allclose(out[slot], want, atol=ATOL)


@pytest.mark.slow
def test_fine_tunes_a_perception_encoder_through_the_driver(tmp_path, digits_data_dir):
  from tests.helpers import restore_params, tiny_config
  from vit_jax.driver import config as config_lib
  from vit_jax.driver import train

  # A square 4 x 4 grid (16 px) so that the driver resizes the posemb to 6 x 6 (24 px).
  sd = T.state_dict("pe_core")
  sd["pos_embed"] = np.random.default_rng(3).normal(0, 0.5, (1, 17, T.WIDTH)).astype(np.float32)
  config = T.hub_config("pe_core")
  config["model_args"]["img_size"] = [16, 16]
  config["pretrained_cfg"]["input_size"] = [3, 16, 16]
  folder, _ = hub_folder(tmp_path, "pe_core", sd, config)
  c = tiny_config(digits_data_dir, model_name=config_lib.FROM_CHECKPOINT, total_steps=4,
                  log_every_steps=2, eval_every_steps=0, **{
                      "init_from.path": str(folder), "data.image_size": 24,
                      "checkpoint.every_steps": 4, "lr.warmup_steps": 1})
  setup = train.Setup(c, str(tmp_path / "setup"))
  o = setup.model.options
  assert (o.rope, o.rope_grid_indexing, o.rope_grid_offset, o.map_num_heads) == (
      "eva02", "xy", 1.0, 4) and o.map_prefix_tokens and setup.model.num_classes == 10
  # PE's normalisation (mean = std = 0.5, from the config): pixels to [-1, 1].
  assert setup.config.data.value_range == (-1.0, 1.0) and setup.config.data.mean is None
  results = train.train_and_evaluate(c, str(tmp_path / "run"))
  assert results["step"] == 4 and 0 <= results["top1"] <= 1
  params = restore_params(tmp_path / "run", 4)
  assert params["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 37, T.WIDTH)
  assert params["MAPHead_0"]["MultiHeadDotProductAttention_0"]["query"]["kernel"].shape == (
      T.WIDTH, 4, T.WIDTH // 4)


# ------------------------------------------------------------ transformers AIMv2

HF_DATA = json.loads((T.pathlib.Path(__file__).parent / "data" / "hf_aimv2_keys.json").read_text())


def _hf_aimv2_forward(sd, images, config):
  """transformers' Aimv2VisionModel in numpy (modeling_aimv2.py): RMSNorm after the patch
  embedding, learned positions, pre-RMSNorm blocks with bias-free q/k/v/out and a SwiGLU
  FFN, final RMSNorm; pooled = its attention-pooling head (cls token as the query) or,
  without one, the mean of the tokens."""
  eps, heads, p = config["rms_norm_eps"], config["num_attention_heads"], config["patch_size"]
  rms = lambda x, name: x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * sd[name + ".weight"]
  lin = lambda x, name: x @ sd[name + ".weight"].T + sd.get(name + ".bias", 0.0)
  x = images.astype(np.float64)
  b, h, w, _ = x.shape
  patches = x.reshape(b, h // p, p, w // p, p, 3)
  t = np.einsum("biyjxc,dcyx->bijd", patches, sd["embeddings.patch_embed.weight"])
  t = rms(t.reshape(b, -1, t.shape[-1]) + sd["embeddings.patch_embed.bias"],
          "embeddings.rms_norm") + sd["embeddings.position_embedding.weight"]
  d = t.shape[-1]
  split = lambda y: y.reshape(b, y.shape[1], heads, -1).transpose(0, 2, 1, 3)
  for i in range(config["num_hidden_layers"]):
    s = f"encoder.layers.{i}."
    y = rms(t, s + "rms_norm1")
    q, k, v = (split(lin(y, s + f"attention.{n}_proj")) for n in "qkv")
    a = softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // heads)) @ v
    t = t + lin(a.transpose(0, 2, 1, 3).reshape(b, -1, d), s + "attention.out_proj")
    y = rms(t, s + "rms_norm2")
    g = lin(y, s + "ffn.gate_proj")
    t = t + lin(g / (1 + np.exp(-g)) * lin(y, s + "ffn.up_proj"), s + "ffn.down_proj")
  t = rms(t, "rms_norm")
  if "head.cls_token" not in sd:
    return t.mean(1), t
  q = split(np.broadcast_to(sd["head.cls_token"], (b, 1, d)))
  k, v = split(lin(t, "head.k_proj")), split(lin(t, "head.v_proj"))
  a = softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // heads)) @ v
  return lin(a.transpose(0, 2, 1, 3).reshape(b, d), "head.output_proj"), t


@pytest.mark.parametrize("case", ["aimv2_vision_model", "aimv2_vision_model_no_head"])
def test_transformers_aimv2_folder_matches_its_forward(tmp_path, case):
  entry, fill = HF_DATA[case], T.Filler(4)
  sd = {k: (fill(*s, scale=0.2, around=1.0) if "norm" in k else
            fill(*s, scale=s[-1] ** -0.5 if len(s) == 2 and "position" not in k else 0.5))
        for k, s in entry["keys"].items()}
  folder = tmp_path / case
  folder.mkdir()
  safetensors.numpy.save_file(sd, str(folder / "model.safetensors"))
  (folder / "config.json").write_text(json.dumps(entry["config"]))
  found = pretrained.load_pretrained(str(folder))
  assert found.format == "hf:aimv2_vision_model"
  x = np.random.default_rng(5).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  out = jax.jit(lambda p, x: found.model.apply({"params": p}, x, features=True))(found.params, x)
  pooled, tokens = _hf_aimv2_forward(sd, x, entry["config"])
  np.testing.assert_allclose(out["pooled"], pooled, atol=ATOL)
  np.testing.assert_allclose(out["patch_tokens"], tokens, atol=ATOL)
  # In timm's names (the canonical layout) the head is attn_pool without q / norm / MLP.
  back = safetensors_io.linen_to_timm(found.params, "vit")
  assert "attn_pool.q.weight" not in back and ("attn_pool.latent" in back) == (
      "head.cls_token" in sd)


def test_attention_maps_of_heads_that_read_the_cls_token_or_query_with_the_probe(tmp_path):
  from vit_jax.tools import attention_maps

  # PE core: the MAP probe attends to the cls token too; the maps draw the patches.
  folder, _ = hub_folder(tmp_path, "pe_core")
  pe = pretrained.load_pretrained(str(folder))
  maps = attention_maps.compute(pe.model, pe.params, images())
  assert maps.pool_heads.shape == (2, 4) + T.GRID and maps.rollout.shape == (2,) + T.GRID
  assert (maps.pool_heads.sum((2, 3)) < 1).all()  # the cls token's share is not drawn
  # transformers AIMv2's attention-only head sows its own weights (no prefix tokens).
  entry, fill = HF_DATA["aimv2_vision_model"], T.Filler(4)
  hf = tmp_path / "aimv2"
  hf.mkdir()
  safetensors.numpy.save_file({k: fill(*s) for k, s in entry["keys"].items()},
                              str(hf / "model.safetensors"))
  (hf / "config.json").write_text(json.dumps(entry["config"]))
  aimv2 = pretrained.load_pretrained(str(hf))
  x = np.random.default_rng(5).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  maps = attention_maps.compute(aimv2.model, aimv2.params, x)
  np.testing.assert_allclose(maps.pool_heads.sum((2, 3)), 1.0, atol=1e-5)
  np.testing.assert_allclose(maps.logits, aimv2.model.apply({"params": aimv2.params}, x),
                             atol=1e-5)  # the sown path computes the fused one's output
