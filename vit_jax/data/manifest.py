"""Datasets listed in manifest files: one `path,label` line per image or video.

    root/train.csv        train/abseiling/0347ZoDXyP0_000095_000105.mp4,abseiling
    root/val.csv          val/abseiling/0wR5jVB-WPk_000417_000427.mp4,abseiling
    root/classes.txt      (optional) one class name per line: label i is line i

`data.dataset = "manifest:root"`; a split `s` is the file root/s.csv, root/s.tsv
(tab-separated) or root/s (any name, comma or tab decided by the extension).
Paths are relative to the manifest's folder (or absolute). Labels are class
names or integer indices. Without classes.txt the classes come from the train
manifest: its sorted label names, or with integer labels 0..max. Blank lines
and lines starting with '#' are ignored; a first line `path,label` (any order,
more columns allowed) is a header naming the columns, else the first two
columns are path and label.

A manifest is an index, so every line is checked once, when a split is first listed
(at start-up): unparsable, a file that does not exist, a label outside the classes,
an extension that is neither image nor video. Bad lines are named by manifest file
and line number (the first few) and counted. In the train split up to
`data.max_bad_fraction` of the lines (default 0) may be bad: they are reported once,
counted in `folder.skipped_files()` under the root, and left out; more is an error.
Any bad line in another split is an error, so evaluation counts every listed example.
Files that exist but do not decode are handled as in folders.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import threading

import numpy as np
from absl import logging

from vit_jax.data import folder
from vit_jax.errors import DataError, MissingFileError

PREFIX = "manifest:"
CLASSES_FILE = "classes.txt"
_SHOWN = 5  # Bad lines quoted in an error message.
# (manifest file, mtime, size, dataset) -> (paths, labels): each manifest is checked and its
# bad lines reported once per process.
_listed: dict = {}
_listed_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class ManifestDataset:
  """The manifests of a dataset (the same interface as `folder.FolderDataset`).

  Attributes:
    root: the folder holding the manifests.
    class_names: label i is class_names[i].
    is_video: whether the files are videos.
    train_split: the split whose bad lines are skipped when `skip_bad`.
  """

  root: str
  class_names: tuple[str, ...]
  is_video: bool
  train_split: str
  skip_bad: bool
  integer_labels: bool
  max_bad_fraction: float = 0.0

  @classmethod
  def open(cls, root: str, train_split: str = "train", skip_bad: bool = True,
           max_bad_fraction: float = 0.0) -> ManifestDataset:
    root = os.path.expanduser(root)
    if not os.path.isdir(root):
      raise MissingFileError(f"Manifest dataset {root!r} is not a folder: expected "
                             "root/<split>.csv with path,label lines.")
    path = manifest_path(root, train_split)
    entries, _ = _read(path)
    classes_file = os.path.join(root, CLASSES_FILE)
    labels = [label for _, _, label in entries]
    integer = all(_is_int(label) for label in labels)
    if os.path.exists(classes_file):
      with open(classes_file) as f:
        class_names = tuple(line.strip() for line in f if line.strip())
    elif integer:
      class_names = tuple(str(i) for i in range(max((int(x) for x in labels), default=-1) + 1))
    else:
      class_names = tuple(sorted(set(labels)))
    if not class_names:
      raise DataError(f"{path} lists no examples.")
    extensions = {os.path.splitext(p)[1].lower() for _, p, _ in entries}
    is_video = bool(extensions & set(folder.VIDEO_EXTENSIONS))
    if is_video and extensions & set(folder.IMAGE_EXTENSIONS):
      raise DataError(f"{path} mixes images and videos ({sorted(extensions)}); a dataset holds "
                       "one or the other.")
    return cls(root, class_names, is_video, train_split, skip_bad, integer, max_bad_fraction)

  def files(self, split: str) -> tuple[list[str], np.ndarray]:
    """Paths and int64 labels of `split`, in manifest order; bad lines left out or refused
    (the module docstring). Checked on the first call; later calls reuse the listing."""
    path = manifest_path(self.root, split)
    stat = os.stat(path)
    # The dataset is opened several times at start-up (info, train and eval streams).
    key = (path, stat.st_mtime_ns, stat.st_size, self)
    with _listed_lock:
      if key not in _listed:
        _listed[key] = self._check(split)
      paths, labels = _listed[key]
    return list(paths), labels.copy()

  def _check(self, split: str) -> tuple[list[str], np.ndarray]:
    path = manifest_path(self.root, split)
    entries, bad = _read(path)
    index = {name: i for i, name in enumerate(self.class_names)}
    extensions = folder.VIDEO_EXTENSIONS if self.is_video else folder.IMAGE_EXTENSIONS
    base = os.path.dirname(path)
    paths, labels = [], []
    for line, file, label in entries:
      full = os.path.join(base, file)
      if _is_int(label) and (self.integer_labels or label not in index):
        label_index = int(label) if 0 <= int(label) < len(self.class_names) else None
      else:
        label_index = index.get(label)
      if label_index is None:
        bad.append((line, f"label {label!r} is not one of the {len(self.class_names)} classes"))
      elif not file.lower().endswith(extensions):
        bad.append((line, f"{file!r} does not end with one of {extensions}"))
      elif not os.path.exists(full):
        bad.append((line, f"{full} does not exist"))
      else:
        paths.append(full)
        labels.append(label_index)
    if bad:
      bad.sort()
      total = len(bad) + len(paths)
      train = split == self.train_split
      allowed = self.max_bad_fraction if (train and self.skip_bad) else 0.0
      shown = "\n".join(f"  {path}:{line}: {problem}" for line, problem in bad[:_SHOWN])
      more = f"\n  ... and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
      if len(bad) > allowed * total:
        if train:
          fix = ("Fix or remove them, or leave them out of training with "
                 f"--config.data.max_bad_fraction={_fraction_ceiling(len(bad), total)} "
                 "(and data.skip_bad_examples=True).")
        else:
          fix = "Fix or remove them: an evaluation split must be clean (every line counts)."
        raise DataError(f"{path} has {len(bad)} bad lines of {total} "
                        f"({100 * len(bad) / total:.1f}%; data.max_bad_fraction={allowed}):\n"
                        f"{shown}{more}\n{fix}")
      logging.warning("%s: leaving out %d bad lines of %d (%.1f%%, within "
                      "data.max_bad_fraction=%s):\n%s%s", path, len(bad), total,
                      100 * len(bad) / total, allowed, shown, more)
      folder.note_skipped(self.root, f"{len(bad)} bad lines of {path}", count=len(bad))
    if not paths:
      raise DataError(f"{path} lists no usable examples.")
    return paths, np.asarray(labels, np.int64)


def _fraction_ceiling(bad: int, total: int) -> str:
  """The smallest two-decimal fraction that allows `bad` of `total` (at least 0.01)."""
  return f"{max(0.01, -(-100 * bad // total) / 100):.2f}"


def manifest_path(root: str, split: str) -> str:
  """root/split.csv, root/split.tsv or root/split, whichever exists."""
  for name in (f"{split}.csv", f"{split}.tsv", split):
    path = os.path.join(root, name)
    if os.path.isfile(path):
      return path
  available = sorted(f for f in os.listdir(root) if f.endswith((".csv", ".tsv")))
  raise DataError(f"Manifest dataset {root!r} has no split {split!r}: no {split}.csv, "
                   f"{split}.tsv or {split} there (manifests: {available}). Set "
                   "data.train_split / data.eval_split.")


def _read(path: str) -> tuple[list[tuple[int, str, str]], list[tuple[int, str]]]:
  """(line number, path, label) entries and (line number, problem) for unparsable lines."""
  delimiter = "\t" if path.endswith(".tsv") else ","
  entries, bad = [], []
  columns = (0, 1)
  with open(path, newline="") as f:
    first = True
    for number, row in enumerate(csv.reader(f, delimiter=delimiter), start=1):
      row = [field.strip() for field in row]
      if not any(row) or row[0].startswith("#"):
        continue
      if first:
        first = False
        names = [field.lower() for field in row]
        if "path" in names and "label" in names:
          columns = (names.index("path"), names.index("label"))
          continue
      if len(row) <= max(columns) or not row[columns[0]] or not row[columns[1]]:
        bad.append((number, f"expected path{delimiter}label, got {delimiter.join(row)!r}"))
        continue
      entries.append((number, row[columns[0]], row[columns[1]]))
  return entries, bad


def _is_int(text: str) -> bool:
  return text.lstrip("-").isdigit()
