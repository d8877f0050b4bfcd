"""Train and inference throughput at native resolution against square inputs, same budget.

    python benchmarks/native_throughput.py --model ViT-Ti_16 --budget 256 --batch_size 16

The same B images (aspect ratios drawn from 1:2 to 2:1, log-uniform) as the driver
trains them: square, each resized to the square of `budget` patches (16x16 patches:
256x256 px); native (data.resolution_mode="native"), each resized keeping its aspect
ratio to at most `budget` patches (SigLIP 2's rule, vit_jax/data/native.py) and packed
into rows of `seq_len` patches (data/native.py's Packer, rows = ceil(B / k)), or one
image per row of `budget` patches (the packed path's own cost: attention as long as
square's); and native with NaViT token dropping (half of each image's patches: rows of seq_len / 2 hold as many
images). Model: gap pooling with posemb_resize (the packed path's requirements). Train:
the driver's real step (steps.make_train_step, SGD). Columns: images/s, and tokens/s
counting the images' real patches (padding excluded) alongside all the sequence slots
computed. Synthetic pixels: this measures the model, not decoding (input_pipeline.py's
native table measures the pipeline).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import timing  # noqa: E402  (benchmarks/timing.py)

from vit_jax import models  # noqa: E402
from vit_jax.data import config as data_config_lib  # noqa: E402
from vit_jax.data import native  # noqa: E402
from vit_jax.driver import config as config_lib  # noqa: E402
from vit_jax.driver import optim, steps  # noqa: E402


def _cpu_name() -> str:
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
  except (OSError, subprocess.CalledProcessError):
    return "unknown CPU"
  return next((line.split(":", 1)[1].strip() for line in out.splitlines()
               if line.startswith("Model name")), "unknown CPU")


def _aspect_images(batch: int, patch: int, budget: int, seed: int = 0) -> list[np.ndarray]:
  """B images at their native-resolution sizes for `budget` (pixels in [-1, 1])."""
  rng = np.random.default_rng(seed)
  out = []
  for aspect in np.exp(rng.uniform(np.log(0.5), np.log(2.0), batch)):
    h, w = native.target_size(round(480 * aspect), 480, (patch, patch), budget)
    out.append(rng.uniform(-1, 1, (h, w, 3)).astype(np.float32))
  return out


def _packed_batch(images, labels, c, train: bool):
  """The Packer's batch from images as tf.data's padded_batch hands them over."""
  hmax, wmax = max(i.shape[0] for i in images), max(i.shape[1] for i in images)
  padded = np.zeros((len(images), hmax, wmax, 3), np.float32)
  for i, image in enumerate(images):
    padded[i, :image.shape[0], :image.shape[1]] = image
  batch = {"image": padded, "size": np.asarray([i.shape[:2] for i in images], np.int32),
           "label": labels, "seed": np.stack([np.zeros(len(images)), np.arange(len(images))],
                                             -1).astype(np.int64)}
  return native.Packer(c, train=train)(batch)


def _state(model, image_size: int, c):
  params = jax.jit(lambda: model.init(jax.random.key(0),
                                      jnp.zeros((1, image_size, image_size, 3)))["params"])()
  tx = optim.create_optimizer(c, params)
  return tx, steps.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                              opt_state=tx.init(params),
                              rng=jax.random.key_data(jax.random.key(1)))


def bench(args) -> list[dict]:
  patch, budget, b = 16, args.budget, args.batch_size
  side = int(np.sqrt(budget)) * patch
  model = models.create_model(args.model, num_classes=1000, classifier="gap",
                              posemb_resize="bilinear_antialias")
  c = config_lib.base_config()
  tx, state = _state(model, side, c)
  train_fn = jax.jit(steps.make_train_step(model, tx, c, 1000), donate_argnums=(0,))
  infer = jax.jit(lambda p, x: model.apply({"params": p}, x))
  labels = np.arange(b) % 1000
  images = _aspect_images(b, patch, budget)

  def data_config(**overrides):
    d = data_config_lib.default_config()
    d.update(dict(resolution_mode="native", patch_size=patch, max_num_patches=budget,
                  seq_len=args.seq_len, max_images_per_row=args.seq_len // budget), **overrides)
    return d

  square = {"image": np.random.default_rng(0).uniform(-1, 1, (b, side, side, 3)).astype(
      np.float32), "label": labels}
  drop = data_config(token_drop_rate=0.5, seq_len=args.seq_len // 2)
  cases = [
      ("square", f"{side}x{side}", square),
      ("native, 1 per row", f"rows of {budget}",
       _packed_batch(images, labels, data_config(seq_len=budget, max_images_per_row=1), True)),
      ("native", f"rows of {args.seq_len}", _packed_batch(images, labels, data_config(), True)),
      ("native, drop 0.5", f"rows of {args.seq_len // 2}",
       _packed_batch(images, labels, drop, True)),
  ]
  rows = []
  for name, shape, batch in cases:
    tokens = b * budget
    if "patches" in batch:
      slots = batch["patches"].shape[0] * batch["patches"].shape[1]
      tokens = int((batch["image_ids"] > 0).sum())
      infer_input = native.packed_patches(batch)
    else:
      slots = tokens
      infer_input = batch["image"]
    start = time.perf_counter()
    compiled = train_fn.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    holder = [jax.tree.map(jnp.copy, state)]

    def step(compiled=compiled, batch=batch, holder=holder):
      holder[0] = compiled(holder[0], batch)[0]
      return holder[0]

    train_s, _ = timing.seconds_per_call(step, jax.block_until_ready, args.steps)
    infer_s, _ = timing.seconds_per_call(lambda x=infer_input: infer(state.params, x),
                                         jax.block_until_ready, args.steps)
    rows.append(dict(input=name, shape=shape, rows=batch["label"].shape[0], compile_s=compile_s,
                     train_img_s=b / train_s, train_tok_s=tokens / train_s,
                     train_slot_s=slots / train_s, infer_img_s=b / infer_s,
                     infer_tok_s=tokens / infer_s))
    _print_row(rows[-1])
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="ViT-Ti_16")
  parser.add_argument("--budget", type=int, default=256, help="max_num_patches (a square)")
  parser.add_argument("--seq_len", type=int, default=1024, help="patches per packed row")
  parser.add_argument("--batch_size", type=int, default=16, help="images per batch")
  parser.add_argument("--steps", type=int, default=5)
  args = parser.parse_args()
  print(f"\n{args.model}, {args.batch_size} images, budget {args.budget} patches of 16; "
        f"{jax.devices()[0].platform}: {_cpu_name()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}\n")
  print("| input | batch | rows | compile s | train img/s | train tokens/s (all slots) "
        "| infer img/s | infer tokens/s |")
  print("|---|---|---|---|---|---|---|---|", flush=True)
  bench(args)


def _print_row(r: dict) -> None:
  print(f"| {r['input']} | {r['shape']} | {r['rows']} | {r['compile_s']:.1f} | "
        f"{r['train_img_s']:.1f} | {r['train_tok_s']:.0f} ({r['train_slot_s']:.0f}) | "
        f"{r['infer_img_s']:.1f} | {r['infer_tok_s']:.0f} |", flush=True)


if __name__ == "__main__":
  main()
