"""What can be checked when a dataset is opened is checked then, not at the first evaluation.

A folder's (or a manifest's) evaluation split: every image's header and structure, every
video's frame count against data.min_frames. Training found such files only after its
steps, at the first evaluation.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from tests.media import write_video
from vit_jax import data
from vit_jax.errors import DataError


def _config(root, **overrides):
  config = data.default_config()
  config.update(dataset=f"folder:{root}", image_size=16, prefetch=1, **overrides)
  return config


def test_an_undecodable_evaluation_image_is_found_when_the_dataset_opens(image_folder, tmp_path):
  root = str(tmp_path / "images")
  shutil.copytree(image_folder, root)
  good = os.path.join(root, "test", "circle", "00.png")
  broken = os.path.join(root, "test", "circle", "zz_truncated.png")
  with open(good, "rb") as f:
    payload = f.read()
  with open(broken, "wb") as f:
    f.write(payload[: len(payload) // 2])  # a PNG cut short, as by an interrupted copy
  with pytest.raises(DataError, match=(
      rf"folder:{root} split 'test' has 1 files that cannot be read:\n  {broken}: does not "
      r"decode \(.*\)\nFix or delete them")):
    data.get_info(_config(root))
  os.remove(broken)
  info = data.get_info(_config(root))  # the same split, now clean
  assert info.num_eval_examples == 9


def test_a_too_short_evaluation_video_is_found_when_the_dataset_opens(video_folder, tmp_path):
  root = str(tmp_path / "videos")
  shutil.copytree(video_folder, root)
  short = os.path.join(root, "test", "left", "short.mp4")
  write_video(short, np.zeros((4, 24, 32, 3), np.uint8))
  config = _config(root, num_frames=4, flip=False, min_frames=6)
  with pytest.raises(DataError, match=rf"{short}: it has 4 frames, fewer than data\.min_frames=6"):
    data.get_info(config)
  config.min_frames = 4
  assert data.get_info(config).num_eval_examples == 5
