"""timm checkpoints of the later ViT families: load, run, export.

Each family's file has exactly timm's key names and shapes (tests/checkpoint/
_timm_families.py), laid out as a timm Hub folder (model.safetensors + config.json with
`architecture` and `model_args`, as timm's `save_for_hf` writes it). The model the
loader builds must give the logits of an independent numpy timm forward, and writing
the params back must give the same file.
"""

import json
import os

import _timm_families as F
import jax
import numpy as np
import pytest
import safetensors.numpy
from _ckpt_helpers import write_hub_folder

from vit_jax import checkpoint
from vit_jax.checkpoint import safetensors_io, timm_model, tree

GRID = (4, 3)  # 16x12 images: a non-square grid shows H/W swaps (RoPE's included)
ATOL = 1e-4


def hub_folder(tmp_path, family, sd, model_args=None):
  args = dict(embed_dim=F.WIDTH, depth=F.DEPTH, num_heads=F.HEADS, **(model_args or {}))
  config = {"architecture": F.FAMILIES[family][0], "num_classes": F.CLASSES,
            "model_args": args, "pretrained_cfg": {"input_size": [3, 16, 12]}}
  return write_hub_folder(tmp_path / family, sd, config)


def images():
  return np.random.default_rng(1).uniform(-1, 1, (2, GRID[0] * F.PATCH, GRID[1] * F.PATCH,
                                                  3)).astype(np.float32)


@pytest.mark.parametrize("family", sorted(F.FAMILIES))
def test_family_loads_runs_and_exports_bit_exact(tmp_path, family):
  sd = F.family_state_dict(family, GRID)
  params, found = timm_model.read_timm(str(hub_folder(tmp_path, family, sd)))
  assert found.architecture == F.FAMILIES[family][0]
  x = images()
  logits = np.asarray(jax.jit(found.model().apply)({"params": params}, x))
  expected = F.timm_family_forward(family, sd, x)
  assert logits.shape == expected.shape == (2, F.CLASSES)
  np.testing.assert_allclose(logits, expected, atol=ATOL)

  back = safetensors_io.linen_to_timm(params, found.key_names)
  assert sorted(back) == sorted(sd)
  for key, value in sd.items():
    assert back[key].dtype == value.dtype and np.array_equal(back[key], value), key
  # And the layout is found from the params alone.
  assert safetensors_io.timm_names(params) == found.key_names


@pytest.mark.parametrize("family", ["deit", "dinov2_reg4", "siglip", "eva02_b"])
def test_any_input_size_as_timm_dynamic_img_size(tmp_path, family):
  """A model made at a square grid runs at two non-square ones, its position embedding
  resized in the graph as timm's dynamic_img_size does (bicubic, antialias), RoPE from
  the input's grid; cls rows (DeiT, EVA-02) and patch-only rows (DINOv2-reg) kept aside."""
  sd = F.family_state_dict(family, (4, 4))
  params, found = timm_model.read_timm(str(hub_folder(tmp_path, family, sd)))
  assert found.options.posemb_resize == ("bicubic_antialias" if "pos_embed" in sd else None)
  apply = jax.jit(found.model().apply)
  rng = np.random.default_rng(3)
  for grid in ((3, 5), (6, 2)):  # each shrinks one axis (antialias) and grows the other
    x = rng.uniform(-1, 1, (2, grid[0] * F.PATCH, grid[1] * F.PATCH, 3)).astype(np.float32)
    np.testing.assert_allclose(apply({"params": params}, x),
                               F.timm_family_forward(family, sd, x), atol=ATOL,
                               err_msg=f"grid {grid}")


def test_numpy_resize_reproduces_torch():
  # The reference's resize (F.torch_resize) against torch's own outputs (tests/models/
  # data/torch_interpolate.json, made with torch 2.13).
  path = os.path.join(os.path.dirname(__file__), "..", "models", "data",
                      "torch_interpolate.json")
  with open(path) as f:
    data = json.load(f)
  grid = np.asarray(data["grid"], np.float64)[0].transpose(1, 2, 0)  # [5, 7, 3]
  for c in data["cases"]:
    out = F.torch_resize(grid, c["size"], c["mode"], c["antialias"]).transpose(2, 0, 1)
    np.testing.assert_allclose(out, np.asarray(c["out"])[0], atol=5e-6, err_msg=str(c))


def test_rope_and_layer_scale_change_the_output(tmp_path):
  # Guards the comparison above: without RoPE (or with LayerScale at 1) the numpy
  # forward gives other logits, so matching it exercises them.
  sd = F.family_state_dict("dinov3", GRID)
  params, found = timm_model.read_timm(str(hub_folder(tmp_path, "dinov3", sd)))
  x = images()
  with_rope = np.asarray(found.model().apply({"params": params}, x))
  without = np.asarray(found.model(rope=None).apply({"params": params}, x))
  assert np.abs(with_rope - without).max() > 1e-2
  unit = {k: (np.ones_like(v) if "gamma" in k else v) for k, v in sd.items()}
  assert np.abs(F.timm_family_forward("dinov3", unit, x) - with_rope).max() > 1e-2


def test_exported_file_loads_again_bit_identically(tmp_path):
  sd = F.family_state_dict("eva02_b", GRID)
  params, found = timm_model.read_timm(str(hub_folder(tmp_path, "eva02_b", sd)))
  out = tmp_path / "export"
  out.mkdir()
  checkpoint.save_safetensors_timm(params, str(out / "model.safetensors"))
  (out / "config.json").write_text((tmp_path / "eva02_b" / "config.json").read_text())
  again, found_again = timm_model.read_timm(str(out))
  assert found_again == found
  flat, flat_again = (tree.flatten(p) for p in (params, again))
  assert sorted(flat) == sorted(flat_again)
  assert all(np.array_equal(flat[k], flat_again[k]) for k in flat)


def test_bare_file_loads_when_the_keys_decide(tmp_path):
  # DeiT III: LayerScale and a patch-only position embedding (4x4 grid: 16 rows and a
  # cls token, so no_embed_class shows in the row count).
  sd = F.family_state_dict("deit3", (4, 4))
  path = tmp_path / "deit3.safetensors"
  safetensors.numpy.save_file(sd, str(path))
  params, found = timm_model.read_timm(str(path))
  assert found.architecture is None and found.options.no_embed_class
  x = np.random.default_rng(2).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  np.testing.assert_allclose(found.model().apply({"params": params}, x),
                             F.timm_family_forward("deit3", sd, x), atol=ATOL)
  # checkpoint.load reads the same params.
  loaded = tree.flatten(checkpoint.load(str(path)))
  assert all(np.array_equal(loaded[k], v) for k, v in tree.flatten(params).items())


@pytest.mark.parametrize("family,why", [
    ("dinov3", "EVA-style names"), ("clip", "norm_pre: a CLIP tower, GELU or QuickGELU"),
    ("eva02_ti", "EVA-style names")])
def test_bare_file_that_leaves_the_model_open_asks_for_the_architecture(tmp_path, family, why):
  path = tmp_path / "model.safetensors"
  safetensors.numpy.save_file(F.family_state_dict(family, GRID), str(path))
  with pytest.raises(checkpoint.CheckpointError,
                     match=rf"do not determine the model \(.*{why}.*architecture="):
    timm_model.read_timm(str(path))
  # Named, it loads.
  params, found = timm_model.read_timm(str(path), architecture=F.FAMILIES[family][0])
  assert found.options.rope == F.FAMILIES[family][2].get("rope")


def test_unknown_family_names_the_unrecognised_keys(tmp_path):
  sd = F.family_state_dict("deit", GRID)
  sd["blocks.0.attn.relative_position_bias_table"] = np.zeros((10, 2), np.float32)
  sd["rel_pos.weight"] = np.zeros(3, np.float32)
  folder = hub_folder(tmp_path, "deit", sd)
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"2 tensor\(s\) do not belong.*blocks.0.attn.relative_position_bias"
                           r"_table \(10, 2\), rel_pos.weight \(3,\)"):
    timm_model.read_timm(str(folder))


def test_unknown_architecture_and_config_mismatch_are_clear(tmp_path):
  sd = F.family_state_dict("deit", GRID)
  folder = hub_folder(tmp_path, "deit", sd, model_args={})
  config = json.loads((folder / "config.json").read_text())
  config["architecture"] = "convnext_tiny"
  (folder / "config.json").write_text(json.dumps(config))
  with pytest.raises(checkpoint.CheckpointError, match="'convnext_tiny' is not one this"):
    timm_model.read_timm(str(folder))
  config.update(architecture="deit_tiny_patch16_224", model_args={"embed_dim": 48})
  (folder / "config.json").write_text(json.dumps(config))
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"model_args.embed_dim=48, the weights have 32"):
    timm_model.read_timm(str(folder))


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pth", "weights.pt"])
def test_pytorch_pickles_are_refused_without_unpickling(tmp_path, name):
  import pickle
  import zipfile

  path = tmp_path / name
  if name.endswith(".bin"):  # torch.save's zip layout
    with zipfile.ZipFile(path, "w") as archive:
      archive.writestr("archive/data.pkl", pickle.dumps({"w": 1}))
  else:
    path.write_bytes(pickle.dumps({"w": 1}, protocol=2))
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"(?s)PyTorch pickle.*runs code.*safetensors.torch.*save_file"):
    checkpoint.load(str(path))
  # Detected by content too, whatever the extension.
  renamed = tmp_path / "renamed.npz"
  renamed.write_bytes(path.read_bytes())
  with pytest.raises(checkpoint.CheckpointError, match="PyTorch pickle"):
    checkpoint.load(str(renamed))


@pytest.mark.parametrize("family,prefix_rows", [("dinov2_reg4", 0), ("deit_distilled", 2)])
def test_adapt_resizes_the_posemb_grid_and_keeps_prefix_rows_aside(tmp_path, family,
                                                                   prefix_rows):
  # DINOv2-reg: no posemb rows for cls and the 4 registers; DeiT distilled: cls + dist rows.
  sd = F.family_state_dict(family, (4, 4))
  params, found = timm_model.read_timm(str(hub_folder(tmp_path, family, sd)))
  model = found.model()
  init = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((1, 8, 8, 3))))["params"]
  fitted, report = checkpoint.adapt(params, init, log=False)
  posemb = fitted["Transformer"]["posembed_input"]["pos_embedding"]
  assert posemb.shape == (1, prefix_rows + 4, F.WIDTH)
  np.testing.assert_array_equal(posemb[:, :prefix_rows], sd["pos_embed"][:, :prefix_rows])
  assert report.reinitialised == []
  assert model.apply({"params": fitted}, np.zeros((1, 8, 8, 3), np.float32)).shape == (1, 5)


def test_width_mismatch_names_the_first_key_and_both_shapes(tmp_path):
  sd = F.family_state_dict("deit3", (4, 4))
  params, found = timm_model.read_timm(str(hub_folder(tmp_path, "deit3", sd)))
  wider = found.model(hidden_size=64)
  init = jax.eval_shape(lambda: wider.init(jax.random.key(0), np.zeros((1, 16, 16, 3))))
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"First mismatching key: Transformer/encoder_norm/bias: checkpoint "
                           r"\(32,\) vs model \(64,\)"):
    checkpoint.adapt(params, init["params"], log=False)


def test_hub_folder_through_load_and_the_convert_command(tmp_path):
  # checkpoint.load takes the folder (heads from config.json's model_args), and
  # `python -m vit_jax.convert` writes the timm file back with the same tensors.
  from vit_jax.checkpoint import convert

  sd = F.family_state_dict("eva02_ti", GRID)
  folder = hub_folder(tmp_path, "eva02_ti", sd)
  params, _ = timm_model.read_timm(str(folder))
  loaded = tree.flatten(checkpoint.load(str(folder)))
  assert sorted(loaded) == sorted(tree.flatten(params))
  out = tmp_path / "back.safetensors"
  assert "(timm)" in convert.convert(str(folder), str(out))
  back = safetensors.numpy.load_file(str(out))
  assert sorted(back) == sorted(sd) and all(np.array_equal(back[k], sd[k]) for k in sd)
