"""Hugging Face model directories (config.json + model.safetensors) of the vision families.

Each directory has exactly the key names and shapes `save_pretrained` writes
(tests/checkpoint/_hf_families.py); the model the loader builds must give the output of
an independent numpy forward of the transformers model.
"""


import _hf_families as H
import jax
import numpy as np
import pytest
from _ckpt_helpers import write_hub_folder

from vit_jax import checkpoint
from vit_jax.checkpoint import hf_model

GRID = (4, 4)  # transformers' embeddings interpolate the posemb of non-square inputs
ATOL = 1e-4


def model_dir(tmp_path, case, sd, config=None):
  return write_hub_folder(tmp_path / case, sd, config or H.config(case, GRID))


@pytest.mark.parametrize("case", sorted(H.CASES))
def test_model_directory_gives_the_reference_output(tmp_path, case):
  sd = H.hf_state_dict(case, GRID)
  params, found = hf_model.read_hf(str(model_dir(tmp_path, case, sd)))
  assert found.architecture == H.CASES[case][1]
  x = np.random.default_rng(1).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  out = np.asarray(jax.jit(found.model().apply)({"params": params}, x))
  expected = H.hf_forward(case, sd, x)
  assert out.shape == expected.shape
  np.testing.assert_allclose(out, expected, atol=ATOL)


@pytest.mark.parametrize("case", ["dinov2_registers", "siglip"])
def test_any_input_size_as_interpolate_pos_encoding(tmp_path, case):
  # Two non-square grids from the 4x4 one, each shrinking one axis: bicubic, and bicubic
  # with antialias for Dinov2WithRegisters (its interpolate_pos_encoding).
  sd = H.hf_state_dict(case, GRID)
  pre = checkpoint.load_pretrained(str(model_dir(tmp_path, case, sd)))
  apply = jax.jit(pre.model.apply)
  rng = np.random.default_rng(2)
  for gh, gw in ((3, 5), (6, 2)):
    x = rng.uniform(-1, 1, (2, gh * H.PATCH, gw * H.PATCH, 3)).astype(np.float32)
    np.testing.assert_allclose(apply({"params": pre.params}, x), H.hf_forward(case, sd, x),
                               atol=ATOL, err_msg=f"grid {gh}x{gw}")


def test_full_clip_model_reads_the_vision_tower_and_load_takes_the_directory(tmp_path):
  sd = H.hf_state_dict("clip", GRID)
  sd.update({"text_model.embeddings.token_embedding.weight": np.zeros((10, 8), np.float32),
             "text_projection.weight": np.zeros((5, 8), np.float32),
             "logit_scale": np.zeros((), np.float32)})
  config = {"model_type": "clip", "architectures": ["CLIPModel"],
            "vision_config": H.config("clip", GRID), "text_config": {"hidden_size": 8}}
  folder = model_dir(tmp_path, "clip_full", sd, config)
  params, found = hf_model.read_hf(str(folder))
  assert found.fields["num_classes"] == H.CLASSES and not found.options.head_bias
  params_again, fmt = checkpoint.load_with_format(str(folder))
  assert fmt == "hf" and sorted(params_again) == sorted(params)


def test_config_that_disagrees_with_the_weights_names_the_field(tmp_path):
  sd = H.hf_state_dict("dinov2", GRID)
  config = dict(H.config("dinov2", GRID), num_hidden_layers=3)
  with pytest.raises(checkpoint.CheckpointError, match="num_hidden_layers=3, the weights have 2"):
    hf_model.read_hf(str(model_dir(tmp_path, "dinov2", sd, config)))


def test_unsupported_model_type_and_missing_weights_are_clear(tmp_path):
  folder = model_dir(tmp_path, "vit_pooler", H.hf_state_dict("vit_pooler", GRID),
                     dict(H.config("vit_pooler", GRID), model_type="beit"))
  with pytest.raises(checkpoint.CheckpointError, match="model_type 'beit' is not one"):
    hf_model.read_hf(str(folder))
  (folder / "model.safetensors").unlink()
  with pytest.raises(checkpoint.CheckpointError, match="no model.safetensors.*safe_serialization"):
    hf_model.read_hf(str(folder))
