"""DMVR TFRecords: shards the writer makes from a video folder, read like every other source."""

from __future__ import annotations

import io
import json
import os
import shutil

import jax
import numpy as np
import pytest
import tensorflow as tf
from jax.sharding import NamedSharding, PartitionSpec
from PIL import Image

from vit_jax import data
from vit_jax.data import dmvr, dmvr_writer, folder, pipeline, sources


def _sharding(num_devices=8):
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:num_devices]), ("data",))
  return NamedSharding(mesh, PartitionSpec("data"))


def _config(root, **overrides):
  config = data.default_config()
  config.update(dict(dataset=f"dmvr:{root}", image_size=16, num_frames=8, stride=2, flip=False,
                     prefetch=1, shuffle_buffer=8), **overrides)
  return config


@pytest.fixture(scope="module")
def dmvr_root(video_folder, tmp_path_factory):
  """video_folder (2 classes x 2 videos of 6 and 14 frames per split) as 3 + 2 shards."""
  root = str(tmp_path_factory.mktemp("dmvr"))
  dmvr_writer.main(["--dataset", f"folder:{video_folder}", "--out", root, "--splits", "train",
                    "--num_shards", "3"])  # The command, as the module docstring gives it.
  dmvr_writer.write_dataset(f"folder:{video_folder}", root, ["test"], num_shards=2)
  return root


def _records(root, split):
  """(label, frames uint8 [N, H, W, 3]) of every record of `split`, in shard order."""
  info = dmvr.DmvrDataset.open(root).split(split)
  out = []
  for shard in info.shards:
    for serialized in tf.data.TFRecordDataset(os.path.join(root, shard)).as_numpy_iterator():
      example = tf.train.SequenceExample.FromString(serialized)
      label = example.context.feature[dmvr.LABEL_KEY].int64_list.value[0]
      frames = [np.asarray(Image.open(io.BytesIO(f.bytes_list.value[0])).convert("RGB"))
                for f in example.feature_lists.feature_list[dmvr.FRAMES_KEY].feature]
      out.append((label, np.stack(frames)))
  return out


def test_writer_files_and_feature_names(dmvr_root, video_folder):
  names = sorted(os.listdir(dmvr_root))
  assert names == ["dmvr_info.json", "test-00000-of-00002", "test-00001-of-00002",
                   "train-00000-of-00003", "train-00001-of-00003", "train-00002-of-00003"]
  serialized = next(iter(tf.data.TFRecordDataset(
      os.path.join(dmvr_root, "test-00000-of-00002")).as_numpy_iterator()))
  example = tf.train.SequenceExample.FromString(serialized)
  assert set(example.context.feature) == {"clip/label/index", "clip/label/text", "video/filename"}
  assert set(example.feature_lists.feature_list) == {"image/encoded"}
  label = example.context.feature["clip/label/index"].int64_list.value[0]
  text = example.context.feature["clip/label/text"].bytes_list.value[0].decode()
  filename = example.context.feature["video/filename"].bytes_list.value[0].decode()
  assert text == ("left", "right")[label] and filename.startswith(f"test/{text}/")
  frames = example.feature_lists.feature_list["image/encoded"].feature
  original = folder.decode_video_file(os.path.join(video_folder, filename))
  assert len(frames) == len(original)
  first = np.asarray(Image.open(io.BytesIO(frames[0].bytes_list.value[0])))
  assert first.shape == (24, 32, 3)
  assert np.abs(first.astype(int) - original[0]).mean() < 8  # JPEG at quality 90.


def test_read_train_and_exact_eval(dmvr_root):
  config = _config(dmvr_root, num_test_clips=2, num_test_crops=3)
  info = data.get_info(config)
  assert info.is_video and info.class_names == ("left", "right")
  assert (info.num_train_examples, info.num_eval_examples) == (4, 4)
  train = next(data.train_iterator(config, global_batch_size=8, sharding=_sharding(), seed=0))
  assert train["image"].shape == (8, 8, 16, 16, 3)
  assert sorted(np.asarray(train["label"])[:4]) == [0, 0, 1, 1]  # One epoch: each video once.
  batches = list(data.eval_iterator(config, global_batch_size=8, sharding=_sharding()))
  assert len(batches) == 1 and batches[0]["image"].shape == (8, 6, 8, 16, 16, 3)
  mask = np.asarray(batches[0]["mask"])
  assert mask.sum() == 4
  # Every record once, in shard order, preprocessed exactly as a decoded video would be.
  records = _records(dmvr_root, "test")
  np.testing.assert_array_equal(np.asarray(batches[0]["label"])[mask], [r[0] for r in records])
  expected = data.preprocess_for_eval(config, [r[1] for r in records])
  np.testing.assert_allclose(np.asarray(batches[0]["image"])[mask], expected, atol=1e-5)


def test_processes_split_records_exactly(dmvr_root):
  """2 and 3 processes read contiguous shares across shard borders: all records, once."""
  config = _config(dmvr_root)
  source = sources.open_source(config)
  everything = [r[0] for r in _records(dmvr_root, "train")]
  for count in (2, 3):
    labels, wheres = [], []
    for p in range(count):
      ds = source.read("train", p, count)
      rows = list(ds.as_numpy_iterator())
      assert len(rows) == source.num_examples("train", p, count)
      labels += [int(r["label"]) for r in rows]
      wheres += [r["where"].decode() for r in rows]
    assert labels == everything
    assert len(set(wheres)) == 4 and wheres[0].endswith("train-00000-of-00003 record 0")


def _bad_records(video_folder):
  """Serialized records: good, a truncated JPEG frame 3, no frames, label 7 (of 2 classes)."""
  frames = folder.decode_video_file(os.path.join(video_folder, "train", "left", "1.webm"))
  good = dmvr_writer.encode_video(frames, 0, "left", "good.webm")
  truncated = tf.train.SequenceExample.FromString(good)
  frame = truncated.feature_lists.feature_list["image/encoded"].feature[3].bytes_list
  frame.value[0] = frame.value[0][:len(frame.value[0]) // 2]
  return {"good": good, "truncated": truncated.SerializeToString(),
          "empty": dmvr_writer.encode_video(frames[:0], 1, "right", "empty.webm"),
          "label": dmvr_writer.encode_video(frames, 7, "seven", "seven.webm")}


def _write(root, records):
  os.makedirs(root)
  split = dmvr_writer.write_split(records, root, "train", 1)
  dmvr_writer.write_info(root, ["left", "right"], {"train": split})
  return os.path.join(root, "train-00000-of-00001")


def test_bad_records_skipped_in_training_and_an_error_in_eval(video_folder, tmp_path):
  r = _bad_records(video_folder)
  root = str(tmp_path / "mixed")
  _write(root, [r["good"], r["truncated"], r["empty"], r["label"], r["good"]])
  # stride 1 and 14 frames: every clip includes frame 3, the truncated one.
  config = _config(root, stride=1, num_frames=14, eval_split="train")
  source = sources.open_source(config)
  before = folder.skipped_files().get(root, 0)
  ds = pipeline.train_dataset(config, source, local_batch_size=4, seed=0, start_step=0,
                              process_index=0, process_count=1)
  batch = next(ds.as_numpy_iterator())
  assert batch["image"].shape == (4, 14, 16, 16, 3)
  np.testing.assert_array_equal(batch["label"], [0, 0, 0, 0])  # Only the two good records.
  assert folder.skipped_files()[root] - before >= 3  # 3 bad records per epoch, 2 epochs read.
  for name, problem in (("truncated", "record 1 frame 3 of the clip does not decode"),
                        ("empty", "record 1 has no frames"),
                        ("label", "record 1 has label 7, outside the 2 classes")):
    shard = _write(str(tmp_path / name), [r["good"], r[name]])
    config = _config(os.path.dirname(shard), stride=1, num_frames=14, eval_split="train")
    with pytest.raises(data.BadDataError, match=f"{shard} {problem}"):
      list(data.eval_iterator(config, global_batch_size=8, sharding=_sharding()))
    config.skip_bad_examples = False
    with pytest.raises(data.BadDataError, match=f"{shard} {problem}"):
      next(data.train_iterator(config, global_batch_size=8, sharding=_sharding(), seed=0))
  # min_frames: the 14-frame good records are too short for 20.
  config = _config(root, min_frames=20, eval_split="train")
  with pytest.raises(data.BadDataError, match="record 0 has 14 frames, fewer than "
                                              "data.min_frames=20"):
    list(data.eval_iterator(config, global_batch_size=8, sharding=_sharding()))


def test_index_and_stale_shards(dmvr_root, tmp_path):
  root = str(tmp_path / "copy")
  shutil.copytree(dmvr_root, root)
  with open(os.path.join(root, dmvr.INFO_FILE)) as f:
    written = json.load(f)
  os.remove(os.path.join(root, dmvr.INFO_FILE))
  with pytest.raises(FileNotFoundError, match="python -m vit_jax.data.dmvr_writer --index"):
    data.get_info(_config(root))
  dmvr_writer.main(["--index", root])
  with open(os.path.join(root, dmvr.INFO_FILE)) as f:
    assert json.load(f) == written  # Class names from clip/label/text, counts and sizes.
  assert data.get_info(_config(root, train_split="train@3")).num_train_examples == 4
  with pytest.raises(ValueError, match="has 3 shards of 'train', not 128"):
    data.get_info(_config(root, train_split="train@128"))
  with open(os.path.join(root, "test-00001-of-00002"), "ab") as f:
    f.write(b"more")
  with pytest.raises(ValueError, match="the shard was rewritten. Index again"):
    data.get_info(_config(root))
  os.remove(os.path.join(root, "test-00000-of-00002"))
  with pytest.raises(FileNotFoundError, match="shards of 'test' are missing"):
    dmvr_writer.index(root)


def test_augmented_stream_is_deterministic_and_resumes(dmvr_root):
  """DMVR clips with the Kinetics chain: the same seed gives the same batches; start_step=1
  gives the second batch (the shuffle and every draw depend on the position only)."""
  config = _config(dmvr_root, augment="dmvr_color(0.8, 0.1)|random_erasing(0.25)", flip=True)
  sharding = _sharding(2)
  it = data.train_iterator(config, global_batch_size=2, sharding=sharding, seed=5)
  batches = [next(it) for _ in range(3)]
  again = data.train_iterator(config, global_batch_size=2, sharding=sharding, seed=5,
                              start_step=1)
  for expected in batches[1:]:
    got = next(again)
    np.testing.assert_array_equal(np.asarray(got["image"]), np.asarray(expected["image"]))
    np.testing.assert_array_equal(np.asarray(got["label"]), np.asarray(expected["label"]))
  other = next(data.train_iterator(config, global_batch_size=2, sharding=sharding, seed=6))
  assert not np.allclose(np.asarray(other["image"]), np.asarray(batches[0]["image"]))
