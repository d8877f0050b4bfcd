"""Train-step and inference throughput of registered models on the local devices.

    python benchmarks/train_throughput.py --models ViT-B_16 --batch_size 8 --steps 3
    python benchmarks/train_throughput.py --models ViT-Ti_16,ViT-S_16 --variants plain,scan_remat \
        --dtypes float32,bfloat16

Prints one table row per (model, variant, dtype): compile seconds, train images/s
(forward + backward + SGD update, the driver's real train step), inference images/s,
and, where XLA reports them, forward GFLOPs per image and peak device memory.
Synthetic inputs: this measures the model, not the input pipeline.
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
from vit_jax import config as config_lib  # noqa: E402
from vit_jax import models, optim, steps  # noqa: E402

VARIANTS = {
    "plain": {},
    "scan": {"scan_layers": True},
    "remat": {"remat": True},
    "scan_remat": {"scan_layers": True, "remat": True},
}


def _time(fn, *args, steps_: int) -> float:
  out = fn(*args)
  jax.block_until_ready(out)
  start = time.perf_counter()
  for _ in range(steps_):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / steps_


def bench(name: str, variant: str, dtype: str, batch: int, image: int, steps_: int) -> dict:
  model = models.create_model(name, num_classes=1000, dtype=jnp.dtype(dtype), **VARIANTS[variant])
  images = jnp.asarray(np.random.RandomState(0).uniform(-1, 1, (batch, image, image, 3)),
                       jnp.float32)
  labels = jnp.arange(batch) % 1000
  params = jax.jit(lambda: model.init(jax.random.key(0), images[:1])["params"])()
  c = config_lib.base_config()
  tx = optim.create_optimizer(c, params)
  state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                           opt_state=tx.init(params), rng=jax.random.key_data(jax.random.key(1)))
  batch_ = {"image": images, "label": labels}

  train_fn = jax.jit(steps.make_train_step(model, tx, c, 1000))
  start = time.perf_counter()
  compiled = train_fn.lower(state, batch_).compile()
  compile_s = time.perf_counter() - start
  memory = compiled.memory_analysis()
  peak = getattr(memory, "temp_size_in_bytes", 0) + getattr(memory, "argument_size_in_bytes", 0)

  def run_train(s):
    return compiled(s, batch_)[0]

  state = run_train(state)  # warm-up
  jax.block_until_ready(state)
  t = time.perf_counter()
  for _ in range(steps_):
    state = run_train(state)
  jax.block_until_ready(state)
  train_s = (time.perf_counter() - t) / steps_

  infer = jax.jit(lambda p, x: model.apply({"params": p}, x))
  cost = infer.lower(state.params, images).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  flops = (cost or {}).get("flops", float("nan")) / batch
  infer_s = _time(infer, state.params, images, steps_=steps_)
  return {"model": name, "variant": variant, "dtype": dtype, "batch": batch,
          "compile_s": compile_s, "train_img_s": batch / train_s,
          "infer_img_s": batch / infer_s, "gflops_img": flops / 1e9, "peak_gib": peak / 2**30}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", default="ViT-B_16")
  parser.add_argument("--variants", default="plain")
  parser.add_argument("--dtypes", default="float32")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--steps", type=int, default=3)
  args = parser.parse_args()
  print(f"devices: {jax.devices()}")
  header = (f"{'model':<10} {'variant':<11} {'dtype':<9} {'batch':>5} {'compile s':>9} "
            f"{'train img/s':>11} {'infer img/s':>11} {'GFLOPs/img':>10} {'peak GiB':>8}")
  print(header)
  print("-" * len(header))
  for name in args.models.split(","):
    for variant in args.variants.split(","):
      for dtype in args.dtypes.split(","):
        r = bench(name, variant, dtype, args.batch_size, args.image_size, args.steps)
        print(f"{r['model']:<10} {r['variant']:<11} {r['dtype']:<9} {r['batch']:>5} "
              f"{r['compile_s']:>9.1f} {r['train_img_s']:>11.2f} {r['infer_img_s']:>11.2f} "
              f"{r['gflops_img']:>10.1f} {r['peak_gib']:>8.2f}", flush=True)


if __name__ == "__main__":
  main()
