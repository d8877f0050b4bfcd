"""Our video models against the same transformers models in PyTorch, on this machine.

    python benchmarks/video_compare.py --torch_python /tmp/tv/bin/python
    python benchmarks/video_compare.py --models vjepa2_l --train_batch_size 1 \
        --torch_python /tmp/tv/bin/python

For each model (16 frames, 224 px, 400 classes, float32) it measures a training step
(forward, backward, AdamW update; batch --train_batch_size) and inference (forward
without gradients; batch --infer_batch_size), in clips/s, two ways:

  ours          the model registered in vit_jax.models (create_model), jax.jit, optax.adamw
  transformers  the transformers classifier built from its config (random init), eager
                PyTorch, torch.optim.AdamW

and prints the ratio ours / transformers (> 1: we are faster). Every measurement runs in
a fresh subprocess of this script (`--worker`), so the two frameworks never share a
process and each has every core (timm_compare.py does the same); timing is
benchmarks/timing.py's (warm-up, then the median of timed runs), with a short warm-up by
default because a train step of these models takes tens of seconds on a small CPU.

A model whose registered name is not in our registry (a family added on another branch)
prints "n/a" and the others still run. The transformers side needs torch and
transformers (--torch_python: an interpreter that has them; never a dependency of
vit_jax); without them it prints "-".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import timing  # noqa: E402  (benchmarks/timing.py; stdlib only: the torch side imports it too)

NUM_CLASSES = 400
# key -> (label, our registered names (the first one registered is used), create_model
#         overrides, transformers (config class, model class, config fields of
#         (frames, size)))
MODELS = {
    "vivit_b": ("ViViT-B/16x2", ("ViViT-B_16x2",), {},
                ("VivitConfig", "VivitForVideoClassification",
                 lambda t, s: dict(image_size=s, num_frames=t, tubelet_size=[2, 16, 16]))),
    "videomae_b": ("VideoMAE-B/16x2", ("VideoMAE-B_16x2", "VideoMAE-B_16"), {},
                   ("VideoMAEConfig", "VideoMAEForVideoClassification",
                    lambda t, s: dict(image_size=s, num_frames=t, tubelet_size=2))),
    "timesformer_b": ("TimeSformer-B/16", ("TimeSformer-B_16", "TimeSformer-B_16x1"), {},
                      ("TimesformerConfig", "TimesformerForVideoClassification",
                       lambda t, s: dict(image_size=s, num_frames=t))),
    "vjepa2_l": ("V-JEPA 2-L/16x2", ("VJEPA2-L_16x2",), {},
                 ("VJEPA2Config", "VJEPA2ForVideoClassification",
                  lambda t, s: dict(crop_size=s, frames_per_clip=t))),
}


def _clips(batch: int, args):
  import numpy as np  # noqa: PLC0415
  rand = np.random.RandomState(0)
  return rand.uniform(-1, 1, (batch, args.frames, args.image_size, args.image_size, 3)).astype(
      np.float32)


def torch_bench(args) -> dict:
  """The transformers classifier as its users train it: eager PyTorch, AdamW."""
  import torch  # noqa: PLC0415
  import transformers  # noqa: PLC0415

  _, _, _, (config_cls, model_cls, fields) = MODELS[args.models]
  torch.manual_seed(0)
  config = getattr(transformers, config_cls)(num_labels=NUM_CLASSES,
                                             **fields(args.frames, args.image_size))
  model = getattr(transformers, model_cls)(config)
  # transformers takes pixel_values [B, T, C, H, W]
  clips = torch.from_numpy(_clips(args.train_batch_size, args)).permute(0, 1, 4, 2, 3)
  infer_clips = torch.from_numpy(_clips(args.infer_batch_size, args)).permute(0, 1, 4, 2, 3)
  labels = torch.arange(args.train_batch_size) % NUM_CLASSES
  opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)

  def train_step():
    loss = torch.nn.functional.cross_entropy(model(clips).logits, labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()

  def infer():
    with torch.inference_mode():
      model(infer_clips)

  model.train()
  train_s, _ = _seconds(train_step, lambda _: None, args)
  model.eval()
  infer_s, _ = _seconds(infer, lambda _: None, args)
  return {"train_clip_s": args.train_batch_size / train_s,
          "infer_clip_s": args.infer_batch_size / infer_s,
          "version": f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"transformers {transformers.__version__}, attention "
          f"{model.config._attn_implementation}"}


def jax_bench(args) -> dict:
  """Ours through the library API: create_model, model.apply, optax.adamw, jax.jit."""
  import jax  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  from vit_jax import models  # noqa: PLC0415
  _, names, overrides, _ = MODELS[args.models]
  name = next(n for n in names if n in models.list_models())
  if args.remat:  # recompute each block in the backward pass: what fits a small host
    overrides = dict(overrides, remat=True, scan_layers=True)
  model = models.create_model(name, num_classes=NUM_CLASSES, **overrides)
  clips, infer_clips = _clips(args.train_batch_size, args), _clips(args.infer_batch_size, args)
  labels = np.arange(args.train_batch_size) % NUM_CLASSES
  params = jax.jit(model.init)(jax.random.key(0), clips[:1])["params"]
  import jax_library  # noqa: PLC0415  (benchmarks/: jax only in the jax worker)
  calls = jax_library.train_and_infer(model, params, clips, labels, infer_clips)
  train_s, _ = _seconds(calls.step, jax.block_until_ready, args)
  infer_s, _ = _seconds(calls.infer, jax.block_until_ready, args)
  return {"train_clip_s": args.train_batch_size / train_s,
          "infer_clip_s": args.infer_batch_size / infer_s, "name": name,
          "version": f"jax {jax.__version__} on {jax.local_devices()[0].device_kind}"}


def _seconds(call, wait, args):
  return timing.seconds_per_call(call, wait, args.steps, repeats=args.repeats,
                                 warmup=args.warmup, warmup_seconds=0.0)


WORKERS = {"torch": torch_bench, "jax": jax_bench}


def _registered(key: str) -> str | None:
  """Our registered name of MODELS[key], or None (a family this branch does not have)."""
  from vit_jax import models  # noqa: PLC0415
  return next((n for n in MODELS[key][1] if n in models.list_models()), None)


def _worker(args, python: str, role: str, key: str) -> dict | str:
  """One measurement in a fresh process of `python` (a JSON line), or why it failed."""
  cmd = [python, os.path.abspath(__file__), "--worker", role, "--models", key]
  for flag in ("train_batch_size", "infer_batch_size", "frames", "image_size", "steps",
               "repeats", "warmup", "remat"):
    cmd += [f"--{flag}", str(getattr(args, flag))]
  proc = subprocess.run(cmd, capture_output=True, text=True)
  if proc.returncode:
    last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    killed = " (killed: out of memory? try --remat or a smaller batch)" if (
        proc.returncode < 0) else ""
    return f"failed with {python}, exit {proc.returncode}{killed} ({last[:200]})"
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", default=",".join(MODELS),
                      help=f"comma-separated keys of {sorted(MODELS)}")
  parser.add_argument("--train_batch_size", type=int, default=2)
  parser.add_argument("--infer_batch_size", type=int, default=2)
  parser.add_argument("--frames", type=int, default=16)
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--steps", type=int, default=1, help="calls per timed run")
  parser.add_argument("--repeats", type=int, default=2, help="timed runs (the median)")
  parser.add_argument("--warmup", type=int, default=1, help="untimed calls first")
  parser.add_argument("--remat", type=int, default=0,
                      help="1: our train step with remat=True, scan_layers=True (recomputes "
                      "each block's activations: less memory, more compute)")
  parser.add_argument("--torch_python", default="",
                      help="interpreter with torch and transformers (default: this one)")
  parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:  # one measurement, as a JSON line; never both frameworks in one process
    print(json.dumps(WORKERS[args.worker](args)))
    return
  keys = args.models.split(",")
  unknown = sorted(set(keys) - set(MODELS))
  if unknown:
    parser.error(f"unknown model key(s) {unknown}; choose from {sorted(MODELS)}.")

  print(f"{os.cpu_count()} CPUs; {args.frames} frames at {args.image_size} px, "
        f"{NUM_CLASSES} classes, float32; train batch {args.train_batch_size}, inference batch "
        f"{args.infer_batch_size}, AdamW; median of {args.repeats} runs of {args.steps} "
        f"step(s) after {args.warmup} untimed; every measurement in a fresh process"
        f"{'; ours with remat + scan_layers' if args.remat else ''}")
  header = (f"{'model':<17} {'ours train':>10} {'hf train':>9} {'ratio':>6} "
            f"{'ours infer':>10} {'hf infer':>9} {'ratio':>6}")
  print(f"{header}\n{'-' * len(header)}  (clips/s; ratio: ours / transformers)", flush=True)
  versions = set()
  for key in keys:
    label = MODELS[key][0]
    if _registered(key) is None:
      print(f"{label:<17} {'n/a':>10}   (not in this registry: {', '.join(MODELS[key][1])})",
            flush=True)
      continue
    ours = _worker(args, sys.executable, "jax", key)
    if isinstance(ours, str):  # reported, and the other models still run
      print(f"{label:<17} {'failed':>10}   ours: {ours}", flush=True)
      continue
    versions.add(f"ours: {ours['version']}")
    theirs = _worker(args, args.torch_python or sys.executable, "torch", key)
    if isinstance(theirs, str):
      print(f"{label:<17} {ours['train_clip_s']:>10.3f} {'-':>9} {'-':>6} "
            f"{ours['infer_clip_s']:>10.3f} {'-':>9} {'-':>6}   transformers: {theirs}",
            flush=True)
      continue
    versions.add(f"transformers side: {theirs['version']}")
    print(f"{label:<17} {ours['train_clip_s']:>10.3f} {theirs['train_clip_s']:>9.3f} "
          f"{ours['train_clip_s'] / theirs['train_clip_s']:>6.2f} "
          f"{ours['infer_clip_s']:>10.3f} {theirs['infer_clip_s']:>9.3f} "
          f"{ours['infer_clip_s'] / theirs['infer_clip_s']:>6.2f}", flush=True)
  for v in sorted(versions):
    print(v)


if __name__ == "__main__":
  main()
