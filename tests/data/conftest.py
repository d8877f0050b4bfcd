"""Shared fixtures: the bundled datasets prepared once into a session data dir, folder datasets."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

import vit_jax.data.builders  # noqa: F401  (registers the bundled TFDS builders)
from tests.media import write_video


@pytest.fixture(scope="session")
def data_dir(video_data_dir) -> str:
  """A data dir holding the real prepared `digits` and `moving_digits/tiny` (tests/conftest.py
  prepares them once per session: the path every user takes)."""
  return video_data_dir


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> str:
  """root/{train,test}/{circle,square,stripes}/*: RGB PNGs, grey PNGs and JPEGs of mixed sizes.

  train: 3 classes x 4 files; test: 3 classes x 3 files = 9 (odd on purpose).
  """
  root = str(tmp_path_factory.mktemp("image_folder"))
  rng = np.random.default_rng(0)
  for split, count in (("train", 4), ("test", 3)):
    for label, name in enumerate(("circle", "square", "stripes")):
      os.makedirs(os.path.join(root, split, name))
      for i in range(count):
        h, w = rng.integers(12, 30, size=2)
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        pixels[..., label] = 255  # Makes the class visible in one channel.
        path = os.path.join(root, split, name, f"{i:02d}")
        if i % 3 == 0:
          Image.fromarray(pixels[..., 0]).save(path + ".png")  # Greyscale.
        elif i % 3 == 1:
          Image.fromarray(pixels).save(path + ".jpg", quality=95)
        else:
          Image.fromarray(pixels).save(path + ".png")
  with open(os.path.join(root, "train", "circle", "notes.txt"), "w") as f:
    f.write("not an image; ignored")
  return root


@pytest.fixture(scope="session")
def video_folder(tmp_path_factory) -> str:
  """root/{train,test}/{left,right}/*.{mp4,webm}: a bright bar moving left or right.

  Lengths 6 to 14 frames, so that some are shorter than a 8-frame stride-2 clip.
  """
  root = str(tmp_path_factory.mktemp("video_folder"))
  for split, count in (("train", 2), ("test", 2)):
    for direction in ("left", "right"):
      os.makedirs(os.path.join(root, split, direction))
      for i in range(count):
        num_frames = 6 + 8 * i
        frames = np.zeros((num_frames, 24, 32, 3), np.uint8)
        for t in range(num_frames):
          x = t * 2 if direction == "right" else 30 - t * 2
          frames[t, :, max(x, 0):max(x, 0) + 2] = 255
        codec, ext = ("libx264", "mp4") if i % 2 == 0 else ("libvpx", "webm")
        write_video(os.path.join(root, split, direction, f"{i}.{ext}"), frames, codec)
  return root
