"""Workdir paths that may be local or in a bucket (gs://, s3://), through one API.

The driver writes its workdir (config.json, metrics.jsonl, results.json, TensorBoard
events, Orbax checkpoints) through `etils.epath`, which maps local paths to the OS and
gs:// to TensorFlow's GCS file system (or fsspec's gcsfs when TensorFlow is absent), so
`--workdir gs://bucket/run` works on every host of a TPU slice without a FUSE mount.
Orbax reads and writes gs:// checkpoints natively. Only local paths are tested here (no
cloud access); the same code runs on both.

Why not gcsfuse for the workdir: on a flat bucket a directory rename (Orbax's atomic
commit of each checkpoint) is a copy and delete of every file, metadata caching is unsafe
with several writers, and a file open for append reaches the bucket only when closed.
"""

from __future__ import annotations

import os
from typing import IO

from etils import epath

REMOTE_PREFIXES = ("gs://", "s3://")


def is_remote(path: str | os.PathLike) -> bool:
  return str(path).startswith(REMOTE_PREFIXES)


def absolute(path: str | os.PathLike) -> str:
  """An absolute local path, or the bucket URL unchanged (os.path.abspath would mangle it)."""
  return str(path) if is_remote(path) else os.path.abspath(path)


def path(p: str | os.PathLike) -> epath.Path:
  return epath.Path(absolute(p))


def join(base: str | os.PathLike, *parts: str) -> str:
  return str(epath.Path(str(base)).joinpath(*parts))


def exists(p: str | os.PathLike) -> bool:
  return path(p).exists()


def is_dir(p: str | os.PathLike) -> bool:
  return path(p).is_dir()


def listdir(p: str | os.PathLike) -> list[str]:
  return [child.name for child in path(p).iterdir()]


def makedirs(p: str | os.PathLike) -> None:
  path(p).mkdir(parents=True, exist_ok=True)


def read_text(p: str | os.PathLike) -> str:
  return path(p).read_text()


def open_append(p: str | os.PathLike) -> IO[str]:
  """A text file opened for appending; on GCS every flush() uploads it whole."""
  return path(p).open("a")


def write_text_atomic(p: str | os.PathLike, text: str) -> None:
  """Writes through a temporary file and a rename: a reader never sees half a file.

  On GCS the rename is a copy of one object, and an object appears only once complete.
  """
  target = path(p)
  tmp = target.with_name(target.name + ".tmp")
  tmp.write_text(text)
  tmp.replace(target)
