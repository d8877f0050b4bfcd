"""The attention-family ablation: `configs/vit_digits.py` once per attention score.

    python benchmarks/attention_family.py [--workdir /tmp/vit_jax_attention_family]
        [--scores scaled_dot,dot,...] [--steps N]

For each score this runs exactly

    python -m vit_jax.main --config configs/vit_digits.py --workdir WORKDIR/<score> \\
        --config.model.attention_score=<score>

in a fresh workdir (the bundled dataset is prepared first, outside the timing) and
prints a markdown table: test top-1, the median training step time (from the
`images_per_sec` the driver logs every 100 steps; compilation, evaluation and
checkpointing excluded), the compile time, the wall time of the whole run and the
parameter count. The runs are sequential so they do not share the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCORES = ("scaled_dot", "dot", "bilinear", "additive", "cosine")


def run(score: str, workdir: str, steps: int | None) -> dict:
  """Trains vit_digits with `score`; returns its results and timings."""
  shutil.rmtree(workdir, ignore_errors=True)
  flags = [f"--config.model.attention_score={score}", "--config.progress_bar=False"]
  if steps:
    flags.append(f"--config.total_steps={steps}")
  start = time.perf_counter()
  subprocess.run([sys.executable, "-m", "vit_jax.main", "--config", "configs/vit_digits.py",
                  "--workdir", workdir, *flags], cwd=REPO, check=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  wall = time.perf_counter() - start
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  with open(os.path.join(workdir, "config.json")) as f:
    batch = json.load(f)["config"]["batch_size"]
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  rates = [r["images_per_sec"] for r in records if "images_per_sec" in r]
  compile_s = next(r["compile_seconds"] for r in records if "compile_seconds" in r)
  return {"top1": results["top1"], "examples": results["num_examples"],
          "step_ms": 1000 * batch / statistics.median(rates), "compile_s": compile_s,
          "wall_s": wall, "params": _num_params(workdir)}


def _num_params(workdir: str) -> int:
  import numpy as np  # noqa: PLC0415

  from vit_jax.checkpoint import orbax_io  # noqa: PLC0415
  params, _ = orbax_io.load_orbax(workdir)
  return int(sum(np.size(x) for x in _leaves(params)))


def _leaves(tree):
  if isinstance(tree, dict):
    for value in tree.values():
      yield from _leaves(value)
  else:
    yield tree


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="/tmp/vit_jax_attention_family")
  parser.add_argument("--scores", default=",".join(SCORES))
  parser.add_argument("--steps", type=int, default=None, help="override total_steps")
  args = parser.parse_args()
  sys.path.insert(0, REPO)
  from vit_jax.data import config as data_config  # noqa: PLC0415
  from vit_jax.data import sources  # noqa: PLC0415

  sources.tfds_builder("digits", data_config.resolve_data_dir({"data_dir": None}))
  print("| attention_score | test top-1 | step time (ms) | compile (s) | wall (s) | parameters |")
  print("|---|---|---|---|---|---|")
  for score in args.scores.split(","):
    r = run(score, os.path.join(args.workdir, score), args.steps)
    print(f"| `{score}` | {100 * r['top1']:.2f}% ({r['examples']}) | {r['step_ms']:.1f} | "
          f"{r['compile_s']:.1f} | {r['wall_s']:.0f} | {r['params']:,} |", flush=True)


if __name__ == "__main__":
  main()
