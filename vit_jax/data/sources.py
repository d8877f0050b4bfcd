"""Where examples come from: TFDS datasets (catalogue or bundled), folders, manifests, DMVR.

A source reads one process's share of a split, in a fixed order, as a
tf.data.Dataset of {"raw": ..., "label": int64 []} where "raw" is whatever is
cheapest to carry before shuffling (encoded bytes, frames or a file path), and
`load` turns "raw" into pixels or encoded bytes that `preprocess` understands,
plus an "ok" flag for examples to skip (files that failed to decode, bad
records) and, for videos, "length" (frames). `clip_frames` decodes the frames
of one clip of a video.
"""

from __future__ import annotations

import dataclasses
import difflib
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from vit_jax.data import builders, distribute, dmvr, folder, manifest, video_ops
from vit_jax.data import config as config_lib
from vit_jax.errors import DataError, UserError

FOLDER_PREFIX = "folder:"
_checked: set = set()  # (root, split, min_frames, files) that Source.check_files passed


class DatasetNotPreparedError(UserError, RuntimeError):
  """A TFDS dataset is not in the data dir and cannot be built offline."""


@dataclasses.dataclass
class Source:
  """A dataset's metadata and its readers.

  Attributes:
    name: the config's `dataset` string.
    num_classes, class_names: labels are int64 in [0, num_classes).
    is_video: examples are videos (raw frames [N, ...]) rather than images.
  """

  name: str
  num_classes: int
  class_names: tuple[str, ...]
  is_video: bool
  _builder: Any = None
  _image_key: str | None = None
  _label_key: str | None = None
  _folder: folder.FolderDataset | manifest.ManifestDataset | None = None
  _dmvr: dmvr.DmvrDataset | None = None
  _min_frames: int = 1

  def num_examples(self, split: str, process_index: int = 0, process_count: int = 1) -> int:
    """Examples of `split` that process `process_index` of `process_count` reads."""
    if self._dmvr is not None:
      return self._dmvr.num_examples(split, process_index, process_count)
    if self._folder is not None:
      start, end = distribute.host_range(len(self._folder.files(split)[0]), process_index,
                                         process_count)
      return end - start
    host_split = tfds.split_for_jax_process(split, process_index=process_index,
                                            process_count=process_count)
    return self._tfds_split_info(host_split, split).num_examples

  def read(self, split: str, process_index: int, process_count: int, *,
           shuffle_files: bool = False) -> tf.data.Dataset:
    """This process's share of `split`: {"raw", "label"} in a fixed order.

    Args:
      shuffle_files: folders only: permute the file list (seed 0) before
        splitting it between processes, so that every process sees every class
        (the listing is sorted by class). TFDS (and dmvr_writer) shuffled the
        records when they prepared the dataset.
    """
    if self._dmvr is not None:
      # Labels are checked in `load`: a bad record is skipped in training.
      return self._dmvr.read(split, process_index, process_count)
    if self._folder is not None:
      paths, labels = self._folder.files(split)
      if shuffle_files:
        # A fixed permutation: the same on every process and in every run.
        perm = np.random.default_rng(0).permutation(len(paths))
        paths, labels = [paths[i] for i in perm], labels[perm]
      start, end = distribute.host_range(len(paths), process_index, process_count)
      ds = tf.data.Dataset.from_tensor_slices({"raw": paths[start:end], "label": labels[start:end]})
    else:
      host_split = tfds.split_for_jax_process(split, process_index=process_index,
                                              process_count=process_count)
      self._tfds_split_info(host_split, split)
      feature = self._builder.info.features[self._image_key]
      decoders = None
      if isinstance(feature, (tfds.features.Image, tfds.features.Video)):
        # Decode after shuffling, and for videos only the frames a clip uses.
        decoders = {self._image_key: tfds.decode.SkipDecoding()}
      ds = self._builder.as_dataset(
          split=host_split, shuffle_files=False, decoders=decoders,
          read_config=tfds.ReadConfig(try_autocache=False, add_tfds_id=False))
      image_key, label_key = self._image_key, self._label_key
      ds = ds.map(lambda ex: {"raw": ex[image_key], "label": tf.cast(ex[label_key], tf.int64)})
    return ds.map(self._check_label)

  def load(self, example: dict[str, tf.Tensor], *, skip_bad: bool) -> dict[str, tf.Tensor]:
    """Adds "ok" (False: an example to skip) and, for videos, "length" (frames).

    Folder images are decoded here ("raw" becomes uint8 [H, W, 3]); videos keep
    their path or encoded frames in "raw" and are decoded by `clip_frames`.
    """
    if self._dmvr is not None:
      checker = dmvr.make_checker(self.num_classes, self._min_frames, skip_bad)
      length = tf.shape(example["raw"])[0]
      ok = tf.numpy_function(checker, [example["where"], example["label"], length], tf.bool,
                             stateful=False)
      ok.set_shape([])
      return {**example, "length": length, "ok": ok}
    if self._folder is None:
      if self.is_video:
        return {**example, "length": video_ops.num_available(example["raw"]),
                "ok": tf.constant(True)}
      return {**example, "ok": tf.constant(True)}
    loader = folder.make_loader(self.is_video, skip_bad, self._min_frames, self._folder.root)
    if self.is_video:
      length, ok = tf.numpy_function(loader, [example["raw"]], [tf.int32, tf.bool],
                                     stateful=False)
      length.set_shape([])
      ok.set_shape([])
      return {**example, "length": length, "ok": ok}
    pixels, ok = tf.numpy_function(loader, [example["raw"]], [tf.uint8, tf.bool], stateful=False)
    pixels.set_shape([None, None, 3])
    ok.set_shape([])
    return {**example, "raw": pixels, "ok": ok}

  @property
  def dmvr(self) -> dmvr.DmvrDataset | None:
    """The DMVR shards of a dmvr: dataset (None otherwise)."""
    return self._dmvr

  @property
  def root(self) -> str | None:
    """The folder of a folder:, manifest: or dmvr: dataset (None for TFDS)."""
    for ds in (self._folder, self._dmvr):
      if ds is not None:
        return ds.root
    return None

  def files(self, split: str) -> tuple[list[str], np.ndarray]:
    """Paths and int64 labels of a folder: or manifest: split, in listing order."""
    if self._folder is None:
      raise DataError(f"{self.name} is not a folder: or manifest: dataset; it lists no files.")
    return self._folder.files(split)

  def check_files(self, split: str) -> None:
    """Raises DataError naming the files of a folder: or manifest: `split` that cannot be
    read (folder.unusable_files); other datasets are read as they are. Once per process
    and split: the evaluation split is checked at start-up, so that a bad file is not
    met only after training."""
    if self._folder is None:
      return
    paths, _ = self._folder.files(split)
    key = (self.root, split, self._min_frames, tuple(paths))
    if key in _checked:
      return
    start = time.perf_counter()
    bad = folder.unusable_files(paths, self.is_video, self._min_frames)
    logging.info("Checked the %d files of %s %s in %.1fs: %d unusable.", len(paths), self.name,
                 split, time.perf_counter() - start, len(bad))
    if bad:
      shown = "\n".join(f"  {path}: {problem}" for path, problem in bad[:5])
      more = f"\n  ... and {len(bad) - 5} more" if len(bad) > 5 else ""
      raise DataError(f"{self.name} split {split!r} has {len(bad)} files that cannot be read:\n"
                      f"{shown}{more}\nFix or delete them (every evaluation example counts).")
    _checked.add(key)

  def clip_frames(self, example: dict[str, tf.Tensor], indices: tf.Tensor, *,
                  skip_bad: bool) -> tuple[tf.Tensor, tf.Tensor]:
    """Frames `indices` (int32 [K]) of a loaded video: (uint8 [K, H, W, 3], ok bool [])."""
    if self._folder is not None:
      reader = folder.make_clip_reader(skip_bad, self._folder.root)
      frames, ok = tf.numpy_function(reader, [example["raw"], indices], [tf.uint8, tf.bool],
                                     stateful=False)
      frames.set_shape([None, None, None, 3])
      ok.set_shape([])
      return frames, ok
    if self._dmvr is None:
      return video_ops.gather_frames(example["raw"], indices), tf.constant(True)
    decoder = dmvr.make_frame_decoder(skip_bad)
    frames, ok = tf.numpy_function(decoder, [tf.gather(example["raw"], indices), example["where"]],
                                   [tf.uint8, tf.bool], stateful=False)
    frames.set_shape([None, None, None, 3])
    ok.set_shape([])
    return frames, ok

  def _check_label(self, example):
    label = example["label"]
    check = tf.debugging.Assert(
        tf.logical_and(label >= 0, label < self.num_classes),
        [f"{self.name}: label outside [0, {self.num_classes}):", label])
    with tf.control_dependencies([check]):
      return {**example, "label": tf.identity(label)}

  def _tfds_split_info(self, host_split, split):
    try:
      return self._builder.info.splits[host_split]
    except (KeyError, ValueError) as e:
      raise DataError(f"{self.name} has no split {split!r} ({e}); its splits are "
                       f"{sorted(self._builder.info.splits)}. Set data.train_split / "
                       "data.eval_split.") from None


def open_source(data_config: Mapping[str, Any]) -> Source:
  """The Source for `data_config.dataset`; bundled datasets are prepared on first use."""
  name = data_config["dataset"]
  min_frames = data_config["min_frames"]
  if name.startswith(FOLDER_PREFIX):
    ds = folder.FolderDataset.open(name[len(FOLDER_PREFIX):], data_config["train_split"])
    return Source(name, len(ds.class_names), ds.class_names, ds.is_video, _folder=ds,
                  _min_frames=min_frames)
  if name.startswith(manifest.PREFIX):
    ds = manifest.ManifestDataset.open(name[len(manifest.PREFIX):], data_config["train_split"],
                                       data_config["skip_bad_examples"],
                                       data_config["max_bad_fraction"])
    return Source(name, len(ds.class_names), ds.class_names, ds.is_video, _folder=ds,
                  _min_frames=min_frames)
  if name.startswith(dmvr.PREFIX):
    ds = dmvr.DmvrDataset.open(name[len(dmvr.PREFIX):], data_config["image_key"],
                               data_config["label_key"])
    return Source(name, len(ds.class_names), ds.class_names, True, _dmvr=ds,
                  _min_frames=min_frames)
  builder = tfds_builder(name, config_lib.resolve_data_dir(data_config))
  features = builder.info.features
  image_key, label_key = data_config["image_key"], data_config["label_key"]
  supervised = builder.info.supervised_keys
  if isinstance(supervised, tuple) and len(supervised) == 2 and all(
      isinstance(k, str) for k in supervised):
    image_key, label_key = image_key or supervised[0], label_key or supervised[1]
  image_key = image_key or next((k for k in ("image", "video") if k in features), None)
  label_key = label_key or "label"
  if image_key not in features or label_key not in features:
    raise DataError(f"{name}: set data.image_key and data.label_key; features are "
                     f"{sorted(features)}.")
  label = features[label_key]
  if not isinstance(label, tfds.features.ClassLabel):
    raise DataError(f"{name}: feature {label_key!r} is {type(label).__name__}, not a "
                     "ClassLabel; set data.label_key to the class label feature.")
  feature = features[image_key]
  is_video = isinstance(feature, tfds.features.Video) or len(feature.shape) == 4
  return Source(name, label.num_classes, tuple(label.names), is_video, _builder=builder,
                _image_key=image_key, _label_key=label_key)


def tfds_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """The prepared builder for `name` in `data_dir`; never downloads.

  Bundled datasets are built here when missing; any other dataset that is not
  prepared raises DatasetNotPreparedError at once, with instructions.
  """
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    # TFDS's own message lists all of its ~450 names; the close ones are what helps.
    base = name.split("/")[0].split(":")[0]
    close = difflib.get_close_matches(base, sorted(set(tfds.list_builders()) | set(builders.BUNDLED)),
                                      n=4, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise DataError(f"Unknown dataset {name!r}.{hint} Use 'digits', 'moving_digits', a TFDS name "
                     "(tfds.list_builders()), 'folder:/path', 'manifest:/path' or "
                     "'dmvr:/path'.") from None
  if builder.is_prepared():
    return builder
  base = name.split("/")[0].split(":")[0]
  if base in builders.BUNDLED:
    logging.info("Preparing bundled dataset %s into %s (once).", name, data_dir)
    try:
      builder.download_and_prepare()
    except Exception:
      # Several processes sharing a data dir race to prepare; TFDS writes to a temporary
      # folder and renames it, so a loser finds the winner's copy.
      builder = tfds.builder(name, data_dir=data_dir)
      if not builder.is_prepared():
        raise
    return builder
  manual = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
  raise DatasetNotPreparedError(
      f"Dataset {name!r} is not prepared in data_dir={data_dir!r}, and this machine will not "
      f"download it. Prepare it where there is internet access:\n"
      f"  tfds build {name} --data_dir={data_dir}\n"
      f"(or python -c \"import tensorflow_datasets as tfds; "
      f"tfds.builder('{name}', data_dir='{data_dir}').download_and_prepare()\"), then copy "
      f"{data_dir}/{base} here or point data.data_dir / $VIT_JAX_DATA_DIR at a directory "
      "that holds it."
      + (f"\nThis dataset needs a manual download: {manual.strip()}" if manual else ""))

