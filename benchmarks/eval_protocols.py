"""Evaluation protocols: their speed on cached features, and the trained-vs-random demo table.

    python benchmarks/eval_protocols.py speed [--model ViT-B_16 --image_size 224]
    python benchmarks/eval_protocols.py demo          # after `make run` and the ViViT run

speed (synthetic data, nothing read from disk):
  * feature extraction: images/s of `vit_jax.evals.features.compute` (pooled, cls, patch
    mean and the last 4 blocks' class tokens from one pass) against the model's own
    inference (`model.apply`, logits), both jitted on one batch, median of timed runs;
  * linear sweep: 10 learning rates x 3 feature choices trained at once
    (`vit_jax.evals.linear.train_grid`) over 50,000 x 768 cached features, per epoch;
  * kNN: 10,000 queries against 50,000 x 768 train features, k in {10, 20, 100, 200}.
demo: `python -m vit_jax.evaluate` on the trained digits model of `make run` and the ViViT
of configs/vivit_moving_digits.py, each beside a randomly initialised model of the same
size (`random:`), through configs/evals/digits.py and configs/evals/moving_digits.py;
prints a markdown table (benchmarks/README.md, 'Evaluation protocols').
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import timing  # noqa: E402
from vit_jax import models  # noqa: E402
from vit_jax.evals import features, knn, linear  # noqa: E402

FEATURES = ("pooled", "cls", "patch_mean", "cls_last4")


def extraction_row(model_name: str, image_size: int, batch: int) -> dict[str, float]:
  model = models.create_model(model_name, num_classes=1000)
  x = jax.random.normal(jax.random.key(0), (batch, image_size, image_size, 3))
  params = jax.jit(lambda: model.init(jax.random.key(1), x[:1])["params"])()
  infer = jax.jit(lambda p, x: model.apply({"params": p}, x))
  feats = jax.jit(lambda p, x: features.compute(model, p, x, FEATURES))
  wait = lambda out: jax.block_until_ready(out)
  t_infer, _ = timing.seconds_per_call(lambda: infer(params, x), wait, steps=2)
  t_feats, _ = timing.seconds_per_call(lambda: feats(params, x), wait, steps=2)
  return {"inference images/s": batch / t_infer, "features images/s": batch / t_feats}


def _features(n: int, dim: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, classes, n)
  centres = rng.normal(size=(classes, dim)).astype(np.float32)
  return centres[labels] + 2 * rng.normal(size=(n, dim)).astype(np.float32), labels


def linear_row(n: int, dim: int, classes: int, epochs: int) -> dict[str, float]:
  x, y = _features(n, dim, classes, 0)
  feats = [x, x[:, ::-1].copy(), (x * 0.5).copy()]  # 3 feature choices of [N, 768]
  lrs = tuple(np.geomspace(1e-4, 0.1, 10))
  linear.train_grid(feats, y, num_classes=classes, learning_rates=lrs, epochs=1,
                    batch_size=256)  # compile
  start = time.perf_counter()
  heads = linear.train_grid(feats, y, num_classes=classes, learning_rates=lrs, epochs=epochs,
                            batch_size=256)
  jax.block_until_ready(heads)
  seconds = time.perf_counter() - start
  return {"sweep seconds": seconds, "seconds per epoch": seconds / epochs}


def knn_row(n: int, queries: int, dim: int, classes: int) -> dict[str, float]:
  x, y = _features(n, dim, classes, 1)
  q, qy = _features(queries, dim, classes, 2)
  knn.evaluate(x, y, q[:1024], qy[:1024], ks=(10, 20, 100, 200), num_classes=classes)  # compile
  start = time.perf_counter()
  knn.evaluate(x, y, q, qy, ks=(10, 20, 100, 200), num_classes=classes)
  return {"kNN seconds": time.perf_counter() - start}


def speed(args) -> None:
  print(f"devices: {jax.devices()}")
  row = extraction_row(args.model, args.image_size, args.batch)
  print(f"| {args.model} {args.image_size} px, batch {args.batch} | inference "
        f"{row['inference images/s']:.1f} images/s | features ({', '.join(FEATURES)}) "
        f"{row['features images/s']:.1f} images/s |")
  row = linear_row(50_000, 768, args.classes, args.epochs)
  print(f"| linear sweep 10 lr x 3 features, 50,000 x 768, {args.classes} classes, "
        f"{args.epochs} epochs of batch 256 | {row['sweep seconds']:.1f} s "
        f"({row['seconds per epoch']:.1f} s/epoch) |")
  row = knn_row(50_000, 10_000, 768, args.classes)
  print(f"| kNN 10,000 queries x 50,000 x 768, k in (10, 20, 100, 200) | "
        f"{row['kNN seconds']:.1f} s |")


def demo(args) -> None:
  import importlib.util  # noqa: PLC0415

  from vit_jax.evals import cli  # noqa: PLC0415

  def load_config(path):
    spec = importlib.util.spec_from_file_location("eval_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()

  jobs = [("configs/evals/digits.py", args.digits_run, "random:ViT-Nano_2"),
          ("configs/evals/moving_digits.py", args.vivit_run, "random:ViViT-Nano_4x2")]
  rows = []
  for config_path, run, random_source in jobs:
    for source in (run, random_source):
      config = load_config(config_path)
      workdir = os.path.join(args.workdir, source.replace(":", "_").replace("/", "_"))
      start = time.perf_counter()
      out = cli.evaluate(config, source, workdir)
      rows.append((config_path, source, out, time.perf_counter() - start))
  print("| data | source | kNN top-1 (k=20) | linear top-1 | 5-shot top-1 | attentive top-1 "
        "| wall s |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  for config_path, source, out, seconds in rows:
    cells = [out.get(k) for k in ("knn/top1_k20", "linear/top1", "fewshot/5shot_top1",
                                  "attentive/top1")]
    shown = " | ".join("-" if v is None else f"{100 * v:.1f}%" for v in cells)
    print(f"| {os.path.basename(config_path)[:-3]} | {source} | {shown} | {seconds:.0f} |")
  with open(os.path.join(args.workdir, "demo.json"), "w") as f:
    json.dump([{"config": c, "source": s, "results": o, "seconds": t} for c, s, o, t in rows],
              f, indent=1, default=str)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("what", choices=("speed", "demo"))
  parser.add_argument("--model", default="ViT-B_16")
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--classes", type=int, default=100)
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--digits_run", default="workdirs/vit_digits")
  parser.add_argument("--vivit_run", default="workdirs/vivit_md")
  parser.add_argument("--workdir", default="workdirs/eval_protocols")
  args = parser.parse_args()
  (speed if args.what == "speed" else demo)(args)


if __name__ == "__main__":
  jnp.zeros(())  # start the backend before the first timing
  main()
