"""Train/eval iterators on real prepared TFDS data: exactness, sharding, determinism, resume."""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from jax.sharding import NamedSharding, PartitionSpec

from vit_jax import data
from vit_jax.data import distribute, pipeline, sources


def _sharding(devices):
  mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
  return NamedSharding(mesh, PartitionSpec(("data",)))


def _digits(data_dir, **overrides):
  config = data.default_config()
  config.update(dict(data_dir=data_dir, image_size=8, flip=False, shuffle_buffer=500,
                     prefetch=1), **overrides)
  return config


def _tiny_video(data_dir, **overrides):
  config = data.default_config()
  config.update(dict(data_dir=data_dir, dataset="moving_digits/tiny", image_size=16,
                     num_frames=4, stride=2, flip=False, prefetch=1), **overrides)
  return config


def test_info(data_dir):
  info = data.get_info(_digits(data_dir))
  assert (info.num_classes, info.num_train_examples, info.num_eval_examples) == (10, 1437, 360)
  assert info.input_shape == (8, 8, 3) and not info.is_video
  video = data.get_info(_tiny_video(data_dir, num_test_clips=2, num_test_crops=3))
  assert video.is_video and video.input_shape == (4, 16, 16, 3) and video.num_eval_views == 6
  assert video.class_names[3] == "1_right"


@pytest.mark.parametrize("num_devices", [1, 8])
def test_eval_counts_every_example_once(data_dir, num_devices):
  """360 test digits, global batch 64 (360 = 5 * 64 + 40): masks count each exactly once."""
  config = _digits(data_dir)
  sharding = _sharding(jax.devices()[:num_devices])
  batches = list(data.eval_iterator(config, global_batch_size=64, sharding=sharding))
  assert len(batches) == 6 == data.num_eval_batches(config, global_batch_size=64)
  for batch in batches:
    assert batch["image"].shape == (64, 8, 8, 3) and batch["mask"].dtype == bool
    assert batch["image"].sharding.is_equivalent_to(sharding, 4)
    assert len(batch["image"].addressable_shards) == num_devices
  mask = np.concatenate([np.asarray(b["mask"]) for b in batches])
  labels = np.concatenate([np.asarray(b["label"]) for b in batches])[mask]
  assert mask.sum() == 360
  expected = [ex["label"] for ex in tfds.builder("digits", data_dir=data_dir)
              .as_dataset(split="test").as_numpy_iterator()]
  np.testing.assert_array_equal(labels, expected)  # Same examples, same order, none twice.
  images = np.concatenate([np.asarray(b["image"]) for b in batches])
  assert images.min() >= -1.0 and images.max() <= 1.0
  assert np.all(images[~mask] == 0)


def test_video_eval_views_and_count(data_dir):
  """30 tiny clips, batch 8 on 8 devices: [B, V, T, H, W, 3] with V = 2 clips x 3 crops."""
  config = _tiny_video(data_dir, num_test_clips=2, num_test_crops=3)
  batches = list(data.eval_iterator(config, global_batch_size=8, sharding=_sharding(jax.devices())))
  assert len(batches) == 4
  assert batches[0]["image"].shape == (8, 6, 4, 16, 16, 3)
  assert sum(int(b["mask"].sum()) for b in batches) == 30


def test_train_batches_are_global_and_sharded(data_dir):
  sharding = _sharding(jax.devices())
  batch = next(data.train_iterator(_digits(data_dir), global_batch_size=16, sharding=sharding,
                                   seed=0))
  assert batch["image"].shape == (16, 8, 8, 3) and batch["image"].dtype == np.float32
  assert batch["label"].shape == (16,) and batch["label"].dtype == np.int32
  assert batch["image"].sharding.is_equivalent_to(sharding, 4)
  video = next(data.train_iterator(_tiny_video(data_dir), global_batch_size=8,
                                   sharding=sharding, seed=0))
  assert video["image"].shape == (8, 4, 16, 16, 3)


def _take(config, source, *, seed, start_step, steps, local_batch=32, process_index=0,
          process_count=1):
  ds = pipeline.train_dataset(config, source, local_batch_size=local_batch, seed=seed,
                              start_step=start_step, process_index=process_index,
                              process_count=process_count)
  return list(ds.take(steps).as_numpy_iterator())


def test_train_is_deterministic_and_resumes_exactly(data_dir):
  """Steps 43..46 cross the end of the first epoch (1437 / 32 = 44.9 steps)."""
  config = _digits(data_dir, train_crop="inception", flip=True)
  source = sources.open_source(config)
  run = _take(config, source, seed=3, start_step=0, steps=47)
  again = _take(config, source, seed=3, start_step=0, steps=3)
  resumed = _take(config, source, seed=3, start_step=43, steps=4)
  other_seed = _take(config, source, seed=4, start_step=0, steps=1)
  for a, b in zip(run, again):
    np.testing.assert_array_equal(a["image"], b["image"])
  for a, b in zip(run[43:], resumed):
    np.testing.assert_array_equal(a["label"], b["label"])
    np.testing.assert_array_equal(a["image"], b["image"])
  assert not np.array_equal(run[0]["image"], other_seed[0]["image"])
  # The two epochs are shuffled differently, and augmentation differs between epochs.
  assert not np.array_equal(run[0]["label"], run[45]["label"])


def test_video_train_resumes_exactly(data_dir):
  config = _tiny_video(data_dir)
  source = sources.open_source(config)
  run = _take(config, source, seed=0, start_step=0, steps=12, local_batch=8)
  resumed = _take(config, source, seed=0, start_step=9, steps=3, local_batch=8)
  for a, b in zip(run[9:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])


def test_host_split_arithmetic():
  assert [distribute.host_range(11, i, 3) for i in range(3)] == [(0, 4), (4, 8), (8, 11)]
  for n in (0, 1, 7, 360):
    for count in (1, 2, 3, 8):
      ranges = [distribute.host_range(n, i, count) for i in range(count)]
      assert ranges[0][0] == 0 and ranges[-1][1] == n
      assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
  assert distribute.num_eval_batches([181, 180], 32) == 6


def test_two_hosts_split_eval_and_train(data_dir):
  """Two simulated processes read disjoint shares that together are the whole split."""
  config = _digits(data_dir)
  source = sources.open_source(config)
  assert [source.num_examples("test", i, 2) for i in range(2)] == [180, 180]
  assert [source.num_examples("train", i, 2) for i in range(2)] == [719, 718]
  single = _eval_images(config, source, 0, 1, local_batch=64)
  shares = [_eval_images(config, source, i, 2, local_batch=32) for i in range(2)]
  assert shares[0][1] == shares[1][1]  # Same number of batches on both processes.
  np.testing.assert_array_equal(np.concatenate([shares[0][0], shares[1][0]]), single[0])
  # Training: each process reads its own share (no example on both).
  keys = []
  for i in range(2):
    raw = source.read("train", i, 2, shuffle_files=True)
    keys.append({ex["raw"] for ex in raw.as_numpy_iterator()})
  assert not keys[0] & keys[1]
  assert len(keys[0]) + len(keys[1]) > 1400  # A few digits are pixel-identical duplicates.


def _eval_images(config, source, process_index, process_count, local_batch):
  ds = pipeline.eval_dataset(config, source, local_batch_size=local_batch, split="test",
                             process_index=process_index, process_count=process_count)
  batches = list(ds.as_numpy_iterator())
  images = np.concatenate([b["image"][b["mask"]] for b in batches])
  return images, len(batches)


def test_batch_size_not_divisible(data_dir):
  with pytest.raises(ValueError, match="not divisible by the 8 devices.*multiple of 8"):
    data.train_iterator(_digits(data_dir), global_batch_size=12,
                        sharding=_sharding(jax.devices()), seed=0)
  with pytest.raises(ValueError, match="not divisible by the 2 processes"):
    distribute.local_batch_size(9, _sharding(jax.devices()[:1]), process_count=2)


def test_unprepared_dataset_fails_fast_offline(tmp_path):
  config = data.default_config()
  config.update(dataset="cifar10", data_dir=str(tmp_path))
  start = time.perf_counter()
  with pytest.raises(data.DatasetNotPreparedError, match="tfds build cifar10"):
    data.get_info(config)
  assert time.perf_counter() - start < 10


def test_label_out_of_range_is_a_clear_error(data_dir):
  config = _digits(data_dir)
  source = dataclasses.replace(sources.open_source(config), num_classes=5)
  ds = pipeline.eval_dataset(config, source, local_batch_size=64, split="test",
                             process_index=0, process_count=1)
  with pytest.raises(data.BadDataError, match=r"label outside \[0, 5\)"):
    list(pipeline._numpy_batches(ds, "digits test"))


def test_config_errors(data_dir):
  with pytest.raises(ValueError, match="Unknown config.data keys.*batch"):
    data.get_info({"dataset": "digits", "batch": 3})
  with pytest.raises(ValueError, match="flip=False"):
    data.get_info(_tiny_video(data_dir, flip=True))
  with pytest.raises(ValueError, match="value_range=None"):
    data.get_info(_digits(data_dir, mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2)))
  with pytest.raises(ValueError, match="no split 'validation'.*test"):
    data.get_info(_digits(data_dir, eval_split="validation"))


def test_cache_does_not_change_the_stream(data_dir):
  config = _digits(data_dir, train_crop="random_crop", resize_small=10)
  cached = _digits(data_dir, train_crop="random_crop", resize_small=10, cache=True)
  source = sources.open_source(config)
  plain = _take(config, source, seed=1, start_step=0, steps=4, local_batch=512)
  for a, b in zip(plain, _take(cached, source, seed=1, start_step=0, steps=4, local_batch=512)):
    np.testing.assert_array_equal(a["image"], b["image"])


def test_unknown_dataset_name(tmp_path):
  with pytest.raises(ValueError, match="Unknown dataset 'no_such_dataset'"):
    data.get_info({"dataset": "no_such_dataset", "data_dir": str(tmp_path)})


def _copies(batch, repeats):
  """[r * m, ...] -> [r, m, ...]: copy j of the step's m examples is rows j*m .. j*m+m-1."""
  return batch.reshape((repeats, -1) + batch.shape[1:])


def test_repeated_augmentation_batch_composition(data_dir):
  """DeiT's r = 3: each batch is m examples x 3 augmentations, on 1 and on 2 processes."""
  plain = _digits(data_dir, train_crop="resize", repeated_augment=3)
  source = sources.open_source(plain)
  one = _take(plain, source, seed=2, start_step=0, steps=3, local_batch=12)
  for batch in one:
    images, labels = _copies(batch["image"], 3), _copies(batch["label"], 3)
    # Without augmentation the three copies are the same image with the same label ...
    np.testing.assert_array_equal(images[0], images[1])
    np.testing.assert_array_equal(images[0], images[2])
    np.testing.assert_array_equal(labels[0], labels[2])
    # ... and the m = 4 examples are different images.
    assert len({im.tobytes() for im in images[0]}) == 4
  # With augmentation each copy is augmented on its own (same label, other pixels).
  augmented = _digits(data_dir, train_crop="resize", repeated_augment=3,
                      augment="rotate(20)|translate(0.2)")
  batch = _take(augmented, source, seed=2, start_step=0, steps=1, local_batch=12)[0]
  images = _copies(batch["image"], 3)
  np.testing.assert_array_equal(_copies(batch["label"], 3)[1], _copies(one[0]["label"], 3)[0])
  for i in range(4):
    assert not np.array_equal(images[0, i], images[1, i])
    assert not np.array_equal(images[1, i], images[2, i])
  # Resuming at step 2 reads exactly the rest of the stream.
  resumed = _take(plain, source, seed=2, start_step=2, steps=1, local_batch=12)[0]
  np.testing.assert_array_equal(resumed["image"], one[2]["image"])

  # Two processes: each batch is its own m = 2 examples x 3, and the processes' examples
  # are different images (disjoint shares of the split).
  halves = [_take(plain, source, seed=2, start_step=0, steps=3, local_batch=6, process_index=p,
                  process_count=2) for p in range(2)]
  for step in range(3):
    seen = []
    for p in range(2):
      images = _copies(halves[p][step]["image"], 3)
      np.testing.assert_array_equal(images[0], images[2])
      seen += [im.tobytes() for im in images[0]]
    assert len(set(seen)) == 4

  # With data.train_shards=2 the global batch of one process is the two shards' batches,
  # each composed as above: the same batches as two processes read.
  sharded = _digits(data_dir, train_crop="resize", repeated_augment=3, train_shards=2,
                    augment="rotate(20)")
  batch = next(data.train_iterator(sharded, global_batch_size=12,
                                   sharding=_sharding(jax.devices()[:2]), seed=2))
  shards = [_take(sharded, source, seed=2, start_step=0, steps=1, local_batch=6, process_index=p,
                  process_count=2)[0] for p in range(2)]
  np.testing.assert_array_equal(np.asarray(batch["image"]),
                                np.concatenate([s["image"] for s in shards]))

  with pytest.raises(ValueError, match="repeated_augment=3 must divide the batch"):
    _take(plain, source, seed=2, start_step=0, steps=1, local_batch=8)
