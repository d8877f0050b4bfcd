"""model_name="from_checkpoint" on transformers video folders: the driver fine-tunes the
folder's model (a new head, its normalisation) on the bundled moving_digits/tiny clips.

The folders have transformers' key names (tests/checkpoint/data/hf_video_keys.json) at a
4x4 patch for the 16x16 clips.
"""

import numpy as np
import pytest

from tests.checkpoint import _hf_video as V
from tests.driver.test_vivit_train import TEST_CLIPS, tiny_video_config
from tests.helpers import restore_params
from vit_jax.checkpoint import preprocessing as P
from vit_jax.driver import config as config_lib
from vit_jax.driver import train
from vit_jax.tools import inference


def from_checkpoint(data_dir, folder, **overrides):
  c = tiny_video_config(data_dir, model_name=config_lib.FROM_CHECKPOINT, **{
      "init_from.path": str(folder), "total_steps": 4, "checkpoint.every_steps": 4,
      "log_every_steps": 2, **overrides})
  c.model.variant = None  # the folder's
  return c


@pytest.mark.slow
def test_videomae_folder_fine_tunes_with_a_new_head_and_its_preprocessing(video_data_dir,
                                                                          tmp_path):
  folder, sd, _ = V.folder(tmp_path, "vmae_cls", patch=4, image=16)
  c = from_checkpoint(video_data_dir, folder, **{"model.stochastic_depth": 0.1})
  setup = train.Setup(c, str(tmp_path / "setup"))
  assert setup.model.posemb == "sincos1d" and setup.model.num_classes == 20
  assert setup.model.options.stochastic_depth == 0.1
  assert setup.config.data.mean == P.IMAGENET_MEAN and setup.config.data.value_range is None
  assert setup.config.data.num_frames == 4  # the config's clip
  params = setup.pretrained_params(str(folder))
  # The encoder is the folder's; the 3-class head is replaced by a zero 20-class head.
  np.testing.assert_array_equal(
      params["Transformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]["kernel"],
      sd["videomae.encoder.layer.0.intermediate.dense.weight"].T)
  assert params["output_projection"]["kernel"].shape == (32, 20)
  assert not np.any(np.asarray(params["output_projection"]["kernel"]))
  workdir = tmp_path / "run"
  results = train.train_and_evaluate(c, str(workdir))
  assert results["step"] == 4 and results["num_examples"] == TEST_CLIPS
  trained = restore_params(workdir, 4)
  assert trained["output_projection"]["kernel"].shape == (32, 20)
  run = inference.load_run(str(workdir))
  assert run.is_video and run.model.posemb == "sincos1d"
  assert tuple(run.eval_data["mean"]) == P.IMAGENET_MEAN


@pytest.mark.slow
def test_vivit_folder_with_another_frame_count_is_refused(video_data_dir, tmp_path):
  folder, _, _ = V.folder(tmp_path, "vivit_cls", patch=4, image=16)  # 4 frames
  c = from_checkpoint(video_data_dir, folder, **{"data.num_frames": 8})
  setup = train.Setup(c, str(tmp_path / "setup"))
  with pytest.raises(Exception, match="position embeddings are not resized"):
    setup.pretrained_params(str(folder))
