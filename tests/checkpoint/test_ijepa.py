"""I-JEPA from transformers `ijepa` folders: no cls token, the mean normed token pooled.

The folders have the key names, shapes and config.json transformers' `save_pretrained`
writes (tests/checkpoint/data/hf_fam_b_keys.json); `load_pretrained` alone must give the
output of an independent numpy forward of IJepaModel / IJepaForImageClassification
(_fam_b_forward.py). timm's `vit_giant_patch16_gap_224` is in test_timm_families.py
(ijepa_g), the registered sizes in tests/models/test_registry.py.
"""

import json
import os

import jax
import numpy as np
import pytest
import safetensors.numpy
from _fam_b_forward import ijepa_forward

from vit_jax import checkpoint
from vit_jax.checkpoint import preprocessing as P

DATA = os.path.join(os.path.dirname(__file__), "data", "hf_fam_b_keys.json")
with open(DATA) as f:
  HF = json.load(f)["models"]
ATOL = 1e-4


def folder_of(tmp_path, name, extra=None):
  entry = HF[name]
  rng = np.random.default_rng(0)
  state = {k: (rng.normal(scale=0.3, size=s) + (k.endswith("norm_before.weight") or k.endswith(
      ("norm_after.weight", "layernorm.weight")))).astype(np.float32)
           for k, s in entry["keys"].items()}
  state.update(extra or {})
  folder = tmp_path / name
  folder.mkdir()
  safetensors.numpy.save_file(state, str(folder / "model.safetensors"))
  (folder / "config.json").write_text(json.dumps(entry["config"]))
  return folder, entry["config"], state


@pytest.mark.parametrize("name,classes", [("ijepa", None), ("ijepa_classifier", 5)])
def test_transformers_folder_gives_the_reference_output(tmp_path, name, classes):
  folder, config, state = folder_of(tmp_path, name)
  pre = checkpoint.load_pretrained(str(folder))
  assert pre.format == "hf:ijepa" and pre.model.classifier == "gap"
  assert pre.model.num_classes == classes and "cls" not in pre.params
  assert pre.preprocessing.mean == P.IMAGENET_MEAN and pre.preprocessing.input_size == (16, 16)
  x = np.random.default_rng(1).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  out = jax.jit(pre.model.apply)({"params": pre.params}, x)
  np.testing.assert_allclose(out, ijepa_forward(config, state, x), atol=ATOL)


def test_a_pooler_without_cls_token_is_refused(tmp_path):
  folder, _, _ = folder_of(tmp_path, "ijepa", {
      "pooler.dense.weight": np.zeros((32, 32), np.float32),
      "pooler.dense.bias": np.zeros(32, np.float32)})
  with pytest.raises(checkpoint.CheckpointError, match=r"a pooler .* without a cls token"):
    checkpoint.load_pretrained(str(folder))
