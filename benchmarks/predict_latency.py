"""Latency of scoring files with a checkpoint: `python -m vit_jax.predict` against timm.

    python benchmarks/predict_latency.py --model ViT-B_16 --torch_python /tmp/refvenv/bin/python

Both sides start a fresh process per command, as a user running one command does, and
score the same checkpoint file (random weights written once as a timm `.safetensors`,
which both read) on the same JPEGs (320 x 256, resized and centre-cropped to 224):

  ours   `python -m vit_jax.predict --checkpoint FILE --model NAME --input ...`, once with
         an empty compilation cache (cold: it compiles) and once more (warm: the
         persistent cache of vit_jax/compilation_cache.py serves the program);
  timm   a script as a timm user writes it: create_model, load_state_dict of the file,
         timm's eval transform (resolve_data_config / create_transform), PIL, batches of
         the same size under torch.inference_mode, softmax and top-5.

Rows: one image, and a folder of 100. The wall time includes starting Python and
importing the framework; the last column is the forward pass alone of one image in a
warm process (median, benchmarks/timing.py). torch and timm are never a dependency of
vit_jax: without them (here or through --torch_python) the timm column is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import timing  # noqa: E402  (stdlib only)
from timm_compare import TIMM_NAMES, _import_timm  # noqa: E402  (stdlib at import)

IMAGE_HW = (256, 320)
BATCH = 64


def _make_inputs(folder: str, model: str) -> tuple[str, list[str]]:
  """(checkpoint path, image paths): the model's random init as timm safetensors."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415
  from PIL import Image  # noqa: PLC0415

  from vit_jax import checkpoint, models  # noqa: PLC0415
  net = models.create_model(model, num_classes=1000)
  params = jax.jit(net.init)(jax.random.key(0), jnp.zeros((1, 224, 224, 3)))["params"]
  # A zero head would score every class alike; random rows make the top-5 mean something.
  head = params["head"]
  params["head"] = dict(head, kernel=jax.random.normal(jax.random.key(1), head["kernel"].shape))
  path = os.path.join(folder, "model.safetensors")
  checkpoint.save_safetensors_timm(jax.device_get(params), path)
  images = os.path.join(folder, "images")
  os.makedirs(images)
  rand = np.random.RandomState(0)
  paths = []
  for i in range(100):
    paths.append(os.path.join(images, f"{i:03d}.jpg"))
    Image.fromarray(rand.randint(0, 256, IMAGE_HW + (3,), np.uint8)).save(paths[-1], quality=90)
  return path, paths


def _wall(cmd: list[str], env: dict) -> float:
  start = time.perf_counter()
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
  if proc.returncode:
    raise RuntimeError(f"{' '.join(cmd[:4])} ... failed: {proc.stderr.strip()[-500:]}")
  return time.perf_counter() - start


def timm_worker(args) -> None:
  """One timm command: load, transform, score every --input file, print top-5."""
  import torch  # noqa: PLC0415
  from PIL import Image  # noqa: PLC0415
  from safetensors.torch import load_file  # noqa: PLC0415
  timm = _import_timm()
  model = timm.create_model(TIMM_NAMES[args.model], num_classes=1000)
  model.load_state_dict(load_file(args.checkpoint))
  model.eval()
  transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
  files = args.inputs
  if len(files) == 1 and os.path.isdir(files[0]):
    files = sorted(os.path.join(files[0], f) for f in os.listdir(files[0]))
  with torch.inference_mode():
    for start in range(0, len(files), BATCH):
      batch = torch.stack([transform(Image.open(f).convert("RGB"))
                           for f in files[start:start + BATCH]])
      top = model(batch).softmax(-1).topk(5)
      for f, p, c in zip(files[start:start + BATCH], top.values, top.indices):
        print(f, [(int(i), round(float(q), 4)) for i, q in zip(c, p)])
    if args.forward_latency:
      x = batch[:1]
      seconds, _ = timing.seconds_per_call(lambda: model(x), lambda _: None, 3)
      print(json.dumps({"forward_s": seconds}))


def jax_forward_latency(args) -> None:
  """Our forward pass of one preprocessed image in a warm process (what predict calls)."""
  import jax  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  from vit_jax.tools import inference  # noqa: PLC0415
  trained = inference.load_checkpoint(args.checkpoint, args.model)
  x = np.zeros((1, 224, 224, 3), np.float32)
  apply = inference._jitted_apply(trained.model)
  seconds, _ = timing.seconds_per_call(lambda: apply(trained.params, x),
                                       jax.block_until_ready, 3)
  print(json.dumps({"forward_s": seconds}))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="ViT-B_16")
  parser.add_argument("--torch_python", default="",
                      help="interpreter with torch and timm (default: this one)")
  parser.add_argument("--worker", choices=("timm", "jax_forward"), help=argparse.SUPPRESS)
  parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
  parser.add_argument("--forward_latency", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("inputs", nargs="*", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker == "timm":
    return timm_worker(args)
  if args.worker == "jax_forward":
    return jax_forward_latency(args)

  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
  with tempfile.TemporaryDirectory() as tmp:
    ckpt, paths = _make_inputs(tmp, args.model)
    torch_python = args.torch_python or sys.executable
    print(f"{os.cpu_count()} CPUs; {args.model}, random weights, {IMAGE_HW[1]}x{IMAGE_HW[0]} "
          f"JPEGs; wall seconds of a fresh process per command, batches of <= {BATCH}")
    header = (f"{'inputs':<10} {'ours cold':>9} {'ours warm':>9} {'timm':>7} {'warm/timm':>9}")
    print(f"{header}\n{'-' * len(header)}", flush=True)
    for label, inputs in (("1 image", paths[:1]), ("100 images", [os.path.dirname(paths[0])])):
      cache = tempfile.mkdtemp(dir=tmp)
      ours = [sys.executable, "-m", "vit_jax.predict", "--checkpoint", ckpt, "--model",
              args.model, f"--compilation_cache={cache}", "--batch_size", str(BATCH),
              "--input", *inputs]
      cold, warm = _wall(ours, env), _wall(ours, env)
      try:
        theirs = _wall([torch_python, os.path.abspath(__file__), "--worker", "timm",
                        "--model", args.model, "--checkpoint", ckpt, *inputs], env)
        print(f"{label:<10} {cold:>9.1f} {warm:>9.1f} {theirs:>7.1f} {warm / theirs:>9.2f}",
              flush=True)
      except RuntimeError as e:
        print(f"{label:<10} {cold:>9.1f} {warm:>9.1f}   timm skipped: {e}", flush=True)
    forward = lambda cmd: json.loads(subprocess.run(
        cmd, env=env, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
    ours_s = forward([sys.executable, os.path.abspath(__file__), "--worker", "jax_forward",
                      "--model", args.model, "--checkpoint", ckpt])["forward_s"]
    line = f"forward of one image in a warm process: ours {1e3 * ours_s:.0f} ms"
    try:
      timm_s = forward([torch_python, os.path.abspath(__file__), "--worker", "timm",
                        "--forward_latency", "--model", args.model, "--checkpoint", ckpt,
                        paths[0]])["forward_s"]
      line += f", timm {1e3 * timm_s:.0f} ms (ours / timm time {ours_s / timm_s:.2f})"
    except subprocess.CalledProcessError:
      line += ", timm skipped"
    print(line)


if __name__ == "__main__":
  main()
