"""Training and evaluation streams: tf.data on each process, global jax arrays out.

Training stream (infinite), per process:
  this process's share of the split (fixed order)
  -> epoch e: shuffled with seed (seed, process, e) -> example k of epoch e gets the
     augmentation seed (seed, process, e * n + k)
  -> epochs concatenated -> skip start_step * local_batch examples (resume)
  -> with data.repeated_augment = r: each step's local_batch / r examples taken r
     times (copy j's seed: (seed, process, (e * n + k) * r + j)), local_batch / r
     rows apart; the skip counts examples read, start_step * local_batch / r
  -> decode + augment -> batches of local_batch (drop_remainder: every step is full)
  -> global arrays [global_batch, ...] sharded over the batch dimension.
With data.train_shards = N the split is cut into N shards instead of one per
process, each built as above with its shard index in place of the process index;
a process concatenates its N / processes shards' pieces into its local batch, so
the global batches do not depend on the number of processes.
Because shuffling and augmentation depend only on (seed, process, epoch,
position), the stream started at `start_step=s` yields exactly the batches s,
s+1, ... of the stream started at 0; resuming costs reading (not decoding) at
most one epoch of this process's records. TFDS shuffles records when it prepares
a dataset, so a shuffle buffer on top mixes well; folders shuffle the full file
list. A bad example (a file or frame that fails to decode, a video shorter than
data.min_frames, a DMVR label outside the classes) is skipped (logged and counted),
which shifts the later examples of that stream, so a resumed run is only exact on
clean data. Videos are decoded in two steps: the source's `load` gives the frame
count, the clip's frame indices are drawn, and `clip_frames` decodes only those.

Evaluation stream (one pass), per process: its share of the split in a fixed
order, padded with masked zero examples to the number of batches of the largest
share, so every process runs the same number of steps and every example is
counted exactly once (`mask` marks the real ones).

Native resolution (data.resolution_mode="native", vit_jax/data/native.py): the same
streams with each image at its own size (tf.data's padded_batch), then packed on the
host into rows of patches; a batch's leading dimension is then its rows, and its label
and mask are per image slot [rows, k].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import tensorflow as tf

from vit_jax.data import config as config_lib
from vit_jax.data import distribute, dmvr, folder, native, preprocess, sources
from vit_jax.errors import DataError

# tf.data runs on CPU; keep TensorFlow away from any accelerator JAX uses.
tf.config.set_visible_devices([], "GPU")

_PREPROCESSING_KEYS = ("image_size", "train_crop", "inception_area", "flip", "resize_small",
                       "value_range", "mean", "std", "resize_method", "num_frames", "stride", "scale_jitter",
                       "num_test_clips", "num_test_crops")
# Recorded only for native runs, so that a square run's info stays what it was.
_NATIVE_KEYS = ("resolution_mode", "max_num_patches", "seq_len", "max_images_per_row",
                "patch_size")


class BadDataError(DataError):
  """The input pipeline met data it cannot use (undecodable file, label out of range)."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a run needs to know about its data; `preprocessing` reproduces eval inputs.

  Attributes:
    dataset: the config's dataset string.
    num_classes, class_names: labels are in [0, num_classes).
    num_train_examples, num_eval_examples: sizes of train_split and eval_split
      (videos, not views).
    is_video: inputs are clips.
    input_shape: one example: (h, w, 3) or (num_frames, h, w, 3).
    num_eval_views: views per eval example (num_test_clips * num_test_crops for
      video, else 1); eval batches of video carry [B, num_eval_views, *input_shape].
    preprocessing: the config keys that define preprocessing; pass them to
      `preprocess_for_eval` to prepare new inputs the way this run saw them.
  """

  dataset: str
  num_classes: int
  class_names: tuple[str, ...]
  num_train_examples: int
  num_eval_examples: int
  is_video: bool
  input_shape: tuple[int, ...]
  num_eval_views: int
  preprocessing: dict[str, Any]

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def get_info(data_config: Mapping[str, Any]) -> DatasetInfo:
  """Metadata of `data_config.dataset` (prepares bundled datasets on first use).

  Also checks every file of a folder: or manifest: dataset's eval_split (headers, frame
  counts; sources.Source.check_files), so that a bad evaluation file stops the run at
  start-up rather than at its first evaluation.
  """
  c = config_lib.as_config(data_config)
  source = _open(c)
  if source.is_video and c.resolution_mode == "native":
    raise DataError(f"data.resolution_mode='native' packs images; {c.dataset} is a video "
                    "dataset: use resolution_mode='square'.")
  # Found now, not at the first evaluation after hours of training.
  source.check_files(c.eval_split)
  h, w = config_lib.image_size(c)
  views = c.num_test_clips * c.num_test_crops if source.is_video else 1
  return DatasetInfo(
      dataset=c.dataset, num_classes=source.num_classes, class_names=source.class_names,
      num_train_examples=source.num_examples(c.train_split),
      num_eval_examples=source.num_examples(c.eval_split), is_video=source.is_video,
      input_shape=(c.num_frames, h, w, 3) if source.is_video else (h, w, 3),
      num_eval_views=views,
      preprocessing={k: c[k] for k in _PREPROCESSING_KEYS + (
          _NATIVE_KEYS if c.resolution_mode == "native" else ())})


def train_iterator(data_config: Mapping[str, Any], *, global_batch_size: int,
                   sharding: jax.sharding.Sharding, seed: int,
                   start_step: int = 0) -> Iterator[dict[str, jax.Array]]:
  """Infinite training batches, resumable at `start_step`.

  Yields:
    {"image": float32 [B, h, w, 3] or [B, T, h, w, 3], "label": int32 [B]}, global
    arrays of global batch B with the batch dimension sharded as `sharding`'s first
    dimension (other dimensions replicated).
  """
  c = config_lib.as_config(data_config)
  distribute.local_batch_size(global_batch_size, sharding)  # checks divisibility
  process_index, process_count = jax.process_index(), jax.process_count()
  # Shards are independent streams; process p owns a contiguous block of them, so that
  # its local batch (the concatenation of its shards' pieces) is exactly the rows
  # make_array_from_process_local_data puts on its devices. train_shards=0: one each.
  num_shards = c.train_shards or process_count
  if num_shards % process_count or global_batch_size % num_shards:
    raise DataError(f"data.train_shards={num_shards} must be a multiple of the "
                     f"{process_count} processes and divide the batch size "
                     f"{global_batch_size}.")
  per_process = num_shards // process_count
  source = _open(c)
  shards = [train_dataset(c, source, local_batch_size=global_batch_size // num_shards,
                          seed=seed, start_step=start_step,
                          process_index=process_index * per_process + i, process_count=num_shards)
            for i in range(per_process)]
  what = f"{c.dataset} {c.train_split}"
  diagnose = _diagnose(source, c.train_split, process_index, process_count)
  if c.resolution_mode == "native":
    # Each shard packs its own images (batches independent of the process count).
    row_multiple = distribute.num_batch_shards(sharding) // process_count
    batches = native.pack_shards([_numpy_batches(ds, what, diagnose) for ds in shards],
                                 native.Packer(c, train=True), max(row_multiple, 1))
    rows = native.num_rows(c, global_batch_size // num_shards, True, max(row_multiple, 1),
                           per_process)
    return distribute.prefetch_to_device(batches, sharding, rows * process_count, c.prefetch)
  ds = shards[0] if per_process == 1 else tf.data.Dataset.zip(tuple(shards)).map(_concat)
  batches = _numpy_batches(ds, what, diagnose)
  return distribute.prefetch_to_device(batches, sharding, global_batch_size, c.prefetch)


def eval_iterator(data_config: Mapping[str, Any], *, global_batch_size: int,
                  sharding: jax.sharding.Sharding,
                  split: str | None = None) -> Iterator[dict[str, jax.Array]]:
  """One pass over `split` (default eval_split); every example exactly once.

  Yields:
    {"image": float32 [B, h, w, 3] (images) or [B, V, T, h, w, 3] (video, V views),
     "label": int32 [B], "mask": bool [B]} as global arrays; padding has mask False.
  """
  c = config_lib.as_config(data_config)
  local = distribute.local_batch_size(global_batch_size, sharding)
  split = split or c.eval_split
  source = _open(c)
  ds = eval_dataset(c, source, local_batch_size=local, split=split,
                    process_index=jax.process_index(), process_count=jax.process_count())
  batches = _numpy_batches(ds, f"{c.dataset} {split}",
                           _diagnose(source, split, jax.process_index(), jax.process_count()))
  if c.resolution_mode == "native":
    row_multiple = max(distribute.num_batch_shards(sharding) // jax.process_count(), 1)
    batches = native.pack_shards([batches], native.Packer(c, train=False), row_multiple)
    rows = native.num_rows(c, local, False, row_multiple)
    return distribute.prefetch_to_device(batches, sharding, rows * jax.process_count(),
                                         c.prefetch)
  return distribute.prefetch_to_device(batches, sharding, global_batch_size, c.prefetch)


def num_eval_batches(data_config: Mapping[str, Any], *, global_batch_size: int,
                     split: str | None = None, process_count: int | None = None) -> int:
  """How many batches `eval_iterator` yields (the same on every process)."""
  c = config_lib.as_config(data_config)
  process_count = jax.process_count() if process_count is None else process_count
  source = _open(c)
  counts = [source.num_examples(split or c.eval_split, p, process_count)
            for p in range(process_count)]
  return distribute.num_eval_batches(counts, global_batch_size // process_count)


def preprocess_for_eval(data_config: Mapping[str, Any],
                        raw_examples: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
  """Model inputs for decoded files, preprocessed as in evaluation.

  Args:
    data_config: a data config, or `DatasetInfo.preprocessing` saved with a run.
    raw_examples: uint8 images [H, W, C] or videos [T, H, W, C] (C in 1, 3, 4),
      e.g. from `vit_jax.data.decode_file`; a list (sizes may differ) or a stacked array.

  Returns:
    float32 [N, h, w, 3] for images, [N, V, T, h, w, 3] for videos; with
    resolution_mode="native" a list of N images [h_i, w_i, 3], each at its own size
    under the patch budget (vit_jax/data/native.py).
  """
  c = config_lib.as_config(data_config)
  if c.resolution_mode == "native":
    return [native.eval_image(tf.convert_to_tensor(np.asarray(x, np.uint8)), c).numpy()
            for x in raw_examples]
  outputs = []
  for example in raw_examples:
    example = tf.convert_to_tensor(np.asarray(example, np.uint8))
    if example.shape.rank == 4:
      outputs.append(preprocess.eval_video(example, c).numpy())
    elif example.shape.rank == 3:
      outputs.append(preprocess.eval_image(example, c).numpy())
    else:
      raise DataError(f"Expected [H, W, C] images or [T, H, W, C] videos, got {example.shape}.")
  return np.stack(outputs)


def _open(c) -> sources.Source:
  source = sources.open_source(c)
  if c.dataset.split("/")[0].split(":")[0] == "moving_digits" and c.flip:
    raise DataError("moving_digits labels the direction of motion, which a horizontal flip "
                     "reverses: set data.flip=False.")
  return source


def _host_seed(seed: int, process_index: int) -> int:
  """A 31-bit seed for one process's stream; different processes get unrelated streams."""
  return int(np.random.SeedSequence([seed, process_index]).generate_state(1)[0] >> 1)


def _output_shape(c, is_video: bool, train: bool) -> list[int]:
  h, w = config_lib.image_size(c)
  if not is_video:
    return [h, w, 3]
  if train:
    return [c.num_frames, h, w, 3]
  return [c.num_test_clips * c.num_test_crops, c.num_frames, h, w, 3]


def train_dataset(c, source: sources.Source, *, local_batch_size: int, seed: int,
                  start_step: int, process_index: int, process_count: int) -> tf.data.Dataset:
  """This process's training batches as a tf.data.Dataset (see the module docstring)."""
  raw = source.read(c.train_split, process_index, process_count, shuffle_files=True)
  n = source.num_examples(c.train_split, process_index, process_count)
  if n == 0:
    raise DataError(f"{c.dataset} {c.train_split}: process {process_index} of {process_count} "
                     "has no training examples.")
  if c.cache:
    raw = raw.cache()
  host_seed = _host_seed(seed, process_index)
  buffer = min(c.shuffle_buffer, n)
  repeats = c.repeated_augment
  if local_batch_size % repeats:
    raise DataError(f"data.repeated_augment={repeats} must divide the batch of each process "
                    f"(or of each shard with data.train_shards), {local_batch_size}.")
  distinct = local_batch_size // repeats  # examples read per step
  start_epoch, offset = divmod(start_step * distinct, n)

  def epoch(e):
    ds = raw
    if buffer > 1:
      ds = ds.shuffle(buffer, seed=host_seed + e, reshuffle_each_iteration=False)

    def add_seed(k, ex):
      # Copy j of example k gets (e * n + k) * repeats + j (just e * n + k without repeats).
      return {**ex, "seed": tf.stack([tf.constant(host_seed, tf.int64), (e * n + k) * repeats])}

    return ds.enumerate().map(add_seed)

  ds = tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch).skip(offset)
  if repeats > 1:
    ds = ds.window(distinct, drop_remainder=True).flat_map(
        lambda window: _repeat_window(window, distinct, repeats))
  shape = _output_shape(c, source.is_video, train=True)
  is_native = c.resolution_mode == "native"
  if is_native:
    shape = [None, None, 3]  # each image at its own size

  def augment(ex):
    if is_native:
      return native.train_image(ex["raw"], ex["seed"], c)
    return preprocess.train_image(ex["raw"], ex["seed"], c)

  def augment_video(ex):
    """(clip, ok): a frame that does not decode makes ok False (the clip zeros)."""
    indices = preprocess.train_clip_indices(ex["length"], ex["seed"], c)
    frames, ok = source.clip_frames(ex, indices, skip_bad=c.skip_bad_examples)
    clip = tf.cond(ok, lambda: tf.ensure_shape(preprocess.train_clip(frames, ex["seed"], c), shape),
                   lambda: tf.zeros(shape, tf.float32))
    return clip, ok

  def process(ex):
    ex = source.load(ex, skip_bad=c.skip_bad_examples)
    if source.is_video:
      image, ok = tf.cond(ex["ok"], lambda: augment_video(ex),
                          lambda: (tf.zeros(shape, tf.float32), tf.constant(False)))
    else:
      ok = ex["ok"]
      zeros = [1, 1, 3] if is_native else shape
      image = tf.cond(ok, lambda: tf.ensure_shape(augment(ex), shape),
                      lambda: tf.zeros(zeros, tf.float32))
    return {"image": image, "label": tf.cast(ex["label"], tf.int32), "ok": ok,
            "seed": ex["seed"]}

  def drop_ok(ex):
    if is_native:  # the seed draws the dropped tokens; the size crops the padding off
      return {"image": ex["image"], "label": ex["label"], "seed": ex["seed"],
              "size": tf.shape(ex["image"])[:2]}
    return {"image": ex["image"], "label": ex["label"]}

  ds = ds.map(process, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.filter(_is_ok).map(drop_ok)
  if is_native:
    ds = ds.padded_batch(local_batch_size, drop_remainder=True)
  else:
    ds = ds.batch(local_batch_size, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE)


def _repeat_window(window, distinct: int, repeats: int) -> tf.data.Dataset:
  """One step's `distinct` examples, `repeats` times over: copy j of all of them, then j + 1.

  The copies of an example sit `distinct` rows apart in the batch, so they land on
  different devices (as DeiT's sampler puts them on different GPUs) and mixup, which
  pairs row i with row B-1-i, pairs different images.
  """
  examples = tf.data.Dataset.zip(window)

  def copy(i, ex):
    return {**ex, "seed": ex["seed"] + tf.stack([tf.constant(0, tf.int64), i // distinct])}

  return examples.repeat(repeats).enumerate().map(copy)


def _is_ok(ex):
  return ex["ok"]


def _concat(*batches):
  """Per-shard batches [b, ...] -> this process's batch [shards * b, ...]."""
  return {k: tf.concat([b[k] for b in batches], axis=0) for k in batches[0]}


def eval_dataset(c, source: sources.Source, *, local_batch_size: int, split: str,
                 process_index: int, process_count: int) -> tf.data.Dataset:
  """This process's evaluation batches, padded and masked (see the module docstring)."""
  raw = source.read(split, process_index, process_count)
  counts = [source.num_examples(split, p, process_count) for p in range(process_count)]
  num_batches = distribute.num_eval_batches(counts, local_batch_size)
  shape = _output_shape(c, source.is_video, train=False)
  is_native = c.resolution_mode == "native"
  if is_native:
    shape = [None, None, 3]  # each image at its own size

  def process(ex):
    # Evaluation never skips: a missing example would silently change the metric.
    ex = source.load(ex, skip_bad=False)
    if source.is_video:
      # Computing "ok" raised for a bad video (skip_bad=False); the length waits for it.
      indices = preprocess.eval_clip_indices(tf.where(ex["ok"], ex["length"], 1), c)
      frames, _ = source.clip_frames(ex, indices, skip_bad=False)
      image = preprocess.eval_clips(frames, c)
    elif is_native:
      image = native.eval_image(ex["raw"], c)
    else:
      image = preprocess.eval_image(ex["raw"], c)
    out = {"image": tf.ensure_shape(image, shape),
           "label": tf.cast(ex["label"], tf.int32), "mask": tf.constant(True)}
    return {**out, "size": tf.shape(image)[:2]} if is_native else out

  ds = raw.map(process, num_parallel_calls=tf.data.AUTOTUNE)
  pad = {"image": tf.zeros([1, 1, 3] if is_native else shape, tf.float32),
         "label": tf.constant(0, tf.int32), "mask": tf.constant(False)}
  if is_native:
    pad["size"] = tf.constant([1, 1], tf.int32)
  padding = tf.data.Dataset.from_tensors(pad)
  ds = ds.concatenate(padding.repeat(num_batches * local_batch_size - counts[process_index]))
  if is_native:
    return ds.padded_batch(local_batch_size).prefetch(tf.data.AUTOTUNE)
  return ds.batch(local_batch_size).prefetch(tf.data.AUTOTUNE)


def _numpy_batches(ds: tf.data.Dataset, what: str,
                   diagnose: Callable[[], str | None] | None = None
                   ) -> Iterator[dict[str, np.ndarray]]:
  """Batches as numpy; TensorFlow errors from bad data become BadDataError.

  The message is the one vit_jax's own decoders raised (folder.raise_bad), else what
  `diagnose()` finds (a DMVR shard and record), else TensorFlow's first line.
  """
  iterator = ds.as_numpy_iterator()
  while True:
    try:
      batch = next(iterator)
    except StopIteration:
      return
    except tf.errors.OpError as e:
      message = folder.raised_error(e.message) or (diagnose and diagnose()) or dmvr.tf_error_text(e.message)
      raise BadDataError(f"Reading {what} failed: {message}") from None
    yield batch


def _diagnose(source: sources.Source, split: str, process_index: int, process_count: int):
  if source.dmvr is None:
    return None
  return lambda: source.dmvr.find_damaged_record(split, process_index, process_count)


__all__ = ["BadDataError", "DatasetInfo", "eval_iterator", "get_info", "num_eval_batches",
           "preprocess_for_eval", "train_iterator"]
