"""Manifest datasets: path,label files next to the images or videos, bad lines."""

from __future__ import annotations

import os
import re

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from vit_jax import data
from vit_jax.data import folder, pipeline, sources
from vit_jax.errors import DataError


def _sharding(num_devices=8):
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:num_devices]), ("data",))
  return NamedSharding(mesh, PartitionSpec("data"))


def _files(root, split):
  """(relative path, class name) of a folder dataset's split, sorted as the folder lists them."""
  paths, labels = folder.FolderDataset.open(root).files(split)
  names = folder.FolderDataset.open(root).class_names
  return [(os.path.relpath(p, root), names[label]) for p, label in zip(paths, labels)]


def _write(path, lines):
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


def test_image_manifest_names_and_indices(image_folder, tmp_path):
  """train.csv with names (and a header); test.csv with indices, in its own order; paths
  relative to the manifest's folder."""
  root = str(tmp_path)
  relative = os.path.relpath(image_folder, root)
  train, test = _files(image_folder, "train"), _files(image_folder, "test")
  _write(os.path.join(root, "train.csv"),
         ["# Kinetics-style list", "path,label"] + [f"{relative}/{p},{n}" for p, n in train])
  classes = ("circle", "square", "stripes")
  test = test[::-1]  # Manifest order, not the folder's.
  _write(os.path.join(root, "test.csv"),
         [f"{relative}/{p},{classes.index(n)}" for p, n in test])
  config = data.default_config()
  config.update(dataset=f"manifest:{root}", image_size=16, prefetch=1)
  info = data.get_info(config)
  assert info.class_names == classes and not info.is_video
  assert (info.num_train_examples, info.num_eval_examples) == (12, 9)
  batch = next(data.train_iterator(config, global_batch_size=8, sharding=_sharding(), seed=0))
  assert batch["image"].shape == (8, 16, 16, 3)
  batches = list(data.eval_iterator(config, global_batch_size=8, sharding=_sharding()))
  labels = np.concatenate([np.asarray(b["label"])[np.asarray(b["mask"])] for b in batches])
  np.testing.assert_array_equal(labels, [classes.index(n) for _, n in test])
  # The same images as the folder dataset gives, in the manifest's order.
  as_folder = dict(config, dataset=f"folder:{image_folder}")
  folder_batches = list(data.eval_iterator(as_folder, global_batch_size=16, sharding=_sharding()))
  images = np.concatenate([np.asarray(b["image"])[np.asarray(b["mask"])] for b in batches])
  folder_images = np.asarray(folder_batches[0]["image"])[:9]
  np.testing.assert_array_equal(images, folder_images[::-1])


def test_video_manifest_tsv_with_classes_file(video_folder, tmp_path):
  """Tab-separated, label column second in a wider header, classes.txt fixing the order."""
  root = str(tmp_path)
  for split in ("train", "test"):
    _write(os.path.join(root, f"{split}.tsv"),
           ["label\tpath\tstart"] + [f"{n}\t{os.path.join(video_folder, p)}\t0"
                                     for p, n in _files(video_folder, split)])
  _write(os.path.join(root, "classes.txt"), ["right", "left"])
  config = data.default_config()
  config.update(dataset=f"manifest:{root}", image_size=16, num_frames=4, flip=False, prefetch=1)
  info = data.get_info(config)
  assert info.is_video and info.class_names == ("right", "left")
  train = next(data.train_iterator(config, global_batch_size=8, sharding=_sharding(), seed=0))
  assert train["image"].shape == (8, 4, 16, 16, 3)
  batches = list(data.eval_iterator(config, global_batch_size=8, sharding=_sharding()))
  np.testing.assert_array_equal(np.asarray(batches[0]["label"])[:4], [1, 1, 0, 0])
  # Videos shorter than data.min_frames: skipped in training, an error in evaluation.
  config.min_frames = 10  # The 6-frame videos are too short, the 14-frame ones are not.
  source = sources.open_source(config)
  ds = pipeline.train_dataset(config, source, local_batch_size=4, seed=0, start_step=0,
                              process_index=0, process_count=1)
  assert next(ds.as_numpy_iterator())["image"].shape == (4, 4, 16, 16, 3)
  assert folder.skipped_files()[root] >= 2
  with pytest.raises(data.BadDataError, match=r"0\.mp4: it has 6 frames, fewer than data\.min_frames=10"):
    list(data.eval_iterator(config, global_batch_size=8, sharding=_sharding()))


def test_bad_lines_refused_or_left_out_once_by_fraction_and_an_error_in_eval(image_folder,
                                                                               tmp_path):
  root = str(tmp_path)
  good = [f"{os.path.join(image_folder, p)},{n}" for p, n in _files(image_folder, "train")]
  lines = good[:6] + ["only-a-path.png", f"{image_folder}/missing.png,circle",
                      f"{good[0].split(',')[0]},dog", f"{image_folder}/notes.txt,circle"] + good[6:]
  _write(os.path.join(root, "train.csv"), lines)
  _write(os.path.join(root, "test.csv"), good)
  _write(os.path.join(root, "classes.txt"), ["circle", "square", "stripes"])
  config = data.default_config()
  config.update(dataset=f"manifest:{root}", image_size=16, prefetch=1)
  train = os.path.join(root, "train.csv")
  # By default (data.max_bad_fraction=0) any bad line is refused when the dataset opens,
  # with the counts and the fraction that would allow them.
  with pytest.raises(DataError, match=(
      rf"{train} has 4 bad lines of 16 \(25\.0%; data\.max_bad_fraction=0\.0\):\n"
      rf"  {train}:7: expected path,label(.|\n)*--config\.data\.max_bad_fraction=0\.25 ")):
    data.get_info(config)
  config.max_bad_fraction = 0.2
  with pytest.raises(DataError, match=r"4 bad lines of 16 \(25\.0%; data\.max_bad_fraction=0\.2\)"):
    data.get_info(config)
  # Allowed: left out and counted once per process, however often the dataset is opened.
  config.max_bad_fraction = 0.25
  before = folder.skipped_files().get(root, 0)
  info = data.get_info(config)
  data.get_info(config)
  assert info.num_train_examples == 12 and info.class_names == ("circle", "square", "stripes")
  assert folder.skipped_files()[root] - before == 4
  source = sources.open_source(config)
  ds = pipeline.train_dataset(config, source, local_batch_size=12, seed=0, start_step=0,
                              process_index=0, process_count=1)
  assert next(ds.as_numpy_iterator())["image"].shape == (12, 16, 16, 3)
  test = os.path.join(root, "test.csv")
  _write(test, lines)  # Found when the run starts (get_info counts the eval split).
  expected = (f"{test} has 4 bad lines of 16 (25.0%; data.max_bad_fraction=0.0):\n"
              f"  {test}:7: expected path,label, got 'only-a-path.png'\n"
              f"  {test}:8: {image_folder}/missing.png does not exist\n"
              f"  {test}:9: label 'dog' is not one of the 3 classes\n"
              f"  {test}:10: '{image_folder}/notes.txt' does not end with one of")
  with pytest.raises(ValueError, match=re.escape(expected)):
    data.get_info(config)
  with pytest.raises(ValueError, match=re.escape(expected)):
    list(data.eval_iterator(config, global_batch_size=8, sharding=_sharding()))
  _write(test, good)
  # Without skipping, training refuses any bad line whatever the fraction allows.
  config.skip_bad_examples = False
  with pytest.raises(ValueError, match=r"train.csv has 4 bad lines of 16 \(25\.0%; "
                     r"data\.max_bad_fraction=0\.0\)"):
    data.get_info(config)
  with pytest.raises(ValueError, match="no split 'val': no val.csv"):
    data.get_info(dict(config, eval_split="val", skip_bad_examples=True))
