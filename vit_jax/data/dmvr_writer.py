"""Writes DMVR TFRecord shards (vit_jax/data/dmvr.py) from videos, or indexes existing shards.

    python -m vit_jax.data.dmvr_writer --dataset folder:/data/videos --out /data/videos_dmvr \\
        --splits train,val --num_shards 128 [--resize_small 256] [--quality 90]
    python -m vit_jax.data.dmvr_writer --index /data/ssv2_tfrecords [--classes classes.txt]

The first form reads every video of each split of a dataset the pipeline reads
(`folder:` or `manifest:` of videos), decodes all its frames (PyAV), optionally
resizes them so the shorter side is `resize_small`, and writes one
SequenceExample per video (JPEG frames in "image/encoded", "clip/label/index",
"clip/label/text", "video/filename"). The videos are shuffled with a fixed seed
and dealt round-robin to `<split>-<i:05d>-of-<n:05d>` (as DMVR's
generate_from_file.py deals them), so every shard and every process's share
mixes the classes. Then train with `--config.data.dataset=dmvr:/data/videos_dmvr`.

The second form reads every record of shards written elsewhere (DMVR, Scenic's
datasets) once and writes the dmvr_info.json the reader needs: shards and
record counts per split prefix, and the class names from "clip/label/text"
(else from --classes, a file with one name per line, else "0", "1", ...).
"""

from __future__ import annotations

import collections
import io
import json
import os
import sys
from collections.abc import Iterable, Sequence

import numpy as np

from vit_jax.data import dmvr
from vit_jax.errors import DataError, MissingFileError, reported


def encode_video(frames: np.ndarray, label: int, label_text: str, filename: str,
                 quality: int = 90) -> bytes:
  """A serialized SequenceExample of uint8 frames [T, H, W, 3] (JPEG) and its label."""
  import tensorflow as tf
  from PIL import Image

  example = tf.train.SequenceExample()
  example.context.feature[dmvr.LABEL_KEY].int64_list.value[:] = [label]
  example.context.feature[dmvr.LABEL_TEXT_KEY].bytes_list.value[:] = [label_text.encode()]
  example.context.feature[dmvr.FILENAME_KEY].bytes_list.value[:] = [filename.encode()]
  frame_list = example.feature_lists.feature_list[dmvr.FRAMES_KEY]
  for frame in frames:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    frame_list.feature.add().bytes_list.value[:] = [buffer.getvalue()]
  return example.SerializeToString()


def write_split(records: Iterable[bytes], root: str, split: str, num_shards: int,
                num_records: int | None = None) -> dmvr.SplitInfo:
  """Deals serialized records round-robin to shards root/<split>-i-of-n as they come.

  `num_records` (if known) caps the shards at one per record.
  """
  import tensorflow as tf

  if num_records is not None:
    num_shards = max(1, min(num_shards, num_records))
  names = [dmvr.shard_name(split, i, num_shards) for i in range(num_shards)]
  counts = [0] * num_shards
  writers = [tf.io.TFRecordWriter(os.path.join(root, name)) for name in names]
  try:
    for i, record in enumerate(records):
      writers[i % num_shards].write(record)
      counts[i % num_shards] += 1
  finally:
    for writer in writers:
      writer.close()
  return dmvr.SplitInfo(tuple(names), tuple(counts),
                        tuple(os.path.getsize(os.path.join(root, n)) for n in names))


def write_info(root: str, class_names: Sequence[str], splits: dict[str, dmvr.SplitInfo]) -> None:
  """Writes root/dmvr_info.json, keeping the splits already there that `splits` lacks."""
  path = os.path.join(root, dmvr.INFO_FILE)
  existing = {}
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    if list(old["class_names"]) != list(class_names):
      raise DataError(f"{path} has other class names than the splits being written; write them "
                       "to another folder.")
    existing = old["splits"]
  info = {"format": "dmvr", "class_names": list(class_names),
          "splits": {**existing, **{name: {"shards": list(s.shards),
                                           "num_examples": list(s.num_examples),
                                           "num_bytes": list(s.num_bytes)}
                                    for name, s in splits.items()}}}
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(info, f, indent=1)
  os.replace(tmp, path)


def write_dataset(dataset: str, out: str, splits: Sequence[str], num_shards: int, *,
                  resize_small: int | None = None, quality: int = 90, seed: int = 0) -> None:
  """Converts the video splits of `dataset` ("folder:..." or "manifest:...") to DMVR shards."""
  from absl import logging

  from vit_jax.data import config as config_lib
  from vit_jax.data import folder, sources

  config = config_lib.as_config({"dataset": dataset, "train_split": splits[0],
                                 "skip_bad_examples": False})
  source = sources.open_source(config)
  if not source.is_video or source.root is None:
    raise DataError(f"{dataset}: dmvr_writer converts folder: or manifest: datasets of videos.")
  os.makedirs(out, exist_ok=True)
  written = {}
  for split in splits:
    paths, labels = source.files(split)
    order = np.random.default_rng(seed).permutation(len(paths))

    def records(paths=paths, labels=labels, order=order, split=split):
      # One video in memory at a time: records are written as they are encoded.
      for n, i in enumerate(order):
        frames = folder.decode_video_file(paths[i])
        if resize_small:
          frames = _resize_small(frames, resize_small)
        yield encode_video(frames, int(labels[i]), source.class_names[labels[i]],
                           os.path.relpath(paths[i], source.root), quality)
        if (n + 1) % 100 == 0:
          logging.info("%s: %d of %d videos written.", split, n + 1, len(paths))

    written[split] = write_split(records(), out, split, num_shards, len(paths))
    print(f"{split}: {len(paths)} videos -> {len(written[split].shards)} shards in {out}")
  write_info(out, source.class_names, written)


def index(root: str, classes_file: str | None = None) -> dict[str, dmvr.SplitInfo]:
  """Reads every record of root's shards once and writes root/dmvr_info.json."""
  import tensorflow as tf

  groups = collections.defaultdict(dict)
  for name in sorted(os.listdir(root)):
    match = dmvr.SHARD_RE.match(name)
    if match:
      groups[match["prefix"]][int(match["index"])] = (name, int(match["count"]))
  if not groups:
    raise MissingFileError(f"{root} holds no shards named <split>-00000-of-00010.")
  texts, max_label, splits = {}, -1, {}
  for prefix, shards in sorted(groups.items()):
    count = next(iter(shards.values()))[1]
    missing = sorted(set(range(count)) - set(shards))
    if missing:
      raise MissingFileError(f"{root}: {len(missing)} of the {count} shards of {prefix!r} are "
                             f"missing, e.g. {dmvr.shard_name(prefix, missing[0], count)}.")
    names, counts = [], []
    for i in range(count):
      name = shards[i][0]
      records = 0
      for serialized in tf.data.TFRecordDataset(os.path.join(root, name)).as_numpy_iterator():
        example = tf.train.SequenceExample.FromString(serialized)
        label = list(example.context.feature[dmvr.LABEL_KEY].int64_list.value)
        text = list(example.context.feature[dmvr.LABEL_TEXT_KEY].bytes_list.value)
        if len(label) == 1:
          max_label = max(max_label, label[0])
          if len(text) == 1:
            texts.setdefault(label[0], text[0].decode())
        records += 1
      names.append(name)
      counts.append(records)
    splits[prefix] = dmvr.SplitInfo(tuple(names), tuple(counts),
                                    tuple(os.path.getsize(os.path.join(root, n)) for n in names))
    print(f"{prefix}: {count} shards, {sum(counts)} records")
  if classes_file:
    with open(classes_file) as f:
      class_names = [line.strip() for line in f if line.strip()]
  elif texts and set(texts) == set(range(max_label + 1)):
    class_names = [texts[i] for i in range(max_label + 1)]
  else:
    class_names = [str(i) for i in range(max_label + 1)]
  write_info(root, class_names, splits)
  print(f"{len(class_names)} classes; wrote {os.path.join(root, dmvr.INFO_FILE)}")
  return splits


def _resize_small(frames: np.ndarray, smaller_side: int) -> np.ndarray:
  from PIL import Image

  h, w = frames.shape[1:3]
  scale = smaller_side / min(h, w)
  size = (max(1, round(w * scale)), max(1, round(h * scale)))
  return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in frames])


def main(argv: Sequence[str] | None = None) -> None:
  import argparse

  parser = argparse.ArgumentParser(prog="python -m vit_jax.data.dmvr_writer",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--dataset", help="folder:/path or manifest:/path of videos")
  parser.add_argument("--out", help="the folder to write shards and dmvr_info.json to")
  parser.add_argument("--splits", default="train,test", help="comma-separated split names")
  parser.add_argument("--num_shards", type=int, default=16, help="shards per split")
  parser.add_argument("--resize_small", type=int, default=None,
                      help="resize frames so the shorter side is this (default: keep)")
  parser.add_argument("--quality", type=int, default=90, help="JPEG quality")
  parser.add_argument("--index", metavar="ROOT", help="index existing shards instead")
  parser.add_argument("--classes", help="with --index: class names, one per line")
  args = parser.parse_args(argv)
  with reported("dmvr_writer"):
    if args.index:
      index(args.index, args.classes)
    elif args.dataset and args.out:
      write_dataset(args.dataset, args.out, args.splits.split(","), args.num_shards,
                    resize_small=args.resize_small, quality=args.quality)
    else:
      parser.error("give --dataset and --out, or --index ROOT")


if __name__ == "__main__":
  main(sys.argv[1:])
