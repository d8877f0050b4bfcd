"""Datasets from a folder: root/<split>/<class>/<file>, images (PIL) or videos (PyAV).

    root/train/cat/001.jpg        root/train/walk/a.mp4
    root/train/dog/002.png   or   root/train/run/b.webm
    root/test/cat/003.jpg         root/test/walk/c.avi

Classes are the sub-folders of the train split, sorted by name (label i is the
i-th name); every other split may only use those names. Files in a class folder
are found recursively and sorted; files with other extensions are ignored.
Decoding goes through PIL (any mode -> RGB, so grayscale becomes 3 channels)
and PyAV, which read far more formats than TensorFlow's decoders and let a
broken file be reported with its path.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import threading
from typing import NoReturn

import numpy as np
from absl import logging

from vit_jax.errors import DataError, MissingFileError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v")

_skipped = collections.Counter()
_skipped_lock = threading.Lock()
_raised: list[str] = []  # DataErrors raised inside tf.numpy_function, first first


def raise_bad(message: str, cause: BaseException | None = None) -> NoReturn:
  """Raises DataError(message) from a numpy function of the input pipeline, remembered.

  TensorFlow turns an exception inside `tf.numpy_function` into its own error carrying the
  function's autograph traceback; the pipeline reports this message instead
  (`raised_error`).
  """
  with _skipped_lock:
    _raised.append(message)
  raise DataError(message) from cause


def raised_error(tf_message: str) -> str | None:
  """The message `raise_bad` raised that TensorFlow's error `tf_message` carries, or None.

  (TensorFlow's text holds the exception's, under its autograph traceback.) Messages
  already reported are dropped, so that a later error is not matched with a stale one.
  """
  with _skipped_lock:
    found = next((m for m in _raised if m in tf_message), None)
    _raised.clear()
    return found


@dataclasses.dataclass(frozen=True)
class FolderDataset:
  """The files of a folder dataset.

  Attributes:
    root: the folder holding one sub-folder per split.
    class_names: sorted class folder names of the train split.
    is_video: whether the files are videos.
  """

  root: str
  class_names: tuple[str, ...]
  is_video: bool

  @classmethod
  def open(cls, root: str, train_split: str = "train") -> FolderDataset:
    root = os.path.expanduser(root)
    train_dir = os.path.join(root, train_split)
    if not os.path.isdir(train_dir):
      raise MissingFileError(f"Folder dataset {root!r} has no {train_split!r} sub-folder: "
                              "expected root/<split>/<class>/<file>.")
    class_names = tuple(sorted(d for d in os.listdir(train_dir)
                               if os.path.isdir(os.path.join(train_dir, d))))
    if not class_names:
      raise DataError(f"{train_dir!r} has no class sub-folders: expected {train_dir}/<class>/<file>.")
    paths, _ = _list_files(train_dir, class_names, IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
    extensions = {os.path.splitext(p)[1].lower() for p in paths}
    is_video = bool(extensions & set(VIDEO_EXTENSIONS))
    if is_video and extensions & set(IMAGE_EXTENSIONS):
      raise DataError(f"{train_dir!r} mixes images and videos ({sorted(extensions)}); "
                       "a folder dataset holds one or the other.")
    return cls(root, class_names, is_video)

  def files(self, split: str) -> tuple[list[str], np.ndarray]:
    """Paths and int64 labels of `split`, sorted by class then path."""
    split_dir = os.path.join(self.root, split)
    if not os.path.isdir(split_dir):
      available = sorted(d for d in os.listdir(self.root) if os.path.isdir(os.path.join(self.root, d)))
      raise DataError(f"Folder dataset {self.root!r} has no split {split!r}; "
                       f"its splits are {available}.")
    folders = sorted(d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d)))
    extra = sorted(set(folders) - set(self.class_names))
    if extra:
      raise DataError(f"{split_dir!r} has classes {extra} that the train split lacks; "
                       "labels come from the train split's class folders.")
    extensions = VIDEO_EXTENSIONS if self.is_video else IMAGE_EXTENSIONS
    paths, labels = _list_files(split_dir, self.class_names, extensions)
    if not paths:
      raise DataError(f"{split_dir!r} holds no files with extensions {extensions}.")
    return paths, np.asarray(labels, np.int64)


def _list_files(split_dir, class_names, extensions):
  paths, labels, ignored = [], [], 0
  for label, name in enumerate(class_names):
    class_dir = os.path.join(split_dir, name)
    if not os.path.isdir(class_dir):
      continue
    for dirpath, dirnames, filenames in os.walk(class_dir):
      dirnames.sort()  # os.walk visits in this order: deterministic listing.
      for filename in sorted(filenames):
        if filename.lower().endswith(extensions):
          paths.append(os.path.join(dirpath, filename))
          labels.append(label)
        else:
          ignored += 1
  if ignored:
    logging.info("%s: ignored %d files without an extension in %s.", split_dir, ignored, extensions)
  return paths, labels


def decode_image_file(path: str) -> np.ndarray:
  """uint8 [H, W, 3]; grayscale, palette, RGBA and CMYK images are converted to RGB."""
  from PIL import Image

  with Image.open(path) as image:
    return np.asarray(image.convert("RGB"))


def decode_video_file(path: str) -> np.ndarray:
  """uint8 [T, H, W, 3]: every frame of the first video stream."""
  return decode_video_frames(path)


def count_video_frames(path: str) -> int:
  """Frames in the first video stream, from the header or by counting packets (no decoding)."""
  import av

  with av.open(path) as container:
    stream = container.streams.video[0]
    if stream.frames > 0:
      return stream.frames
    # WebM and some AVI headers carry no frame count; one packet holds one frame.
    count = sum(1 for packet in container.demux(stream) if packet.size)
  if not count:
    raise DataError(f"{path} has no video frames.")
  return count


def decode_video_frames(path: str, indices: np.ndarray | None = None) -> np.ndarray:
  """uint8 [K, H, W, 3]: frames `indices` (all when None) of the first video stream.

  Decodes from the start up to the last index only and keeps only the wanted
  frames, so a 16-frame clip of a long video costs neither a full decode nor
  the memory of every frame. If the stream ends before an index (a header
  that overstated the length), indices wrap around the frames that exist.
  """
  import av

  wanted = None if indices is None else {int(i) for i in indices}
  last = None if indices is None else max(wanted)
  frames, decoded = {}, 0
  with av.open(path) as container:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # Frame- and slice-threaded decoding inside FFmpeg.
    for t, frame in enumerate(container.decode(stream)):
      decoded = t + 1
      if wanted is None or t in wanted:
        frames[t] = frame.to_ndarray(format="rgb24")
      if last is not None and t >= last:
        break
  if not decoded:
    raise DataError(f"{path} has no video frames.")
  if indices is None:
    return np.stack([frames[t] for t in range(decoded)])
  if any(int(i) not in frames for i in indices):
    logging.warning("%s has %d frames, fewer than its header says; looping them.", path, decoded)
    return decode_video_frames(path)[np.asarray(indices) % decoded]
  return np.stack([frames[int(i)] for i in indices])


def decode_file(path: str) -> np.ndarray:
  """An image ([H, W, 3]) or video ([T, H, W, 3]) file as uint8, chosen by extension."""
  if path.lower().endswith(VIDEO_EXTENSIONS):
    return decode_video_file(path)
  return decode_image_file(path)


def make_loader(is_video: bool, skip_bad: bool, min_frames: int = 1, root: str | None = None):
  """A numpy function path(bytes) -> (payload, ok) for tf.numpy_function.

  Images: payload = uint8 [H, W, 3] pixels. Videos: payload = int32 frame count
  (frames are decoded later, only those a clip uses; see `decode_video_frames`).
  A file that fails (or a video with fewer than `min_frames` frames) raises a
  DataError naming it, or, with `skip_bad`, is logged, counted in
  `skipped_files()` (under `root`, default the folder above the split folder) and
  returned as ok=False so that the pipeline can filter it out.
  """
  if is_video:
    def load(path):
      count = count_video_frames(path)
      if count < min_frames:
        raise _TooShort(f"it has {count} frames, fewer than data.min_frames={min_frames}")
      return np.int32(count)
    empty = np.int32(1)
  else:
    load, empty = decode_image_file, np.zeros((1, 1, 3), np.uint8)

  def fn(path: bytes):
    path = path.decode()
    try:
      return load(path), np.bool_(True)
    except Exception as e:  # PIL and PyAV raise many types for broken files.
      problem = (f"{path}: {e}" if isinstance(e, _TooShort)
                 else f"Could not decode {path}: {e!r}")
      if not skip_bad:
        raise_bad(f"{problem}. Fix or delete the file.", e)
      note_skipped(root or os.path.dirname(os.path.dirname(os.path.dirname(path))), problem)
      return empty, np.bool_(False)

  return fn


class _TooShort(DataError):
  """A video that decodes but has fewer frames than data.min_frames."""


def unusable_files(paths: list[str], is_video: bool, min_frames: int = 1,
                   threads: int = 8) -> list[tuple[str, str]]:
  """(path, problem) of the files that cannot be read, found without decoding them all.

  Images: PIL reads the header and `verify()` checks the file's structure (a PNG's
  chunk checksums); pixels that are damaged past a sound structure are only found when
  decoded. Videos: the frame count from the header (too few for `min_frames`, or none).
  About a millisecond per file, on `threads` threads.
  """
  from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

  def check(path: str) -> str | None:
    try:
      if is_video:
        count = count_video_frames(path)
        if count < min_frames:
          return f"it has {count} frames, fewer than data.min_frames={min_frames}"
        return None
      from PIL import Image  # noqa: PLC0415

      with Image.open(path) as image:
        image.verify()
    except Exception as e:  # noqa: BLE001 (PIL and PyAV raise many types for broken files)
      return f"does not decode ({type(e).__name__}: {e})"
    return None

  with ThreadPoolExecutor(threads) as pool:
    problems = list(pool.map(check, paths))
  return [(path, problem) for path, problem in zip(paths, problems) if problem]


def note_skipped(dataset: str, what: str, count: int = 1) -> None:
  """Logs and counts `count` examples that training skips; `dataset` is where they count."""
  with _skipped_lock:
    _skipped[dataset] += count
    count = sum(_skipped.values())
  logging.warning("Skipping %s; %d examples skipped so far.", what, count)


def make_clip_reader(skip_bad: bool, root: str):
  """A numpy function (path bytes, indices int32 [K]) -> (uint8 [K, H, W, 3], ok).

  A video whose header was fine but whose frames do not decode raises a DataError
  naming it, or with `skip_bad` is logged, counted under `root` and gives ok=False.
  """

  def fn(path: bytes, indices: np.ndarray) -> tuple[np.ndarray, np.bool_]:
    path = path.decode()
    try:
      return decode_video_frames(path, indices), np.bool_(True)
    except Exception as e:  # PyAV raises many types for broken streams.
      problem = f"Could not decode {path}: {e!r}"
      if not skip_bad:
        raise_bad(f"{problem}. Fix or delete the file.", e)
      note_skipped(root, problem)
      return np.zeros((len(indices), 1, 1, 3), np.uint8), np.bool_(False)

  return fn


def read_video_frames(path: bytes, indices: np.ndarray) -> np.ndarray:
  """tf.numpy_function wrapper of `decode_video_frames`."""
  return decode_video_frames(path.decode(), indices)


def skipped_files() -> dict[str, int]:
  """Examples skipped as bad data in this process, per dataset root (the folder of a
  folder:, manifest: or dmvr: dataset)."""
  with _skipped_lock:
    return dict(_skipped)
