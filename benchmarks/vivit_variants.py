"""The ViViT paper's model comparison on this machine: per variant, size and cost.

    python benchmarks/vivit_variants.py                       # small (moving_digits) + base
    python benchmarks/vivit_variants.py --sizes small --steps 5
    python benchmarks/vivit_variants.py --sizes base --base_frames 8 --base_batch 1

One row per (size, variant): parameters, forward GFLOPs per clip from XLA's cost
analysis, train clips/s (the driver's train step: forward, backward, SGD-momentum
update) and inference clips/s, on synthetic clips (this measures the model, not
the input pipeline).

  small  ViViT-Nano_4x2 on 8 frames of 16x16 with 20 classes: the from-scratch
         configs/vivit_moving_digits.py model; batch --small_batch.
  base   ViViT-B_16x2 with 400 classes (the paper's Kinetics model). GFLOPs are
         those of the paper's input, 32 frames of 224x224 (compiled, never run). XLA
         counts a multiply-add as 2 FLOPs; the paper's "GFLOPs" are multiply-adds, so
         compare its table (spatio-temporal 455, factorised encoder 284, factorised
         self-attention 372, factorised dot-product 277) with GMACs. Clips/s are
         measured at --base_frames frames (default 8: a 32-frame B/16x2 training
         step takes minutes and several GiB on a CPU) and batch --base_batch.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vit_jax import models  # noqa: E402
from vit_jax.driver import config as config_lib  # noqa: E402
from vit_jax.driver import optim, steps  # noqa: E402
from vit_jax.models import vivit  # noqa: E402

SIZES = {
    # name: (model, classes, (frames, side) measured, (frames, side) for GFLOPs)
    "small": ("ViViT-Nano_4x2", 20, (8, 16), (8, 16)),
    "base": ("ViViT-B_16x2", 400, None, (32, 224)),
}


def _gflops(model, params, clip_shape) -> float:
  """Forward GFLOPs of one clip from XLA's cost analysis (compiled, not run)."""
  x = jax.ShapeDtypeStruct((1,) + clip_shape, jnp.float32)
  cost = jax.jit(lambda p, v: model.apply({"params": p}, v)).lower(params, x).compile()
  cost = cost.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return (cost or {}).get("flops", float("nan")) / 1e9


def _per_second(fn, batch: int, steps_: int) -> float:
  jax.block_until_ready(fn())  # warm-up
  start = time.perf_counter()
  for _ in range(steps_):
    out = fn()
  jax.block_until_ready(out)
  return batch * steps_ / (time.perf_counter() - start)


def bench(size: str, variant: str, *, batch: int, frames: int, side: int, steps_: int) -> dict:
  name, classes, _, (flops_frames, flops_side) = SIZES[size]
  model = models.create_model(name, num_classes=classes, variant=variant)
  clips = jnp.asarray(np.random.RandomState(0).uniform(-1, 1, (batch, frames, side, side, 3)),
                      jnp.float32)
  labels = jnp.arange(batch) % classes
  # Parameters and GFLOPs at the reference input (the position embeddings grow with it).
  flops_clip = (flops_frames, flops_side, flops_side, 3)
  flops_params = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1,) + flops_clip))["params"])
  num_params = sum(x.size for x in jax.tree.leaves(flops_params))
  gflops = _gflops(model, flops_params, flops_clip)

  params = jax.jit(lambda: model.init(jax.random.key(0), clips[:1])["params"])()
  c = config_lib.base_config()  # SGD momentum, as the paper's recipes
  tx = optim.create_optimizer(c, params)
  state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                           opt_state=tx.init(params), rng=jax.random.key_data(jax.random.key(1)))
  batch_ = {"image": clips, "label": labels}
  train_step = jax.jit(steps.make_train_step(model, tx, c, classes))
  holder = {"state": state}

  def train():
    holder["state"] = train_step(holder["state"], batch_)[0]
    return holder["state"].step

  infer = jax.jit(lambda p, x: model.apply({"params": p}, x))
  train_cps = _per_second(train, batch, steps_)
  infer_cps = _per_second(lambda: infer(params, clips), batch, steps_)
  return {"size": size, "model": name, "variant": variant, "params_m": num_params / 1e6,
          "gflops": gflops, "input": f"{frames}x{side}", "batch": batch, "train_cps": train_cps,
          "infer_cps": infer_cps}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", default="small,base")
  parser.add_argument("--variants", default=",".join(vivit.VARIANTS))
  parser.add_argument("--small_batch", type=int, default=32)
  parser.add_argument("--base_batch", type=int, default=1)
  parser.add_argument("--base_frames", type=int, default=8)
  parser.add_argument("--steps", type=int, default=3)
  args = parser.parse_args()
  print(f"devices: {jax.devices()}; {os.cpu_count()} CPUs")
  header = (f"| {'model':<15} | {'variant':<25} | {'params (M)':>10} | {'GFLOPs/clip':>11} "
            f"| {'GMACs/clip':>10} | {'measured at':>11} | {'train clips/s':>13} "
            f"| {'infer clips/s':>13} |")
  print(header)
  print("|" + "|".join("-" * (len(col)) for col in header.split("|")[1:-1]) + "|")
  for size in args.sizes.split(","):
    _, _, measured, _ = SIZES[size]
    frames, side = measured or (args.base_frames, 224)
    batch = args.small_batch if size == "small" else args.base_batch
    for variant in args.variants.split(","):
      r = bench(size, variant, batch=batch, frames=frames, side=side, steps_=args.steps)
      measured_at = f"{r['input']} b{r['batch']}"
      print(f"| {r['model']:<15} | {r['variant']:<25} | {r['params_m']:>10.2f} "
            f"| {r['gflops']:>11.3g} | {r['gflops'] / 2:>10.3g} | {measured_at:>11} "
            f"| {r['train_cps']:>13.2f} | {r['infer_cps']:>13.2f} |", flush=True)


if __name__ == "__main__":
  main()
