"""Trains every ViViT variant on `moving_digits` and tabulates digit and direction accuracy.

    python benchmarks/vivit_moving_digits.py --workdir workdirs/vivit_md [--parallel 2]
    python benchmarks/vivit_moving_digits.py --workdir workdirs/vivit_md --table_only

Each variant is one run of `python -m vit_jax.main --config
configs/vivit_moving_digits.py:VARIANT` (extra `--config.*` flags after `--` are
passed on). The table splits the 20-class top-1 into its two halves, read from
the argmax class (label = 2 * digit + direction): digit accuracy, direction accuracy,
and direction accuracy among the clips whose digit is right. A model that cannot
use the order of the frames (frame_average) sits at ~50% on the direction.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vit_jax import checkpoint, data  # noqa: E402
from vit_jax.driver import config as config_lib  # noqa: E402
from vit_jax.driver import train  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ("spatio_temporal", "factorised_encoder", "factorised_self_attention",
            "factorised_dot_product", "frame_average")


def run(variant: str, workdir: str, extra: list[str]) -> subprocess.Popen:
  cmd = [sys.executable, "-m", "vit_jax.main", "--config",
         f"configs/vivit_moving_digits.py:{variant}", "--workdir", workdir,
         "--config.progress_bar=False", *extra]
  log = open(os.path.join(os.path.dirname(workdir), f"{variant}.log"), "w")
  return subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


def split_accuracy(workdir: str) -> dict[str, float]:
  """Digit / direction accuracy of the run's final parameters on its eval split."""
  with open(os.path.join(workdir, "config.json")) as f:
    config = config_lib.base_config()
    config.update_from_flattened_dict(_flatten(json.load(f)["config"]))
  model = train.build_model(config, 20)
  params = checkpoint.load(workdir, allow_video=True)
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  apply = jax.jit(lambda p, x: model.apply({"params": p}, x))
  preds, labels = [], []
  for batch in data.eval_iterator(config.data, global_batch_size=config.eval_batch_size,
                                  sharding=sharding):
    x = batch["image"]  # [B, V, T, H, W, 3]: average the views' logits, as the driver
    logits = apply(params, x.reshape((-1,) + x.shape[2:])).reshape(x.shape[0], x.shape[1], -1)
    mask = np.asarray(batch["mask"])
    preds.append(np.asarray(jnp.argmax(logits.mean(1), -1))[mask])
    labels.append(np.asarray(batch["label"])[mask])
  pred, label = np.concatenate(preds), np.concatenate(labels)
  digit_ok = pred // 2 == label // 2
  direction_ok = pred % 2 == label % 2
  return {"top1": float(np.mean(pred == label)), "digit": float(digit_ok.mean()),
          "direction": float(direction_ok.mean()),
          "direction_given_digit": float(direction_ok[digit_ok].mean()) if digit_ok.any()
          else float("nan"), "num_examples": int(len(label))}


def _flatten(tree, prefix=""):
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict) and k != "model":
      out.update(_flatten(v, f"{prefix}{k}."))
    elif isinstance(v, dict):
      for mk, mv in v.items():
        out[f"{prefix}{k}.{mk}"] = mv
    else:
      out[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--variants", default=",".join(VARIANTS))
  parser.add_argument("--parallel", type=int, default=1)
  parser.add_argument("--table_only", action="store_true")
  args, extra = parser.parse_known_args()
  extra = [e for e in extra if e != "--"]
  variants = args.variants.split(",")
  wall = {}
  if not args.table_only:
    os.makedirs(args.workdir, exist_ok=True)
    pending, running = list(variants), {}
    while pending or running:
      while pending and len(running) < args.parallel:
        v = pending.pop(0)
        running[v] = (run(v, os.path.join(args.workdir, v), extra), time.perf_counter())
      for v, (proc, start) in list(running.items()):
        if proc.poll() is not None:
          if proc.returncode:
            raise SystemExit(f"{v} failed: see {args.workdir}/{v}.log")
          wall[v] = time.perf_counter() - start
          del running[v]
      time.sleep(2)
  print("| variant | top-1 (20 classes) | digit | direction | direction when digit right "
        "| wall (s) |")
  print("|---|---|---|---|---|---|")
  for v in variants:
    r = split_accuracy(os.path.join(args.workdir, v))
    with open(os.path.join(args.workdir, v, "results.json")) as f:
      assert abs(json.load(f)["top1"] - r["top1"]) < 1e-6, "driver and table disagree"
    print(f"| {v} | {r['top1']:.1%} | {r['digit']:.1%} | {r['direction']:.1%} "
          f"| {r['direction_given_digit']:.1%} | {wall.get(v, float('nan')):.0f} |", flush=True)


if __name__ == "__main__":
  main()
