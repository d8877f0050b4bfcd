"""Every transformers video family through the params-only path the driver's
`from_checkpoint` fine-tuning takes: `checkpoint.load(folder, allow_video=True)` gives
load_pretrained's params, an image caller is refused, and `adapt_video` copies them into
the same model with a new head.

The folders are each family's test folders (real key names and config.json fields)."""

import jax
import numpy as np
import pytest
import test_hf_timesformer
import test_hf_videoprism
import test_hf_vjepa2
from _hf_video import folder as vivit_videomae_folder

from vit_jax import checkpoint
from vit_jax.checkpoint import tree as tree_lib
from vit_jax.errors import CheckpointError


def _folder(tmp_path, family):
  if family in ("vivit_cls", "vmae_cls"):
    return str(vivit_videomae_folder(tmp_path, family)[0])
  if family == "timesformer":
    test_hf_timesformer.write_folder(tmp_path / family, "classifier")
    return str(tmp_path / family)
  if family == "videoprism":
    test_hf_videoprism.write_folder(tmp_path / family, "classifier")
    return str(tmp_path / family)
  arch = "VJEPA2ForVideoClassification"
  return test_hf_vjepa2.write_folder(tmp_path, arch, test_hf_vjepa2.state_dict(arch))


@pytest.mark.parametrize("family", ["vivit_cls", "vmae_cls", "timesformer", "videoprism",
                                    "vjepa2"])
def test_load_with_video_gives_the_params_that_fine_tuning_copies(tmp_path, family):
  path = _folder(tmp_path, family)
  found = checkpoint.load_pretrained(path)
  restored = checkpoint.load(path, allow_video=True)
  flat, expected = tree_lib.flatten(restored), tree_lib.flatten(found.params)
  assert sorted(flat) == sorted(expected)
  for key in expected:
    np.testing.assert_array_equal(np.asarray(flat[key]), np.asarray(expected[key]), err_msg=key)
  with pytest.raises(CheckpointError, match="video"):
    checkpoint.load(path)
  # The driver's from_checkpoint: the same model with a new 3-class head.
  model = found.model.clone(num_classes=3)
  frames = found.preprocessing.num_frames
  height, width = found.preprocessing.input_size
  clip = np.zeros((1, frames, height, width, 3), np.float32)
  init = jax.tree.map(np.asarray, model.init(jax.random.key(0), clip)["params"])
  params, _ = checkpoint.adapt_video(restored, init, variant=model.variant, reset_head=True)
  copied, fresh = tree_lib.flatten(params), tree_lib.flatten(init)
  for key, value in copied.items():
    source = fresh if key.startswith("output_projection/") else flat
    np.testing.assert_array_equal(np.asarray(value), np.asarray(source[key]), err_msg=key)
  assert model.apply({"params": params}, clip).shape == (1, 3)
