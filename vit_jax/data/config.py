"""The `config.data` sub-config: every key of the input pipeline, its default and its checks."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import ml_collections
from ml_collections import config_dict

from vit_jax.data import augment_spec
from vit_jax.errors import ConfigError, MissingFileError

TRAIN_CROPS = ("inception", "resize", "random_crop")
RESOLUTION_MODES = ("square", "native")
# What native resolution supports of the square pipeline's options (data/native.py).
NATIVE_TRAIN_CROPS = ("inception", "resize")


def default_config() -> ml_collections.ConfigDict:
  """All keys of `config.data` with their defaults (ImageNet-style ViT preprocessing).

  Datasets:
    dataset: "digits[/canvas]" | "moving_digits[/tiny]" (bundled, prepared on first use) |
      any TFDS name such as "cifar10", "imagenet2012", "ucf101" (must be prepared) |
      "folder:/path/to/root" with root/<split>/<class>/<file> (images or videos) |
      "manifest:/path/to/root" with root/<split>.csv of path,label lines (images or
      videos; vit_jax/data/manifest.py) | "dmvr:/path/to/root", DMVR TFRecord shards
      root/<split>-00000-of-00128 of videos with their dmvr_info.json (vit_jax/data/dmvr.py;
      written by `python -m vit_jax.data.dmvr_writer`).
    data_dir: TFDS data dir; None -> $VIT_JAX_DATA_DIR or ~/tensorflow_datasets.
    train_split, eval_split: TFDS split expressions ("train[:90%]"); folder: sub-folder
      names; manifest: manifest names (train -> train.csv); dmvr: shard prefixes.
    image_key, label_key: feature names; None -> the dataset's supervised keys (DMVR:
      "image/encoded" and "clip/label/index").

  Images (video frames use the same resizing and value range):
    image_size: int or (height, width) of the model input.
    train_crop: "inception" (random resized crop, area `inception_area`, aspect 3/4..4/3),
      "resize" (whole image resized), or "random_crop" (shorter side resized to
      `resize_small`, then a random image_size crop).
    flip: random horizontal flips in training.
    resize_small: evaluation resizes the shorter side to this and takes the central
      image_size crop; None resizes the whole image to image_size.
    augment: the training augmentation chain after the crop and flip (native resolution:
      per image at its own size, after the budget resize), as
      "op(args)|op(args)" or a list of such items, e.g. "randaug(2, 10)" or
      "timm_randaug('rand-m9-mstd0.5-inc1')|random_erasing(0.25)"; "" (default):
      none. Ops and arguments: vit_jax/data/augment_spec.py, docs/augmentation.md.
    resize_method: "bilinear" (the JAX ViT pipelines) or "bicubic" (timm's and the
      PyTorch checkpoints'; model_name="from_checkpoint" takes the checkpoint's).
    value_range: pixels mapped linearly from [0, 255] to this range; set it to None
      and set mean/std (per channel, in [0, 1] units as timm) to standardise instead.

    repeated_augment: r > 1: repeated augmentation (DeiT's r = 3): each training batch
      holds batch / r examples, each r times with independent augmentations (each
      process's or shard's part of the batch must be divisible by r).

  Native resolution (NaViT / NaFlex; images only, vit_jax/data/native.py):
    resolution_mode: "square" (default: every image resized to image_size) or
      "native": each image resized (with antialias), keeping its aspect ratio, to at most
      `max_num_patches` patches (SigLIP 2's rule), cut into patches and packed into rows
      of `seq_len` patches holding at most `max_images_per_row` images each; batches are
      `vit_jax.models.packed.PackedPatches` with a label and a mask per image slot.
      image_size then only sizes the model's stored position embedding grid.
    max_num_patches: the patch budget of one image (at most seq_len).
    seq_len: patches per packed row.
    max_images_per_row: images per row at most; a batch of B images takes
      ceil(B / k) rows, k = min(max_images_per_row, seq_len // the most patches an
      image can keep), so every batch holds its B images whatever their shapes.
    token_drop_rate: NaViT's token dropping: training keeps a random
      n - floor(rate * n) of each image's n patches (evaluation keeps all).
    patch_size: the model's patch (int or (h, w)); None: the driver sets it from the
      model (set it to use the pipeline alone).

  Video (ignored for image datasets):
    num_frames, stride: a clip is num_frames frames taken every `stride` frames;
      training picks a random temporal offset. Videos shorter than
      (num_frames - 1) * stride + 1 frames are padded by looping from the start.
    min_frames: videos with fewer frames are bad data (skipped in training with
      skip_bad_examples, an error in evaluation); 1: only empty videos.
    scale_jitter: training resizes the shorter side to image_size * u, u uniform in
      this range, then takes a random crop (same for all frames).
    num_test_clips: evenly spaced clips per video in evaluation.
    num_test_crops: 1 (centre) or 3 (both ends and centre of the longer side) per clip.

  Reading:
    shuffle_buffer: examples in the training shuffle buffer (per process, or per
      shard with train_shards).
    train_shards: 0 (default): each process reads, shuffles and augments its own share
      of the training split (its part of every global batch). N > 0: the split is cut
      into N shards, each an independent stream, and every global batch takes
      batch_size / N consecutive examples of each; a process reads N / processes of
      them. The batches then do not depend on the number of processes (1 process x 4
      devices and 2 x 2 train identically): set it to the largest process count you
      will use (it must divide N, and N must divide the batch size).
    cache: keep this process's encoded examples in memory after the first epoch.
    prefetch: batches transferred to the devices ahead of the training step.
    skip_bad_examples: training skips (and logs and counts: `vit_jax.data.skipped_files()`)
      bad examples, each named by file (or DMVR record): files or frames that fail to
      decode, videos shorter than min_frames, labels outside the classes; False raises
      (and allows no bad manifest line). Evaluation always raises, so that no example is
      silently missing.
    max_bad_fraction: manifest lines that are bad (a missing file, a label that is not a
      class, ...), checked when the dataset is opened: up to this fraction of the train
      split's lines are left out (reported once and counted), more is an error naming the
      first few. 0 (default): any bad line is an error. Evaluation splits must be clean.
  """
  c = ml_collections.ConfigDict()
  c.dataset = "digits"
  c.data_dir = config_dict.placeholder(str)
  c.train_split = "train"
  c.eval_split = "test"
  c.image_key = config_dict.placeholder(str)
  c.label_key = config_dict.placeholder(str)

  # An int or a (height, width) pair; a typed field would reject one of the two.
  c.image_size = config_dict.FieldReference(224, field_type=object)
  c.train_crop = "inception"
  c.inception_area = (0.05, 1.0)
  c.flip = True
  # A string or a list of strings; a typed field would reject one of the two.
  c.augment = config_dict.FieldReference("", field_type=object)
  c.repeated_augment = 1
  c.resize_small = config_dict.placeholder(int)
  c.resize_method = "bilinear"
  c.value_range = (-1.0, 1.0)
  c.mean = config_dict.placeholder(tuple)
  c.std = config_dict.placeholder(tuple)

  c.resolution_mode = "square"
  c.max_num_patches = 256
  c.seq_len = 1024
  c.max_images_per_row = 4
  c.token_drop_rate = 0.0
  c.patch_size = config_dict.FieldReference(None, field_type=object)

  c.num_frames = 16
  c.stride = 2
  c.min_frames = 1
  c.scale_jitter = (1.0, 1.25)
  c.num_test_clips = 1
  c.num_test_crops = 1

  c.shuffle_buffer = 10_000
  c.train_shards = 0
  c.cache = False
  c.prefetch = 2
  c.skip_bad_examples = True
  c.max_bad_fraction = 0.0
  return c


def validate(data_config: Mapping[str, Any]) -> None:
  """Raises ValueError on unknown keys and inconsistent values."""
  known = set(default_config().keys())
  unknown = sorted(set(data_config.keys()) - known)
  if unknown:
    raise ConfigError(f"Unknown config.data keys {unknown}; known keys: {sorted(known)}.")
  c = data_config
  image_size(c)
  if c["train_crop"] not in TRAIN_CROPS:
    raise ConfigError(f"train_crop={c['train_crop']!r}; use one of {TRAIN_CROPS}.")
  augment_spec.parse(c["augment"])
  if c["resize_method"] not in ("bilinear", "bicubic"):
    raise ConfigError(f"resize_method={c['resize_method']!r}; use 'bilinear' or 'bicubic'.")
  has_mean_std = c["mean"] is not None or c["std"] is not None
  if has_mean_std and (c["mean"] is None or c["std"] is None):
    raise ConfigError("Set both data.mean and data.std (per-channel, [0, 1] units) or neither.")
  if has_mean_std == (c["value_range"] is not None):
    raise ConfigError("Set exactly one of data.value_range or data.mean/std: with mean/std "
                     "set value_range=None.")
  if c["num_test_crops"] not in (1, 3):
    raise ConfigError(f"num_test_crops={c['num_test_crops']}; use 1 (centre) or 3.")
  if c["train_shards"] < 0:
    raise ConfigError(f"data.train_shards={c['train_shards']} must be >= 0 (0: one per process).")
  for key in ("num_frames", "stride", "num_test_clips", "min_frames", "repeated_augment"):
    if c[key] < 1:
      raise ConfigError(f"data.{key}={c[key]} must be >= 1.")
  if not 0 <= c["max_bad_fraction"] < 1:
    raise ConfigError(f"data.max_bad_fraction={c['max_bad_fraction']} must be in [0, 1).")
  lo, hi = c["scale_jitter"]
  if not 1.0 <= lo <= hi:
    raise ConfigError(f"scale_jitter={c['scale_jitter']} must satisfy 1 <= low <= high "
                     "(the resized frame must cover the crop).")
  _validate_native(c)


def _validate_native(c: Mapping[str, Any]) -> None:
  """The native-resolution keys (checked in every mode: a typo shows at once)."""
  if c["resolution_mode"] not in RESOLUTION_MODES:
    raise ConfigError(f"data.resolution_mode={c['resolution_mode']!r}; use one of "
                      f"{RESOLUTION_MODES}.")
  for key in ("max_num_patches", "seq_len", "max_images_per_row"):
    if not isinstance(c[key], int) or c[key] < 1:
      raise ConfigError(f"data.{key}={c[key]!r} must be an int >= 1.")
  if c["max_num_patches"] > c["seq_len"]:
    raise ConfigError(f"data.max_num_patches={c['max_num_patches']} does not fit in a row of "
                      f"data.seq_len={c['seq_len']} patches: raise seq_len to at least "
                      f"{c['max_num_patches']} or lower max_num_patches.")
  if not 0 <= c["token_drop_rate"] < 1:
    raise ConfigError(f"data.token_drop_rate={c['token_drop_rate']} must be in [0, 1).")
  if c["patch_size"] is not None:
    patch_size(c)
  if c["resolution_mode"] != "native":
    return
  if c["train_crop"] not in NATIVE_TRAIN_CROPS:
    raise ConfigError(f"data.train_crop={c['train_crop']!r} crops to image_size; native "
                      f"resolution takes one of {NATIVE_TRAIN_CROPS}.")


def patch_size(data_config: Mapping[str, Any]) -> tuple[int, int]:
  """data.patch_size as (height, width); native resolution needs it."""
  size = data_config["patch_size"]
  if size is None:
    raise ConfigError("data.resolution_mode='native' needs data.patch_size (the model's "
                      "patch; the training driver sets it): pass --config.data.patch_size=16.")
  if isinstance(size, int) and size > 0:
    return size, size
  if (isinstance(size, (tuple, list)) and len(size) == 2
      and all(isinstance(s, int) and s > 0 for s in size)):
    return tuple(size)
  raise ConfigError(f"data.patch_size={size!r}; use an int or a (height, width) pair.")


def image_size(data_config: Mapping[str, Any]) -> tuple[int, int]:
  """image_size as (height, width)."""
  size = data_config["image_size"]
  if isinstance(size, int):
    return size, size
  if len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size):
    return tuple(size)
  raise ConfigError(f"image_size={size!r}; use an int or a (height, width) pair.")


def resolve_data_dir(data_config: Mapping[str, Any]) -> str:
  """data_dir, else $VIT_JAX_DATA_DIR, else ~/tensorflow_datasets."""
  data_dir = data_config["data_dir"] or os.environ.get("VIT_JAX_DATA_DIR")
  return os.path.expanduser(data_dir or "~/tensorflow_datasets")


def as_config(data_config: Mapping[str, Any] | None) -> ml_collections.ConfigDict:
  """Defaults overlaid with `data_config` (a ConfigDict or a plain dict of some keys)."""
  config = default_config()
  if data_config is not None:
    overrides = data_config.to_dict() if hasattr(data_config, "to_dict") else dict(data_config)
    unknown = sorted(set(overrides) - set(config.keys()))
    if unknown:
      raise ConfigError(f"Unknown config.data keys {unknown}; known keys: {sorted(config.keys())}.")
    for key, value in overrides.items():
      config[key] = tuple(value) if isinstance(value, list) else value
  validate(config)
  return config


# Datasets that are a local folder: the prefix of config.data.dataset.
FOLDER_DATASETS = ("folder:", "manifest:", "dmvr:")


def check_paths(data_config: Mapping[str, Any]) -> None:
  """Raises MissingFileError when a folder:, manifest: or dmvr: dataset's folder is missing.

  Needs no TensorFlow: a command checks it before its slow imports, so a typo in a path
  costs a second, not the start-up of the whole pipeline. The sources check the contents.
  """
  name = data_config["dataset"]
  for prefix in FOLDER_DATASETS:
    if name.startswith(prefix):
      root = os.path.expanduser(name[len(prefix):])
      if "://" not in root and not os.path.isdir(root):
        raise MissingFileError(f"data.dataset={name!r}: {root} is not a folder (it does not "
                               "exist). Check the path.")
