"""Train-step and inference throughput of registered models on the local devices.

    python benchmarks/train_throughput.py --models ViT-B_16 --batch_size 8 --steps 3
    python benchmarks/train_throughput.py --models ViT-Ti_16,ViT-S_16,ViT-B_16 \
        --variants plain,scan_remat --dtypes float32,bfloat16
    # GPU: add cuDNN's fused (flash) attention next to XLA's
    python benchmarks/train_throughput.py --models ViT-B_16 --dtypes bfloat16 \
        --attention xla,cudnn --batch_size 128 --steps 20

Prints one table row per (model, variant, dtype, attention): compile seconds, train
images/s (forward + backward + SGD update: the driver's real train step), inference
images/s, forward GFLOPs per image and train TFLOP/s from XLA's cost analysis, model
FLOPs utilisation (MFU: train FLOP/s over the device's dense bf16 peak, where the peak
of the device kind is known: GPUs and TPUs) and peak device memory (XLA's memory
analysis: arguments + temporaries of the train step). The batch is split over all local
devices. Synthetic inputs: this measures the model, not the input pipeline
(benchmarks/input_pipeline.py measures that).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gpu_check  # noqa: E402  (benchmarks/gpu_check.py: the bf16 peak table, cost analysis)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import timing  # noqa: E402  (benchmarks/timing.py)
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from vit_jax import models  # noqa: E402
from vit_jax.driver import config as config_lib  # noqa: E402
from vit_jax.driver import optim, steps  # noqa: E402

VARIANTS = {
    "plain": {},
    "scan": {"scan_layers": True},
    "remat": {"remat": True},
    "scan_remat": {"scan_layers": True, "remat": True},
}

def peak_flops(device) -> float | None:
  return gpu_check.peak_flops(getattr(device, "device_kind", ""))


_cost = gpu_check.xla_cost


def _seconds_per_call(fn, *args, steps_: int) -> tuple[float, float]:
  """(median seconds per call of `fn(*args)`, minor page faults per call): timing.py."""
  return timing.seconds_per_call(lambda: fn(*args), jax.block_until_ready, steps_)


def _setup(name: str, variant: str, dtype: str, attention: str | None, batch: int, image: int,
           optimizer: str = "sgd", **model_options):
  """(model, jitted train step, state, batch) with the batch split over the local devices."""
  model = models.create_model(name, num_classes=1000, dtype=jnp.dtype(dtype),
                              attention_implementation=attention, **VARIANTS[variant],
                              **model_options)
  mesh = Mesh(np.asarray(jax.local_devices()), ("data",))
  data = NamedSharding(mesh, P("data"))
  images = jax.device_put(np.random.RandomState(0).uniform(-1, 1, (batch, image, image, 3))
                          .astype(np.float32), data)
  labels = jax.device_put(np.arange(batch) % 1000, data)
  params = jax.jit(lambda: model.init(jax.random.key(0), images[:1])["params"],
                   out_shardings=NamedSharding(mesh, P()))()
  c = config_lib.base_config()
  c.optimizer.name = optimizer
  tx = optim.create_optimizer(c, params)
  state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                           opt_state=tx.init(params), rng=jax.random.key_data(jax.random.key(1)))
  train_fn = jax.jit(steps.make_train_step(model, tx, c, 1000), donate_argnums=(0,))
  return model, train_fn, state, {"image": images, "label": labels}


def model_flops(name: str, dtype: str, attention: str | None, batch: int, image: int,
                **model_options) -> tuple[float, float]:
  """(train step, forward) FLOPs of the whole batch, from XLA's cost analysis of the
  unrolled model without remat: the model's FLOPs. (Cost analysis counts a scanned
  body once, not once per layer, and remat's recomputation is not model work.)"""
  model, train_fn, state, batch_ = _setup(name, "plain", dtype, attention, batch, image,
                                          **model_options)
  infer = jax.jit(lambda p, x: model.apply({"params": p}, x))
  return (_cost(train_fn.lower(state, batch_)).get("flops", float("nan")),
          _cost(infer.lower(state.params, batch_["image"])).get("flops", float("nan")))


def bench(name: str, variant: str, dtype: str, attention: str | None, batch: int, image: int,
          steps_: int, optimizer: str = "sgd", **model_options) -> dict:
  """One table row; `optimizer` is the driver's (config.optimizer.name), `model_options`
  go to create_model (e.g. gelu_approximate=False)."""
  model, train_fn, state, batch_ = _setup(name, variant, dtype, attention, batch, image,
                                          optimizer, **model_options)
  start = time.perf_counter()
  compiled = train_fn.lower(state, batch_).compile()
  compile_s = time.perf_counter() - start
  memory = compiled.memory_analysis()
  peak = (getattr(memory, "temp_size_in_bytes", 0) + getattr(memory, "argument_size_in_bytes", 0)
          if memory is not None else float("nan"))

  holder = [state]  # the state is donated, so every call threads it through

  def train_step():
    holder[0] = compiled(holder[0], batch_)[0]
    return holder[0]

  train_s, train_faults = _seconds_per_call(train_step, steps_=steps_)
  state = holder[0]

  infer = jax.jit(lambda p, x: model.apply({"params": p}, x))
  infer_s, _ = _seconds_per_call(infer, state.params, batch_["image"], steps_=steps_)
  train_flops, infer_flops = model_flops(name, dtype, attention, batch, image, **model_options)
  train_tflops = train_flops / train_s / 1e12
  device_peak = peak_flops(jax.local_devices()[0])
  return {"model": name, "variant": variant, "dtype": dtype, "attention": attention or "xla",
          "batch": batch, "compile_s": compile_s, "train_img_s": batch / train_s,
          "infer_img_s": batch / infer_s, "gflops_img": infer_flops / batch / 1e9,
          "train_tflops": train_tflops,
          "mfu": (train_tflops * 1e12 / (device_peak * jax.local_device_count())
                  if device_peak else None),
          "peak_gib": peak / 2**30, "train_faults": train_faults}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", default="ViT-B_16")
  parser.add_argument("--variants", default="plain", help=f"comma list of {sorted(VARIANTS)}")
  parser.add_argument("--dtypes", default="float32", help="compute dtypes (params stay f32)")
  parser.add_argument("--attention", default="xla",
                      help="comma list of xla,cudnn (cudnn: GPU only, skipped elsewhere)")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--steps", type=int, default=3)
  args = parser.parse_args()
  device = jax.local_devices()[0]
  print(f"devices: {jax.local_device_count()} x {device.device_kind} ({device.platform}); "
        f"bf16 peak {peak_flops(device) or 'unknown'}; jax {jax.__version__}")
  header = (f"{'model':<9} {'variant':<10} {'dtype':<8} {'attn':<5} {'batch':>5} "
            f"{'compile s':>9} {'train img/s':>11} {'infer img/s':>11} {'GFLOPs/img':>10} "
            f"{'train TFLOP/s':>13} {'MFU':>6} {'peak GiB':>8} {'faults/step':>11}")
  print(header)
  print("-" * len(header))
  for name in args.models.split(","):
    for variant in args.variants.split(","):
      for dtype in args.dtypes.split(","):
        for attention in args.attention.split(","):
          if attention == "cudnn" and device.platform != "gpu":
            print(f"{name:<9} {variant:<10} {dtype:<8} cudnn: skipped, needs a GPU "
                  f"(this is {device.platform})")
            continue
          r = bench(name, variant, dtype, None if attention == "xla" else attention,
                    args.batch_size, args.image_size, args.steps)
          mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
          print(f"{r['model']:<9} {r['variant']:<10} {r['dtype']:<8} {r['attention']:<5} "
                f"{r['batch']:>5} {r['compile_s']:>9.1f} {r['train_img_s']:>11.2f} "
                f"{r['infer_img_s']:>11.2f} {r['gflops_img']:>10.1f} {r['train_tflops']:>13.3f} "
                f"{mfu:>6} {r['peak_gib']:>8.2f} {r['train_faults']:>11.0f}", flush=True)


if __name__ == "__main__":
  main()
