"""Wall time and accuracy of the CPU demo jobs: vit_digits, then its fine-tuning demo.

    python benchmarks/digits_job.py [--workdir /tmp/digits_bench]

Runs exactly the commands of the configs' docstrings in fresh workdirs (the
bundled dataset is prepared first, outside the timing) and prints one row per
job: wall seconds, steps, test top-1 and the number of test examples.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(config: str, workdir: str, *flags: str) -> tuple[float, dict]:
  shutil.rmtree(workdir, ignore_errors=True)
  start = time.perf_counter()
  subprocess.run([sys.executable, "-m", "vit_jax.main", "--config", config, "--workdir", workdir,
                  "--config.progress_bar=False", *flags], cwd=REPO, check=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  wall = time.perf_counter() - start
  with open(os.path.join(workdir, "results.json")) as f:
    return wall, json.load(f)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="/tmp/vit_jax_digits_bench")
  args = parser.parse_args()
  sys.path.insert(0, REPO)
  from vit_jax.data import config as data_config  # noqa: PLC0415
  from vit_jax.data import sources

  sources.tfds_builder("digits", data_config.resolve_data_dir({"data_dir": None}))
  scratch = os.path.join(args.workdir, "vit_digits")
  rows = [("vit_digits", *run("configs/vit_digits.py", scratch))]
  rows.append(("vit_digits_finetune", *run("configs/vit_digits_finetune.py",
                                           os.path.join(args.workdir, "finetune"),
                                           f"--config.init_from.path={scratch}")))
  print(f"{'job':<22} {'wall s':>7} {'steps':>6} {'top-1':>7} {'examples':>9}")
  for name, wall, res in rows:
    print(f"{name:<22} {wall:>7.1f} {res['step']:>6} {100 * res['top1']:>6.2f}% "
          f"{res['num_examples']:>9}")


if __name__ == "__main__":
  main()
