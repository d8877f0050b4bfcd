"""Command line: PNG figures of where a model attends, for an image or a video.

  python -m vit_jax.visualize --workdir workdirs/vit_digits --input digit.png --out figs/
  python -m vit_jax.visualize --checkpoint ViT-B_16.npz --input cat.jpg \
      --out figs/

Writes, per input file STEM (arrays from `vit_jax.tools.attention_maps`):
  STEM_rollout.png      the input with the attention-rollout map overlaid, and the
                        predicted top-5 labels;
  STEM_heads.png        the pooling query's raw attention per layer (rows) and head
                        (columns); for "map" pooling a last row with the probe's heads;
                        for videos summed over temporal indices.
Videos also get:
  STEM_frames.png       per temporal index: the frame and its map (the joint
                        rollout, or the factorised encoder's spatial map);
  STEM_temporal.png     factorised encoder / frame_average: the temporal cls's
                        attention over the frames as a bar chart.
Videos are shown with the first evaluation view (clip 0, centre crop).

At native resolution (`--resolution native`, or a run trained that way) each image runs
at its own aspect ratio under the patch budget and its maps are drawn over the file's
own pixels, at the original image shape.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from collections.abc import Sequence  # noqa: E402
from typing import Optional  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # files only; no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from vit_jax.tools import cli  # noqa: E402

PROGRAM = "vit_jax.visualize"


def _display(pixels: np.ndarray, value_range) -> np.ndarray:
  """Model input [h, w, 3] -> [0, 1] for display (inverting value_range, else min-max)."""
  if value_range:
    lo, hi = value_range
    return np.clip((pixels - lo) / (hi - lo), 0.0, 1.0)
  span = pixels.max() - pixels.min()
  return (pixels - pixels.min()) / (span if span > 0 else 1.0)


def _overlay(ax, image: np.ndarray, heat: np.ndarray, title: str = "") -> None:
  """`heat` [gh, gw] stretched over `image` [h, w, 3] (nearest: one block per patch)."""
  h, w = image.shape[:2]
  ax.imshow(image, interpolation="nearest")
  ax.imshow(heat, cmap="inferno", alpha=0.6, extent=(-0.5, w - 0.5, h - 0.5, -0.5),
            interpolation="nearest")
  ax.set_title(title, fontsize=8)
  ax.axis("off")


def _save(fig, path: str, dpi: int) -> str:
  fig.savefig(path, dpi=dpi, bbox_inches="tight")
  plt.close(fig)
  return path


def rollout_figure(image: np.ndarray, heat: np.ndarray, best: Sequence[tuple[str, float]],
                   path: str, dpi: int = 100) -> str:
  """Input, input with the rollout map overlaid, and the top-k labels as bars."""
  fig, axes = plt.subplots(1, 3, figsize=(10, 3.4), gridspec_kw={"width_ratios": [1, 1, 1.2]})
  axes[0].imshow(image, interpolation="nearest")
  axes[0].set_title("input", fontsize=9)
  axes[0].axis("off")
  _overlay(axes[1], image, heat, "attention rollout")
  names = [name for name, _ in best][::-1]
  axes[2].barh(range(len(best)), [p for _, p in best][::-1], color="tab:blue")
  axes[2].set_yticks(range(len(best)), names, fontsize=8)
  axes[2].set_xlim(0, 1)
  axes[2].set_title(f"top-{len(best)} prediction" if best else "no classification head",
                    fontsize=9)
  axes[2].set_xlabel("probability", fontsize=8)
  return _save(fig, path, dpi)


def heads_figure(layer_heads: np.ndarray, path: str, pool_heads: np.ndarray | None = None,
                 dpi: int = 100) -> str:
  """Grid of raw attention maps: layer_heads [L, H, gh, gw] (+ pool_heads [H, gh, gw])."""
  rows = [(f"layer {i}", layer) for i, layer in enumerate(layer_heads)]
  if pool_heads is not None:
    rows.append(("MAP head", pool_heads))
  num_heads = max(r[1].shape[0] for r in rows)
  fig, axes = plt.subplots(len(rows), num_heads, squeeze=False,
                           figsize=(1.6 * num_heads + 0.6, 1.6 * len(rows)))
  for r, (label, maps) in enumerate(rows):
    for h in range(num_heads):
      ax = axes[r, h]
      ax.axis("off")
      if h < maps.shape[0]:
        ax.imshow(maps[h], cmap="viridis", interpolation="nearest")
        ax.set_title(f"{label}, head {h}", fontsize=7)
  fig.suptitle("pooling query's attention per layer and head", fontsize=9)
  return _save(fig, path, dpi)


def frames_figure(frames: np.ndarray, maps: np.ndarray, tubelet: int, path: str,
                  title: str, dpi: int = 100) -> str:
  """Per temporal index: its first frame with its map. frames [T, h, w, 3], maps [t, gh, gw]."""
  t = maps.shape[0]
  fig, axes = plt.subplots(2, t, squeeze=False, figsize=(1.8 * t + 0.4, 3.8))
  vmax = float(maps.max()) or 1.0
  for i in range(t):
    frame = frames[i * tubelet]
    axes[0, i].imshow(frame, interpolation="nearest")
    axes[0, i].set_title(f"frames {i * tubelet}-{(i + 1) * tubelet - 1}" if tubelet > 1
                         else f"frame {i}", fontsize=7)
    axes[0, i].axis("off")
    h, w = frame.shape[:2]
    axes[1, i].imshow(frame, interpolation="nearest")
    axes[1, i].imshow(maps[i], cmap="inferno", alpha=0.6, vmin=0, vmax=vmax,
                      extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest")
    axes[1, i].axis("off")
  fig.suptitle(title, fontsize=9)
  return _save(fig, path, dpi)


def temporal_figure(temporal: np.ndarray, tubelet: int, path: str, dpi: int = 100) -> str:
  """Bar chart of the temporal cls's attention over the t frame tokens [t]."""
  fig, ax = plt.subplots(figsize=(max(3.0, 0.5 * len(temporal) + 1.5), 2.6))
  ax.bar(range(len(temporal)), temporal, color="tab:orange")
  ax.set_xticks(range(len(temporal)),
                [f"{i * tubelet}" for i in range(len(temporal))], fontsize=7)
  ax.set_xlabel("first frame of the temporal index", fontsize=8)
  ax.set_ylabel("rollout attention", fontsize=8)
  ax.set_title("temporal encoder: attention over frames", fontsize=9)
  return _save(fig, path, dpi)


def visualize(trained, paths: Sequence[str], out_dir: str, k: int = 5, dpi: int = 100,
              failed: Optional[list[tuple[str, str]]] = None) -> list[str]:
  """Writes the figures of every input file under `out_dir`; returns the PNG paths.

  Files that do not decode raise, or with a `failed` list are skipped and listed there.
  """
  from vit_jax.tools import attention_maps, inference  # noqa: PLC0415

  os.makedirs(out_dir, exist_ok=True)
  files, raw = inference.read_inputs(paths, failed)
  if not files:
    return []
  inputs = trained.preprocess(raw)
  value_range = trained.data_config().get("value_range")
  # Native resolution: the input keeps the file's aspect ratio, so its maps are drawn on
  # the file's own pixels at their original shape.
  native = isinstance(inputs, list)
  written = []
  for path, x, original in zip(files, inputs, raw):
    stem = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0])
    # A backbone without a head (its output is features): maps without labels.
    best = (inference.top_k(trained.probabilities(x[None]), trained.class_names, k)[0]
            if trained.class_names else [])
    if trained.is_video:
      x = x[0]  # first evaluation view [T, h, w, 3]
    maps = attention_maps.compute(trained.model, trained.params, x[None])
    image = original / 255.0 if native else _display(x, value_range)
    if trained.is_video:
      tubelet = trained.model.tubelet_size
      # The rollout summed over time, shown on the middle frame.
      written.append(rollout_figure(image[len(image) // 2], maps.rollout[0].sum(0), best,
                                    stem + "_rollout.png", dpi))
      written.append(heads_figure(maps.layer_heads[:, 0].sum(2), stem + "_heads.png", dpi=dpi))
      factorised = trained.model.variant in ("factorised_encoder", "frame_average")
      title = ("spatial encoder's rollout per temporal index" if factorised
               else "rollout per temporal index")
      written.append(frames_figure(image, maps.rollout[0], tubelet, stem + "_frames.png",
                                   title, dpi))
      if maps.temporal is not None:
        written.append(temporal_figure(maps.temporal[0], tubelet, stem + "_temporal.png", dpi))
    else:
      written.append(rollout_figure(image, maps.rollout[0], best, stem + "_rollout.png", dpi))
      pool = None if maps.pool_heads is None else maps.pool_heads[0]
      written.append(heads_figure(maps.layer_heads[:, 0], stem + "_heads.png", pool, dpi))
  return written


def _define_flags() -> None:
  cli.define_flags("With --checkpoint: input size.")
  flags.DEFINE_string("out", None, "Output folder for the PNG files.")
  flags.DEFINE_integer("top_k", 5, "Labels shown with the rollout.")
  flags.DEFINE_integer("dpi", 100, "Resolution of the figures.")
  cli.list_in_help(__name__)


def main(argv):
  f = flags.FLAGS
  if not f.out:
    raise app.UsageError("Pass --out DIR for the PNG files.")
  written, failed = cli.run_on_inputs(PROGRAM, argv, lambda trained, inputs, failed: visualize(
      trained, inputs, f.out, k=f.top_k, dpi=f.dpi, failed=failed))
  for path in written:
    print(path)
  cli.finish(PROGRAM, failed)


def run() -> None:
  """`python -m vit_jax.visualize` (vit_jax/visualize.py) lands here."""
  cli.run(_define_flags, main)


if __name__ == "__main__":
  run()
