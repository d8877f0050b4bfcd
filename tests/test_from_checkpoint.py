"""model_name="from_checkpoint": fine-tune the model a checkpoint holds, at a new size.

The checkpoint is a transformers DINOv2-with-registers folder (config.json + model.safetensors
with the names transformers saves, tests/checkpoint/data/hf_vision_keys.json): the driver
must take the architecture (registers, LayerScale, no position rows for cls/registers) and
the input normalisation from it, resize the position embedding to data.image_size, and
give predict the same model.
"""

import json
import os

import numpy as np
import pytest
import safetensors.numpy

from tests.helpers import REPO, restore_params, tiny_config
from vit_jax import checkpoint
from vit_jax.checkpoint import preprocessing as P
from vit_jax.driver import config as config_lib
from vit_jax.driver import train
from vit_jax.errors import ConfigError
from vit_jax.tools import inference

KEYS = os.path.join(REPO, "tests", "checkpoint", "data", "hf_vision_keys.json")


@pytest.fixture
def dinov2_folder(tmp_path):
  with open(KEYS) as f:
    entry = json.load(f)["models"]["dinov2_with_registers"]
  rng = np.random.default_rng(0)
  state = {k: (rng.normal(scale=0.2, size=s) + (k.endswith(("norm1.weight", "norm2.weight",
                                                            "layernorm.weight")))).astype(
                                                                np.float32)
           for k, s in entry["keys"].items()}
  folder = tmp_path / "dinov2_reg"
  folder.mkdir()
  safetensors.numpy.save_file(state, str(folder / "model.safetensors"))
  (folder / "config.json").write_text(json.dumps(entry["config"]))
  return folder


def from_checkpoint_config(digits_data_dir, folder, **overrides):
  # The checkpoint's grid is 2 x 2 patches of 14 px; 42 px digits give 3 x 3.
  return tiny_config(digits_data_dir, model_name=config_lib.FROM_CHECKPOINT, total_steps=6,
                     log_every_steps=3, eval_every_steps=0, **{
                         "init_from.path": str(folder), "data.image_size": 42,
                         "checkpoint.every_steps": 6, "lr.warmup_steps": 1, **overrides})


@pytest.mark.slow
def test_fine_tunes_the_checkpoints_model_with_its_preprocessing(tmp_path, digits_data_dir,
                                                                 dinov2_folder):
  c = from_checkpoint_config(digits_data_dir, dinov2_folder)
  setup = train.Setup(c, str(tmp_path / "probe"))
  assert setup.model.options.num_registers == 4 and setup.model.options.no_embed_class
  assert setup.model.num_classes == 10  # a new head for the dataset's classes
  assert setup.config.data.mean == P.IMAGENET_MEAN and setup.config.data.value_range is None
  assert setup.config.data.resize_small is None  # DINOv2 evaluates uncropped (crop_pct 1)
  assert setup.config.data.resize_method == "bicubic"  # as its reference preprocessing
  workdir = tmp_path / "run"
  results = train.train_and_evaluate(c, str(workdir))
  assert results["step"] == 6 and 0 <= results["top1"] <= 1
  params = restore_params(workdir, 6)
  assert params["registers"].shape == (1, 4, 32)
  # Position embedding resized from 2 x 2 to 3 x 3 patches (no cls / register rows).
  assert params["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 9, 32)
  # predict builds the same model from the run's config.json and uses its preprocessing.
  run = inference.load_run(str(workdir))
  assert run.model.options.num_registers == 4
  assert tuple(run.eval_data["mean"]) == P.IMAGENET_MEAN


@pytest.mark.slow
def test_linear_probe_trains_the_head_alone(tmp_path, digits_data_dir, dinov2_folder):
  c = from_checkpoint_config(digits_data_dir, dinov2_folder, **{"data.image_size": 28})
  c.freeze = ("^(?!head/).*",)  # everything but the new head
  workdir = tmp_path / "probe"
  train.train_and_evaluate(c, str(workdir))
  trained = restore_params(workdir, 6)
  original = checkpoint.load_pretrained(str(dinov2_folder)).params
  block = lambda p: p["Transformer"]["encoderblock_1"]["MlpBlock_0"]["Dense_0"]["kernel"]
  np.testing.assert_array_equal(block(trained), block(original))
  np.testing.assert_array_equal(trained["registers"], original["registers"])
  assert np.abs(trained["head"]["kernel"]).max() > 0  # the zero-initialised head moved


def test_from_checkpoint_needs_the_checkpoint(digits_data_dir):
  c = tiny_config(digits_data_dir, model_name=config_lib.FROM_CHECKPOINT)
  with pytest.raises(ConfigError, match=r"takes the architecture from the checkpoint: set "
                     r"--config.init_from.path"):
    config_lib.validate(c)
