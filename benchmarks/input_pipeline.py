"""Input pipeline throughput: images/s at 224 px and clips/s at 16 x 224 x 224, pipeline alone.

    python benchmarks/input_pipeline.py [--seconds 4]

Builds everything offline in a temporary directory: the bundled `digits` and
`moving_digits` TFDS datasets (upsampled to 224 px), a folder of 256x320 JPEGs
(decoded with PIL) and a folder of 240x320 H.264 mp4 videos (decoded with
PyAV), and those videos as DMVR TFRecords (JPEG frames). Each row runs
`train_iterator` (decode, augment, batch, transfer to one device) for `--seconds`
after a warm-up and prints examples per second; numbers scale with the CPU cores
tf.data gets. The video table (moving_digits, mp4 and DMVR clips with dmvr_color,
video_randaug and erasing) measures each row with all cores and on one core.

A second table measures augmentation on one CPU core (tf.data's thread pool and
intra-op parallelism set to 1, the process's training stream `pipeline.train_dataset`
as train_iterator builds it): images/s per core at 224 px for the crop alone and with
each `data.augment` chain, so that a host can be sized (cores = the train step's
images/s over the per-core rate).

A third table (`--tables native`) compares native resolution with square inputs at the
same patch budget on one core: JPEGs of mixed aspect ratios, square resized to 256x256
(256 patches of 16) against data.resolution_mode="native" at max_num_patches=256
(SigLIP 2's aspect-preserving resize, patchify and packing into rows of 1024 patches, the
packing in the same thread), with and without token dropping.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import jax
import numpy as np
import tensorflow as tf
from jax.sharding import NamedSharding, PartitionSpec
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


from vit_jax import data  # noqa: E402
from vit_jax.data import dmvr_writer, native, pipeline, sources  # noqa: E402


def _jpeg_folder(root: str, count: int = 64) -> str:
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[0:256, 0:320]
  for label in ("a", "b"):
    os.makedirs(os.path.join(root, "train", label))
    for i in range(count // 2):
      # Smooth gradients plus mild noise: closer to photos than pure noise for JPEG size.
      base = np.stack([(xx + i * 7) % 256, (yy + i * 3) % 256, (xx + yy) % 256], -1)
      pixels = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
      Image.fromarray(pixels).save(os.path.join(root, "train", label, f"{i}.jpg"), quality=90)
  return root


def _mixed_jpeg_folder(root: str, count: int = 64) -> str:
  """JPEGs of 240 to 480 px per side: aspect ratios 1:2 to 2:1."""
  rng = np.random.default_rng(1)
  for label in ("a", "b"):
    os.makedirs(os.path.join(root, "train", label))
    for i in range(count // 2):
      h, w = rng.integers(240, 481, size=2)
      yy, xx = np.mgrid[0:h, 0:w]
      base = np.stack([(xx + i * 7) % 256, (yy + i * 3) % 256, (xx + yy) % 256], -1)
      pixels = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
      Image.fromarray(pixels).save(os.path.join(root, "train", label, f"{i}.jpg"), quality=90)
  return root


def _video_folder(root: str, count: int = 8, num_frames: int = 64) -> str:
  import av

  rng = np.random.default_rng(0)
  for label in ("a", "b"):
    os.makedirs(os.path.join(root, "train", label))
    for i in range(count // 2):
      with av.open(os.path.join(root, "train", label, f"{i}.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.height, stream.width, stream.pix_fmt = 240, 320, "yuv420p"
        background = rng.integers(0, 255, (240, 320, 3), np.uint8)
        for t in range(num_frames):
          frame = np.roll(background, 4 * t, axis=1)
          for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            container.mux(packet)
        for packet in stream.encode():
          container.mux(packet)
  return root


def _measure(config, batch_size: int, seconds: float) -> float:
  sharding = NamedSharding(jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",)),
                           PartitionSpec("data"))
  iterator = data.train_iterator(config, global_batch_size=batch_size, sharding=sharding, seed=0)
  for _ in range(2):  # Warm-up: tf.data start-up, autotuning, first transfers.
    jax.block_until_ready(next(iterator))
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    jax.block_until_ready(next(iterator))
    count += batch_size
  return count / (time.perf_counter() - start)


def _measure_one_core(config, batch_size: int, seconds: float) -> float:
  """Examples/s of this process's training stream with one tf.data thread (no device).

  Native resolution: the host's packing (data/native.py's Packer) runs in this thread too.
  """
  c = data.config.as_config(config)
  pack = (native.Packer(c, train=True) if c.resolution_mode == "native" else lambda b: b)
  ds = pipeline.train_dataset(c, sources.open_source(c), local_batch_size=batch_size, seed=0,
                              start_step=0, process_index=0, process_count=1)
  options = tf.data.Options()
  options.threading.private_threadpool_size = 1
  options.threading.max_intra_op_parallelism = 1
  options.autotune.enabled = False
  iterator = ds.with_options(options).as_numpy_iterator()
  for _ in range(2):
    pack(next(iterator))
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    pack(next(iterator))
    count += batch_size
  return count / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per row")
  parser.add_argument("--tables", default="images,video,augment,native",
                      help="comma list of the tables to measure")
  args = parser.parse_args()
  tables = set(args.tables.split(","))
  tmp = tempfile.mkdtemp(prefix="vit_jax_bench_")
  if tables == {"native"}:
    return _native_table(tmp, args.seconds)
  setup = time.perf_counter()
  for name in ("digits", "moving_digits"):
    sources.tfds_builder(name, tmp)
  jpegs = _jpeg_folder(os.path.join(tmp, "jpegs"))
  videos = _video_folder(os.path.join(tmp, "videos"))
  print(f"set-up (prepare datasets, write files): {time.perf_counter() - setup:.1f}s")

  def config(**overrides):
    c = data.default_config()
    c.update(dict(data_dir=tmp, image_size=224, shuffle_buffer=1000, prefetch=2), **overrides)
    return c

  rows = [
      ("digits (TFDS, 8x8 PNG)", "inception crop, flip -> 224", "images",
       config(dataset="digits"), 64),
      ("folder of 256x320 JPEGs (PIL)", "inception crop, flip -> 224", "images",
       config(dataset=f"folder:{jpegs}", eval_split="train"), 64),
      ("moving_digits (TFDS, 16x32x32 PNG)", "16 frames -> 16x224x224, jitter+crop", "clips",
       config(dataset="moving_digits", num_frames=16, stride=1, flip=False), 8),
      ("folder of 64x240x320 mp4 (PyAV)", "16 frames, stride 2 -> 16x224x224", "clips",
       config(dataset=f"folder:{videos}", num_frames=16, stride=2, eval_split="train"), 8),
  ]
  # ---- Video augmentation and DMVR records (the ViViT recipes), a table of their own. ----
  dmvr_root = os.path.join(tmp, "dmvr")
  dmvr_writer.write_dataset(f"folder:{videos}", dmvr_root, ["train"], num_shards=4)
  clip = dict(num_frames=16, stride=2, eval_split="train")
  video_rows = [
      ("moving_digits (TFDS PNG)", "16x224x224 + dmvr_color(0.8, 0.1)",
       config(dataset="moving_digits", **dict(clip, stride=1), flip=False,
              augment="dmvr_color(0.8, 0.1)"), 8),
      ("moving_digits (TFDS PNG)", "16x224x224 + video_randaug(2, 20)",
       config(dataset="moving_digits", **dict(clip, stride=1), flip=False,
              augment="video_randaug(2, 20)"), 8),
      ("folder of 64x240x320 mp4 (PyAV)", "16x224x224 + video_randaug(2, 20)",
       config(dataset=f"folder:{videos}", **clip, augment="video_randaug(2, 20)"), 8),
      ("DMVR TFRecords of the mp4s (JPEG)", "16x224x224, jitter+crop+flip",
       config(dataset=f"dmvr:{dmvr_root}", **clip), 8),
      ("DMVR TFRecords of the mp4s (JPEG)", "16x224x224 + video_randaug(2, 20)",
       config(dataset=f"dmvr:{dmvr_root}", **clip, augment="video_randaug(2, 20)"), 8),
      ("DMVR TFRecords of the mp4s (JPEG)", "16x224x224 + SSv2 chain (+ erasing 0.25)",
       config(dataset=f"dmvr:{dmvr_root}", **clip,
              augment="video_randaug(2, 20)|random_erasing(0.25)"), 8),
  ]

  if "images" in tables:
    _table(rows, args.seconds)
  if "video" in tables:
    _video_table(video_rows, args.seconds)
  if "augment" in tables:
    _augment_table(config, jpegs, args.seconds)
  if "native" in tables:
    _native_table(tmp, args.seconds)


def _table(rows, seconds):
  print(f"\n{jax.devices()[0].platform} device, {os.cpu_count()} CPU cores visible\n")
  print(f"| {'dataset':36} | {'preprocessing':38} | {'batch':>5} | {'per second':>16} |")
  print(f"|{'-' * 38}|{'-' * 40}|{'-' * 7}|{'-' * 18}|")
  for name, what, unit, c, batch in rows:
    rate = _measure(c, batch, seconds)
    print(f"| {name:36} | {what:38} | {batch:>5} | {rate:9.1f} {unit:6} |", flush=True)


def _video_table(video_rows, seconds):
  print(f"\nVideo: clips/s with all {os.cpu_count()} cores (to the device) and on one core "
        f"(one tf.data thread), load average {os.getloadavg()[0]:.1f}\n")
  print(f"| {'video data':34} | {'preprocessing':42} | batch | clips/s | clips/s one core |")
  print(f"|{'-' * 36}|{'-' * 44}|-------|---------|------------------|")
  for name, what, c, batch in video_rows:
    rate = _measure(c, batch, seconds)
    one = _measure_one_core(c, batch, seconds)
    print(f"| {name:34} | {what:42} | {batch:>5} | {rate:7.1f} | {one:16.2f} |", flush=True)


def _augment_table(config, jpegs, seconds):
  jpeg = dict(dataset=f"folder:{jpegs}", eval_split="train")
  chains = [
      ("inception crop + flip", ""),
      ("+ randaug(2, 15)", "randaug(2, 15)"),
      ("+ randaug(2, 15) + random_erasing(0.25)", "randaug(2, 15)|random_erasing(0.25)"),
      ("+ timm rand-m9-mstd0.5-inc1 + erasing 0.25",
       "timm_randaug('rand-m9-mstd0.5-inc1')|random_erasing(0.25)"),
      ("+ three_augment(0.3)", "three_augment(0.3)"),
  ]
  print(f"\nOne CPU core, folder of 256x320 JPEGs -> 224 px, batch 32 "
        f"(load average {os.getloadavg()[0]:.1f})\n")
  print(f"| {'augmentation':44} | {'images/s per core':>17} |")
  print(f"|{'-' * 46}|{'-' * 19}|")
  for what, augment in chains:
    rate = _measure_one_core(config(**jpeg, augment=augment), 32, seconds)
    print(f"| {what:44} | {rate:17.1f} |", flush=True)


def _native_table(tmp: str, seconds: float) -> None:
  """Images/s and patches/s per core: square 256x256 against native at 256 patches."""
  folder = _mixed_jpeg_folder(os.path.join(tmp, "mixed_jpegs"))
  base = dict(dataset=f"folder:{folder}", eval_split="train", data_dir=tmp, image_size=256,
              train_crop="resize", shuffle_buffer=64, prefetch=2)
  native_keys = dict(resolution_mode="native", patch_size=16, max_num_patches=256,
                     seq_len=1024, max_images_per_row=4)
  rows = [("square 256x256", {}, 256),
          ("native, budget 256, rows of 1024", native_keys, None),
          ("native, budget 256, drop 0.5, rows of 512",
           dict(native_keys, token_drop_rate=0.5, seq_len=512), None)]
  print(f"\nOne CPU core, folder of JPEGs 240-480 px (aspect 1:2 to 2:1), batch 32, "
        f"patch budget 256 of 16x16 (load average {os.getloadavg()[0]:.1f})\n")
  print(f"| {'input':42} | {'images/s per core':>17} | {'patches/s per core':>18} |")
  print(f"|{'-' * 44}|{'-' * 19}|{'-' * 20}|")
  for what, keys, patches in rows:
    c = data.default_config()
    c.update(base, **keys)
    rate = _measure_one_core(c, 32, seconds)
    if patches is None:  # the mean patches an image keeps, from one packed batch
      cc = data.config.as_config(c)
      ds = pipeline.train_dataset(cc, sources.open_source(cc), local_batch_size=32, seed=0,
                                  start_step=0, process_index=0, process_count=1)
      batch = native.Packer(cc, train=True)(next(ds.as_numpy_iterator()))
      patches = (batch["image_ids"] > 0).sum() / batch["mask"].sum()
    print(f"| {what:42} | {rate:17.1f} | {rate * patches:18.0f} |", flush=True)


if __name__ == "__main__":
  main()
