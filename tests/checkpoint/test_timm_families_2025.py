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

from vit_jax.checkpoint import pretrained, safetensors_io, timm_model

ATOL = 1e-4


def hub_folder(tmp_path, case, sd=None, config=None):
  folder = tmp_path / case
  folder.mkdir()
  sd = T.state_dict(case) if sd is None else sd
  safetensors.numpy.save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
  (folder / "config.json").write_text(json.dumps(config or T.hub_config(case)))
  return folder, sd


def images(seed=1):
  return np.random.default_rng(seed).uniform(
      -1, 1, (2, T.GRID[0] * T.PATCH, T.GRID[1] * T.PATCH, 3)).astype(np.float32)


FAMILY = {"pe_core": "pe", "pe_lang": "pe", "pe_spatial": "pe", "aimv2": "aimv2",
          "so150m_map": "so150m", "so150m2": "so150m", "rope_axial": "rope_vit",
          "rope_axial_ape": "rope_vit", "rope_mixed": "rope_vit", "rope_mixed_ape": "rope_vit"}


@pytest.mark.parametrize("case", T.CASES)
def test_loads_matches_timm_and_exports_bit_exact(tmp_path, case):
  folder, sd = hub_folder(tmp_path, case)
  loaded = pretrained.load_pretrained(str(folder))
  assert loaded.format == "timm"
  # Preprocessing from the config's pretrained_cfg; the family when the config has none.
  assert loaded.preprocessing.crop_pct == 1.0
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
  back = safetensors_io.linen_to_timm(params, found.key_names)
  assert sorted(back) == sorted(sd)
  for key, value in sd.items():
    assert back[key].dtype == value.dtype and np.array_equal(back[key], value), key
