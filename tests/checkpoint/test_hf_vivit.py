"""transformers ViViT folders (model_type vivit): load, compare, refuse, preprocess, export.

Each folder has exactly the key names, shapes and config.json fields transformers saves
(tests/checkpoint/data/hf_video_keys.json, tiny); the logits must equal an independent
numpy forward of transformers' ViViT (_hf_video.py) written from the same weights.
"""

import json

import _hf_video as V
import jax
import numpy as np
import pytest

from vit_jax import checkpoint
from vit_jax.checkpoint import hf_video

ATOL = 1e-4


def clips(frames=4, size=32, batch=2, seed=1):
  return np.random.default_rng(seed).uniform(-1, 1, (batch, frames, size, size, 3)).astype(
      np.float32)


@pytest.mark.parametrize("case", ["vivit_cls", "vivit_model"])
def test_folder_gives_the_reference_output(tmp_path, case):
  path, sd, config = V.folder(tmp_path, case)
  pre = checkpoint.load_pretrained(str(path))
  assert pre.is_video and pre.format == "hf:vivit"
  model = pre.model
  assert (model.variant, model.classifier_in_use, model.posemb) == (
      "spatio_temporal", "token", "learn")
  assert model.options.gelu_approximate and model.options.layernorm_epsilon == 1e-6
  x = clips()
  out = np.asarray(jax.jit(model.apply)({"params": pre.params}, x))
  expected = V.vivit_forward(sd, config, x)
  assert out.shape == expected.shape == ((2, 3) if case == "vivit_cls" else (2, 32))
  np.testing.assert_allclose(out, expected, atol=ATOL)
  if case == "vivit_cls":
    assert pre.class_names == ("LABEL_0", "LABEL_1", "LABEL_2")  # config.json's id2label
    # Other clips than the learned table's: refused with the clip to feed.
    with pytest.raises(ValueError, match="9 rows, clips of 6 frames at 32x32 give 13 tokens"):
      model.apply({"params": pre.params}, clips(frames=6, batch=1))
    with pytest.raises(ValueError, match="1 frame.*shorter than one tubelet .2 frames"):
      model.apply({"params": pre.params}, clips(frames=1, batch=1))
    with pytest.raises(ValueError, match="3 frames are not divisible by tubelet_size=2"):
      model.apply({"params": pre.params}, clips(frames=3, batch=1))


@pytest.mark.parametrize("field, value, message", [
    ("num_hidden_layers", 2, "num_hidden_layers=2, the weights have 1"),
    ("num_frames", 8, "num_frames / image_size=17, the weights have 9"),
    ("hidden_size", 64, "hidden_size=64, the weights have 32"),
])
def test_config_that_disagrees_with_the_weights_names_the_field(tmp_path, field, value,
                                                                message):
  path, _, _ = V.folder(tmp_path, "vivit_cls", config_overrides={field: value})
  with pytest.raises(checkpoint.CheckpointError, match=message.replace("/", ".")):
    checkpoint.load_pretrained(str(path))


def test_image_processor_settings_become_the_clip_preprocessing(tmp_path):
  """VivitImageProcessor: p / 127.5 - 1 (offset), then (v - 0.5) / 0.5: in [0, 1] units
  mean 0.75, std 0.25; shorter side 40, centre 32 crop; frames from config.json."""
  path, _, _ = V.folder(tmp_path, "vivit_cls")
  processor = {"image_processor_type": "VivitImageProcessor", "do_resize": True,
               "size": {"shortest_edge": 40}, "do_center_crop": True,
               "crop_size": {"height": 32, "width": 32}, "do_rescale": True,
               "rescale_factor": 1 / 127.5, "offset": True, "do_normalize": True,
               "image_mean": [0.5] * 3, "image_std": [0.5] * 3, "resample": 2}
  (path / "preprocessor_config.json").write_text(json.dumps(processor))
  pre = checkpoint.load_pretrained(str(path))
  p = pre.preprocessing
  np.testing.assert_allclose(p.mean, [0.75] * 3)
  np.testing.assert_allclose(p.std, [0.25] * 3)
  assert (p.input_size, p.crop_pct, p.num_frames, p.frame_stride) == ((32, 32), 0.8, 4, 2)
  data = pre.data_config()
  assert (data["num_frames"], data["stride"], data["resize_small"]) == (4, 2, 40)
  # A clip of black and white halves: transformers gives (0 / 127.5 - 1 - 0.5) / 0.5 = -3
  # and (255 / 127.5 - 1 - 0.5) / 0.5 = 1.
  video = np.zeros((8, 40, 40, 3), np.uint8)
  video[:, :, 20:] = 255
  inputs = pre.preprocess([video])
  assert inputs.shape == (1, 1, 4, 32, 32, 3)
  np.testing.assert_allclose(inputs[0, 0, :, :, :10], -3.0, atol=1e-5)
  np.testing.assert_allclose(inputs[0, 0, :, :, -10:], 1.0, atol=1e-5)


def test_export_round_trip_is_bit_exact(tmp_path):
  path, _, _ = V.folder(tmp_path, "vivit_cls")
  pre = checkpoint.load_pretrained(str(path))
  out = tmp_path / "exported"
  hf_video.save_hf_video(pre.params, pre.model, str(out), num_frames=4)
  back = checkpoint.load_pretrained(str(out))
  leaves = jax.tree_util.tree_leaves_with_path(pre.params)
  again = dict(jax.tree_util.tree_leaves_with_path(back.params))
  assert len(again) == len(leaves)
  for key, value in leaves:
    np.testing.assert_array_equal(again[key], value)
  assert json.loads((out / "config.json").read_text())["hidden_act"] == "gelu_fast"
  assert back.model == pre.model
