"""DMVR-style TFRecords: the sharded video records Scenic's ViViT trains on.

    root/dmvr_info.json                 classes, shards and record counts (see below)
    root/train-00000-of-00128 ...       tf.train.SequenceExample records
    root/validation-00000-of-00016 ...

One record is one video, as DeepMind Video Reader (DMVR) writes and reads it
(dmvr/modalities.py add_image / add_label, examples/generate_from_file.py):
  context       "clip/label/index"  int64 [1]   the class index
                "clip/label/text"   bytes [1]   the class name (optional)
                "video/filename"    bytes [1]   where the frames came from (optional)
  feature_lists "image/encoded"     bytes [N]   one JPEG per frame, in order
`data.image_key` / `data.label_key` name other features. Shards are named
`<split>-<i:05d>-of-<n:05d>`; a split may also be given in Scenic's sharded
notation `<prefix>@<n>`.

dmvr_info.json holds what a reader cannot know without reading every record:
the class names, and each split's shard files, record counts and byte sizes
(a rewritten shard no longer matches and is refused). `python -m
vit_jax.data.dmvr_writer` writes it along with the shards, or indexes shards
written by other tools (`--index`).

Each process reads its contiguous share of a split's records (the same even
split as folders and TFDS: `distribute.host_range`), record by record in shard
order. Decoding happens after shuffling and only for the frames a clip uses.
A bad record (no frames, fewer than `data.min_frames`, a label outside the
classes, a frame that does not decode) is named by shard file and record index:
skipped and counted in training, an error in evaluation.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re

import numpy as np
import tensorflow as tf

from vit_jax.data import distribute, folder
from vit_jax.errors import DataError, MissingFileError

PREFIX = "dmvr:"
INFO_FILE = "dmvr_info.json"
FRAMES_KEY = "image/encoded"
LABEL_KEY = "clip/label/index"
LABEL_TEXT_KEY = "clip/label/text"
FILENAME_KEY = "video/filename"
SHARD_RE = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})$")


def shard_name(prefix: str, index: int, count: int) -> str:
  return f"{prefix}-{index:05d}-of-{count:05d}"


@dataclasses.dataclass(frozen=True)
class SplitInfo:
  """One split: shard file names (relative to the root), records and bytes per shard."""

  shards: tuple[str, ...]
  num_examples: tuple[int, ...]
  num_bytes: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class DmvrDataset:
  """A folder of DMVR shards and its dmvr_info.json.

  Attributes:
    root: the folder.
    class_names: label i is class_names[i].
    splits: split prefix -> SplitInfo.
    frames_key, label_key: the feature names read.
  """

  root: str
  class_names: tuple[str, ...]
  splits: dict[str, SplitInfo]
  frames_key: str = FRAMES_KEY
  label_key: str = LABEL_KEY

  @classmethod
  def open(cls, root: str, frames_key: str | None = None,
           label_key: str | None = None) -> DmvrDataset:
    root = os.path.expanduser(root)
    path = os.path.join(root, INFO_FILE)
    if not os.path.isdir(root):
      raise MissingFileError(f"DMVR dataset {root!r} does not exist.")
    if not os.path.exists(path):
      raise MissingFileError(
          f"{root!r} has no {INFO_FILE} (class names and record counts). Write it once with\n"
          f"  python -m vit_jax.data.dmvr_writer --index {root} [--classes classes.txt]\n"
          "(it reads every record once), or write the shards with vit_jax.data.dmvr_writer.")
    with open(path) as f:
      info = json.load(f)
    splits = {name: SplitInfo(tuple(s["shards"]), tuple(s["num_examples"]), tuple(s["num_bytes"]))
              for name, s in info["splits"].items()}
    return cls(root, tuple(info["class_names"]), splits, frames_key or FRAMES_KEY,
               label_key or LABEL_KEY)

  def split(self, split: str) -> SplitInfo:
    """The SplitInfo of `split` ("train" or Scenic's "train@128"), its shards checked."""
    name = split
    if "@" in split:
      name, count = split.rsplit("@", 1)
      if name in self.splits and count.isdigit() and int(count) != len(self.splits[name].shards):
        raise DataError(f"{split!r}: {self.root} has {len(self.splits[name].shards)} shards of "
                         f"{name!r}, not {count}.")
    if name not in self.splits:
      raise DataError(f"DMVR dataset {self.root!r} has no split {split!r}; its splits are "
                       f"{sorted(self.splits)} (from {INFO_FILE}). Set data.train_split / "
                       "data.eval_split.")
    info = self.splits[name]
    for shard, size in zip(info.shards, info.num_bytes):
      path = os.path.join(self.root, shard)
      if not os.path.exists(path):
        raise MissingFileError(f"{path} is missing ({INFO_FILE} lists it).")
      if os.path.getsize(path) != size:
        raise DataError(f"{path} has {os.path.getsize(path)} bytes, {INFO_FILE} says {size}: the "
                         f"shard was rewritten. Index again: python -m vit_jax.data.dmvr_writer "
                         f"--index {self.root}")
    return info

  def num_examples(self, split: str, process_index: int = 0, process_count: int = 1) -> int:
    start, end = distribute.host_range(sum(self.split(split).num_examples), process_index,
                                       process_count)
    return end - start

  def read(self, split: str, process_index: int, process_count: int) -> tf.data.Dataset:
    """This process's records of `split` in shard order.

    Returns:
      {"raw": string [N] (JPEG frames), "label": int64 [] (-1 when the record has
       not exactly one), "where": string [] ("<shard path> record <i>")}.
    """
    paths, firsts, counts = self._pieces(split, process_index, process_count)

    def records(path, first, count):
      ds = tf.data.TFRecordDataset(path).skip(first).take(count).enumerate(first)
      return ds.map(lambda i, r: (tf.strings.join([path, " record ", tf.strings.as_string(i)]), r))

    pieces = tf.data.Dataset.from_tensor_slices(
        (tf.constant(paths, tf.string), tf.constant(firsts, tf.int64),
         tf.constant(counts, tf.int64)))
    return pieces.flat_map(records).map(self._parse)

  def _pieces(self, split: str, process_index: int, process_count: int
              ) -> tuple[list[str], list[int], list[int]]:
    """This process's (shard path, first record, record count) pieces of `split`."""
    info = self.split(split)
    start, end = distribute.host_range(sum(info.num_examples), process_index, process_count)
    paths, firsts, counts = [], [], []
    offset = 0
    for shard, count in zip(info.shards, info.num_examples):
      lo, hi = max(start - offset, 0), min(end - offset, count)
      if lo < hi:
        paths.append(os.path.join(self.root, shard))
        firsts.append(lo)
        counts.append(hi - lo)
      offset += count
    return paths, firsts, counts

  def find_damaged_record(self, split: str, process_index: int = 0,
                          process_count: int = 1) -> str | None:
    """"<shard path> record <i>: <TensorFlow's message>" of the first record of this
    process's share that TFRecord framing or checksums reject, or None.

    tf.data reports a corrupted record by byte offset only ("corrupted record at 13432"),
    without the file; this reads this process's shards one by one to name it (once,
    when a run has already failed).
    """
    for path, first, count in zip(*self._pieces(split, process_index, process_count)):
      good = 0  # records read before the damaged one
      try:
        for _ in tf.data.TFRecordDataset(path).take(first + count):
          good += 1
      except tf.errors.OpError as e:
        return (f"{path} record {good}: {tf_error_text(e.message)}. The shard is damaged: "
                "copy it again, or remove it and index the rest: python -m "
                f"vit_jax.data.dmvr_writer --index {self.root}")
    return None

  def _parse(self, where, serialized):
    context, sequence = tf.io.parse_single_sequence_example(
        serialized, context_features={self.label_key: tf.io.VarLenFeature(tf.int64)},
        sequence_features={self.frames_key: tf.io.FixedLenSequenceFeature([], tf.string)})
    labels = context[self.label_key].values
    label = tf.cond(tf.size(labels) == 1, lambda: labels[0], lambda: tf.constant(-1, tf.int64))
    return {"raw": sequence[self.frames_key], "label": label, "where": where}


def tf_error_text(message: str) -> str:
  """TensorFlow's error without its op wrapper: "{{function_node ...}} corrupted record at
  12 [Op:IteratorGetNext] name:" -> "corrupted record at 12"."""
  line = re.sub(r"\{\{[^}]*\}\}", "", message.strip().splitlines()[0])
  return re.sub(r"\s*\[Op:[^\]]*\].*$", "", line).strip()


def make_checker(num_classes: int, min_frames: int, skip_bad: bool):
  """A numpy function (where, label, length) -> ok for tf.numpy_function.

  A record with fewer than `min_frames` frames or a label outside [0, num_classes)
  raises a DataError naming it, or with `skip_bad` is logged, counted in
  `folder.skipped_files()` (under the shard's folder) and returns False.
  """

  def fn(where: bytes, label: np.int64, length: np.int32) -> np.bool_:
    where = where.decode()
    if length < min_frames:
      problem = (f"has {length} frames, fewer than data.min_frames={min_frames}" if length
                 else f"has no frames (no {FRAMES_KEY!r} feature list)")
    elif not 0 <= label < num_classes:
      problem = (f"has label {label}, outside the {num_classes} classes" if label >= 0 else
                 "has no single label (clip/label/index)")
    else:
      return np.bool_(True)
    return np.bool_(_bad(where, problem, skip_bad))

  return fn


def make_frame_decoder(skip_bad: bool):
  """A numpy function (encoded frames [K], where) -> (uint8 [K, H, W, 3], ok).

  JPEG (or PNG) frames decoded with PIL; a frame that does not decode, or frames
  of different sizes, raise a DataError naming the record and the frame, or
  with `skip_bad` are logged and counted and give ok=False (and 1x1 frames).
  """
  from PIL import Image

  def fn(encoded: np.ndarray, where: bytes) -> tuple[np.ndarray, np.bool_]:
    frames = []
    for i, data in enumerate(encoded):
      try:
        with Image.open(io.BytesIO(data)) as image:
          frames.append(np.asarray(image.convert("RGB")))
      except Exception as e:  # PIL raises many types for broken data.
        _bad(where.decode(), f"frame {i} of the clip does not decode ({e!r})", skip_bad)
        return np.zeros((len(encoded), 1, 1, 3), np.uint8), np.bool_(False)
    if len({f.shape for f in frames}) > 1:
      _bad(where.decode(), f"has frames of different sizes {sorted({f.shape for f in frames})}",
           skip_bad)
      return np.zeros((len(encoded), 1, 1, 3), np.uint8), np.bool_(False)
    return np.stack(frames), np.bool_(True)

  return fn


def _bad(where: str, problem: str, skip_bad: bool) -> bool:
  if not skip_bad:
    folder.raise_bad(f"{where} {problem}. Fix or remove the record.")
  folder.note_skipped(os.path.dirname(where.rsplit(" record ", 1)[0]), f"{where} {problem}")
  return False
