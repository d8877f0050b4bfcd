"""Image-to-video transfer on `moving_digits`: ViViT from the canvas image run vs. from scratch.

    python benchmarks/video_transfer.py --workdir workdirs/video_transfer [--seeds 0,1,2]
    python benchmarks/video_transfer.py --workdir workdirs/video_transfer --table_only

First the image run, `python -m vit_jax.main --config configs/vit_digits.py:canvas` (ViT-Nano/4
on `digits/canvas`: moving_digits' frames as still images), into WORKDIR/vit_digits_canvas
(skipped when it holds a finished run). Then, per seed, two runs of
`configs/vivit_moving_digits.py:VARIANT,vit_canvas` that differ only in
`init_from.path`: that run's workdir ("init") or nothing ("scratch", the same model, steps
and seed from random parameters). The seed sets both the parameters it does not take
from the image run and the data order. Extra `--config.*` flags after `--` go to every
video run.

The table: each run's test top-1 (20 classes, all 600 test clips, from the run's
results.json), their mean and spread (max - min) over the seeds, and whether the
initialised model beats scratch by more than the seed spread: the difference of the means
exceeds the larger of the two spreads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_RUN = "vit_digits_canvas"


def _launch(config: str, workdir: str, extra: list[str]) -> subprocess.Popen:
  cmd = [sys.executable, "-m", "vit_jax.main", "--config", config, "--workdir", workdir,
         "--config.progress_bar=False", *extra]
  log = open(f"{workdir}.log", "w")
  return subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


def _results(workdir: str) -> dict | None:
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def run_all(jobs: dict[str, tuple[str, list[str]]], root: str, parallel: int) -> dict[str, float]:
  """Runs `jobs` (name -> (config, flags)) into root/name, `parallel` at a time; wall seconds."""
  pending, running, wall = list(jobs), {}, {}
  while pending or running:
    while pending and len(running) < parallel:
      name = pending.pop(0)
      config, flags = jobs[name]
      running[name] = (_launch(config, os.path.join(root, name), flags), time.perf_counter())
    for name, (proc, start) in list(running.items()):
      if proc.poll() is not None:
        if proc.returncode:
          raise SystemExit(f"{name} failed: see {os.path.join(root, name)}.log")
        wall[name] = time.perf_counter() - start
        del running[name]
    time.sleep(2)
  return wall


def table(top1: dict[str, dict[int, float]], seeds: list[int],
          wall: dict[str, float]) -> tuple[list[str], bool]:
  """The markdown rows of the comparison and whether init wins by more than the spread.

  top1: {"init": {seed: top-1}, "scratch": {seed: top-1}}.
  """
  rows = ["| seed | from the canvas image run | from scratch | difference | wall (s) init / scratch |",
          "|---|---|---|---|---|"]
  for s in seeds:
    i, r = top1["init"][s], top1["scratch"][s]
    times = " / ".join(f"{wall[f'{k}_seed{s}']:.0f}" if f"{k}_seed{s}" in wall else "-"
                       for k in ("init", "scratch"))
    rows.append(f"| {s} | {i:.1%} | {r:.1%} | {i - r:+.1%} | {times} |")
  mean = {k: sum(v[s] for s in seeds) / len(seeds) for k, v in top1.items()}
  spread = {k: max(v[s] for s in seeds) - min(v[s] for s in seeds) for k, v in top1.items()}
  rows.append(f"| mean | {mean['init']:.1%} | {mean['scratch']:.1%} "
              f"| {mean['init'] - mean['scratch']:+.1%} | |")
  rows.append(f"| spread (max - min) | {spread['init']:.1%} | {spread['scratch']:.1%} | | |")
  wins = mean["init"] - mean["scratch"] > max(spread.values())
  return rows, wins


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--variant", default="factorised_encoder")
  parser.add_argument("--parallel", type=int, default=1)
  parser.add_argument("--table_only", action="store_true")
  args, extra = parser.parse_known_args()
  extra = [e for e in extra if e != "--"]
  seeds = [int(s) for s in args.seeds.split(",")]
  root = os.path.abspath(args.workdir)
  image_workdir = os.path.join(root, IMAGE_RUN)
  video_config = f"configs/vivit_moving_digits.py:{args.variant},vit_canvas"
  jobs = {}
  for s in seeds:
    for kind, path in (("init", image_workdir), ("scratch", "")):
      jobs[f"{kind}_seed{s}"] = (video_config, [f"--config.init_from.path={path}",
                                                f"--config.seed={s}", *extra])
  wall = {}
  if not args.table_only:
    os.makedirs(root, exist_ok=True)
    if _results(image_workdir) is None:
      wall.update(run_all({IMAGE_RUN: ("configs/vit_digits.py:canvas", [])}, root, 1))
    wall.update(run_all(jobs, root, args.parallel))

  image = _results(image_workdir)
  if image is None:
    raise SystemExit(f"No finished image run in {image_workdir}: run without --table_only.")
  top1 = {"init": {}, "scratch": {}}
  for name in jobs:
    results = _results(os.path.join(root, name))
    if results is None:
      raise SystemExit(f"{name} has no results.json in {root}: run without --table_only.")
    kind, seed = name.split("_seed")
    top1[kind][int(seed)] = results["top1"]
  print(f"Image run {image_workdir}: digits/canvas test top-1 {image['top1']:.1%} "
        f"(step {image['step']}" + (f", {wall[IMAGE_RUN]:.0f} s)" if IMAGE_RUN in wall else ")"))
  print(f"Video runs: {video_config} {' '.join(extra)}")
  rows, wins = table(top1, seeds, wall)
  print("\n".join(rows))
  print(f"Initialised beats scratch by more than the seed spread: {'yes' if wins else 'no'}.")


if __name__ == "__main__":
  main()
