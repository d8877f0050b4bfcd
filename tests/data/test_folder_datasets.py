"""Folder datasets: images (PIL) and videos (PyAV) in class sub-folders, bad files."""

from __future__ import annotations

import os
import shutil

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from tests.media import write_video
from vit_jax import data
from vit_jax.data import folder, pipeline, sources


def _sharding(num_devices=8):
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:num_devices]), ("data",))
  return NamedSharding(mesh, PartitionSpec("data"))


def _config(root, **overrides):
  config = data.default_config()
  config.update(dict(dataset=f"folder:{root}", image_size=16, prefetch=1), **overrides)
  return config


def test_image_folder(image_folder):
  config = _config(image_folder)
  info = data.get_info(config)
  assert info.class_names == ("circle", "square", "stripes")
  assert (info.num_train_examples, info.num_eval_examples) == (12, 9)  # notes.txt ignored.
  batch = next(data.train_iterator(config, global_batch_size=8, sharding=_sharding(), seed=0))
  assert batch["image"].shape == (8, 16, 16, 3)
  batches = list(data.eval_iterator(config, global_batch_size=8, sharding=_sharding()))
  labels = np.concatenate([np.asarray(b["label"])[np.asarray(b["mask"])] for b in batches])
  np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1, 2, 2, 2])
  # Greyscale files come out with 3 equal channels.
  grey = np.asarray(batches[0]["image"][0])
  np.testing.assert_array_equal(grey[..., 0], grey[..., 2])


def test_video_folder_mp4_and_webm(video_folder):
  config = _config(video_folder, num_frames=8, stride=2, flip=False, num_test_clips=2,
                   num_test_crops=3)
  info = data.get_info(config)
  assert info.is_video and info.class_names == ("left", "right")
  train = next(data.train_iterator(config, global_batch_size=8, sharding=_sharding(), seed=0))
  assert train["image"].shape == (8, 8, 16, 16, 3)
  batches = list(data.eval_iterator(config, global_batch_size=8, sharding=_sharding()))
  assert len(batches) == 1 and batches[0]["image"].shape == (8, 6, 8, 16, 16, 3)
  assert int(batches[0]["mask"].sum()) == 4


def test_short_video_loops(video_folder):
  """A 6-frame video sampled as 8 frames, stride 2, wraps around: frames 0 2 4 0 2 4 0 2."""
  path = os.path.join(video_folder, "test", "right", "0.mp4")
  video = data.decode_file(path)
  assert video.shape == (6, 24, 32, 3)
  views = data.preprocess_for_eval(
      {"image_size": (24, 32), "num_frames": 8, "stride": 2}, [video])
  assert views.shape == (1, 1, 8, 24, 32, 3)
  clip = views[0, 0]
  for t, source_frame in enumerate([0, 2, 4, 0, 2, 4, 0, 2]):
    expected = video[source_frame].astype(np.float32) / 127.5 - 1
    np.testing.assert_allclose(clip[t], expected, atol=1e-5)


def test_bad_image_is_skipped_in_training_and_an_error_in_eval(image_folder, tmp_path):
  root = str(tmp_path / "bad")
  shutil.copytree(image_folder, root)
  for split in ("train", "test"):
    with open(os.path.join(root, split, "square", "broken.jpg"), "wb") as f:
      f.write(b"\xff\xd8 this is not a jpeg")
  config = _config(root)
  source = sources.open_source(config)
  before = folder.skipped_files().get(root, 0)
  ds = pipeline.train_dataset(config, source, local_batch_size=13, seed=0, start_step=0,
                              process_index=0, process_count=1)
  # 12 good files and the broken one per epoch: two full batches of 13 need >= 3 epochs,
  # so the broken file is skipped at least twice (more when tf.data reads ahead).
  batches = list(ds.take(2).as_numpy_iterator())
  assert all(b["image"].shape == (13, 16, 16, 3) for b in batches)
  assert folder.skipped_files()[root] - before >= 2
  with pytest.raises(data.BadDataError, match="Could not decode .*broken.jpg"):
    list(data.eval_iterator(config, global_batch_size=8, sharding=_sharding()))
  config.skip_bad_examples = False
  with pytest.raises(data.BadDataError, match="broken.jpg"):
    next(data.train_iterator(config, global_batch_size=16, sharding=_sharding(), seed=0))


def test_folder_errors(image_folder, tmp_path):
  with pytest.raises(FileNotFoundError, match="no 'train' sub-folder"):
    data.get_info(_config(str(tmp_path)))
  with pytest.raises(ValueError, match="no split 'validation'"):
    data.get_info(_config(image_folder, eval_split="validation"))


@pytest.mark.parametrize("name", ["1.webm", "0.mp4"])
def test_partial_video_decode(video_folder, name):
  """Counting frames needs no decode (webm headers lack a count); clips decode only a prefix."""
  path = os.path.join(video_folder, "train", "left", name)
  full = folder.decode_video_file(path)
  assert folder.count_video_frames(path) == len(full)
  indices = np.array([3, 1, 3, 5])
  np.testing.assert_array_equal(folder.decode_video_frames(path, indices), full[indices])


def test_video_whose_frames_do_not_decode(video_folder, tmp_path):
  """An mp4 whose header counts 14 frames but whose middle is garbage: the count works,
  the clip's decode fails; training skips it (counted), evaluation names it."""
  root = str(tmp_path / "bad_videos")
  shutil.copytree(video_folder, root)
  for split in ("train", "test"):
    path = os.path.join(root, split, "left", "2.mp4")
    write_video(path, np.random.default_rng(0).integers(0, 255, (14, 24, 32, 3), np.uint8))
    raw = bytearray(open(path, "rb").read())
    for i in range(len(raw) // 3, 2 * len(raw) // 3):
      raw[i] = (raw[i] * 7 + 13) % 256
    with open(path, "wb") as f:
      f.write(bytes(raw))
  assert folder.count_video_frames(path) == 14
  config = _config(root, num_frames=8, stride=1, flip=False)
  source = sources.open_source(config)
  before = folder.skipped_files().get(root, 0)
  ds = pipeline.train_dataset(config, source, local_batch_size=5, seed=0, start_step=0,
                              process_index=0, process_count=1)
  batch = next(ds.as_numpy_iterator())  # 4 good videos per epoch, 5 clips: 2 epochs.
  assert batch["image"].shape == (5, 8, 16, 16, 3)
  assert folder.skipped_files()[root] - before >= 1
  with pytest.raises(data.BadDataError, match="Could not decode .*left/2.mp4"):
    list(data.eval_iterator(config, global_batch_size=8, sharding=_sharding()))
