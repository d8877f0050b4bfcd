"""Our ViTs against timm's PyTorch ViTs, side by side in one run on this machine.

    python benchmarks/timm_compare.py --models ViT-Ti_16,ViT-S_16,ViT-B_16 --batch_size 8
    python benchmarks/timm_compare.py --models families     # one size of each later family
    # torch/timm in another environment (they are never a dependency of vit_jax):
    python benchmarks/timm_compare.py --torch_python /work/bench-venv/bin/python

For each size (224 px, patch 16, 1000 classes, float32 unless --dtypes says otherwise) it
measures a training step (forward, backward, SGD-momentum update) and inference
(forward without gradients) of our model (jax.jit, plain layers, exact-erf GELU as timm)
and of timm's (`vit_tiny_patch16_224`, ...; eager PyTorch, its default), one after the
other, and prints images/s and the ratio ours / timm (> 1: we are faster). timm runs on
CUDA when torch sees a GPU, else on the CPU; bfloat16 runs timm under torch.autocast. Without torch and timm importable (here or through
--torch_python) the timm side is skipped with a message.

Every measurement runs in a fresh subprocess of this script (`--jax_worker`, `--torch_worker`),
so that the two frameworks never share a process, their thread pools do not compete (each
uses every core of the machine), and no model inherits the heap of the one before.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import timing  # noqa: E402  (benchmarks/timing.py; stdlib only: the torch venv imports it too)

TIMM_NAMES = {"ViT-Ti_16": "vit_tiny_patch16_224", "ViT-S_16": "vit_small_patch16_224",
              "ViT-B_16": "vit_base_patch16_224", "ViT-L_16": "vit_large_patch16_224",
              # One size of each later family (`--models families`): LayerScale, registers,
              # distillation, pre-norm, MAP, QuickGELU, SwiGLU and RoPE all on the clock.
              "DeiT-S_16-distilled": "deit_small_distilled_patch16_224",
              "DeiT3-S_16": "deit3_small_patch16_224",
              "DINOv2-S_14-reg4": "vit_small_patch14_reg4_dinov2",
              "DINOv3-S_16": "vit_small_patch16_dinov3",
              "CLIP-B_16": "vit_base_patch16_clip_quickgelu_224",
              "SigLIP-B_16": "vit_base_patch16_siglip_224",
              "MAE-B_16": "vit_base_patch16_224",
              "EVA02-S_14": "eva02_small_patch14_224"}
FAMILY_MODELS = ("DeiT-S_16-distilled", "DeiT3-S_16", "DINOv2-S_14-reg4", "DINOv3-S_16",
                 "CLIP-B_16", "SigLIP-B_16", "MAE-B_16", "EVA02-S_14")


def _import_timm():
  """timm, importable with PyPI's torchvision wheels next to a CPU-only torch.

  Those wheels link CUDA torch, so with a CPU torch their C ops do not load and
  `import torchvision` (which timm imports) stops at registering a fake kernel for one
  of them. ViTs use no torchvision op: skip those registrations and import again.
  """
  import torch  # noqa: PLC0415
  try:
    import timm  # noqa: PLC0415
    return timm
  except RuntimeError as e:
    if "torchvision::" not in str(e):
      raise
  for name in [n for n in sys.modules if n.split(".")[0] in ("torchvision", "timm")]:
    del sys.modules[name]
  register_fake = torch.library.register_fake

  def skip_torchvision_ops(op, *args, **kwargs):
    if isinstance(op, str) and op.startswith("torchvision::"):
      return lambda fn: fn
    return register_fake(op, *args, **kwargs)

  torch.library.register_fake = skip_torchvision_ops
  try:
    import timm  # noqa: PLC0415
  finally:
    torch.library.register_fake = register_fake
  return timm


def torch_bench(name: str, dtype: str, batch: int, image: int, steps: int) -> dict:
  import torch  # noqa: PLC0415
  timm = _import_timm()
  torch.manual_seed(0)
  device = "cuda" if torch.cuda.is_available() else "cpu"  # the device kind ours runs on
  model = timm.create_model(TIMM_NAMES[name], num_classes=1000, img_size=image).to(device)
  images = torch.empty(batch, 3, image, image, device=device).uniform_(-1, 1)
  labels = torch.arange(batch, device=device) % 1000
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
  autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

  def train_step():
    with autocast:
      loss = torch.nn.functional.cross_entropy(model(images), labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()

  def infer():
    with torch.inference_mode(), autocast:
      model(images)

  def seconds(fn):  # timed as ours (benchmarks/timing.py)
    return timing.seconds_per_call(fn, lambda _: sync(), steps)

  model.train()
  train_s, train_faults = seconds(train_step)
  model.eval()
  infer_s, _ = seconds(infer)
  return {"train_img_s": batch / train_s, "infer_img_s": batch / infer_s,
          "train_faults": train_faults,
          "threads": torch.get_num_threads(), "version": f"{device}, torch {torch.__version__}, "
          f"timm {timm.__version__}"}


def _worker(args, python: str, role: str, name: str, dtype: str) -> dict | str:
  """One measurement in a fresh process of `python` (a JSON line), or why it failed."""
  cmd = [python, os.path.abspath(__file__), f"--{role}_worker", "--models", name,
         "--dtypes", dtype, "--batch_size", str(args.batch_size), "--image_size",
         str(args.image_size), "--steps", str(args.steps), "--reuse_host_memory",
         str(args.reuse_host_memory)]
  proc = subprocess.run(cmd, capture_output=True, text=True)
  if proc.returncode:
    last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return f"failed with {python} ({last})"
  return json.loads(proc.stdout.strip().splitlines()[-1])


def jax_bench(name: str, dtype: str, batch: int, image: int, steps: int) -> dict:
  import jax  # noqa: PLC0415
  from train_throughput import bench  # noqa: PLC0415
  result = bench(name, "plain", dtype, None, batch, image, steps, gelu_approximate=False)
  result["version"] = (f"jax {jax.__version__} on {jax.local_device_count()} x "
                       f"{jax.local_devices()[0].device_kind}")
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", default="ViT-Ti_16,ViT-S_16,ViT-B_16")
  parser.add_argument("--dtypes", default="float32")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--torch_python", default="",
                      help="interpreter with torch and timm (default: this one)")
  parser.add_argument("--torch_worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--jax_worker", action="store_true", help=argparse.SUPPRESS)
  timing.add_host_memory_flag(parser)  # passed on to both sides
  args = parser.parse_args()
  timing.apply_host_memory_flag(args)
  if args.torch_worker or args.jax_worker:  # one measurement, as a JSON line
    worker = torch_bench if args.torch_worker else jax_bench  # never both frameworks
    print(json.dumps(worker(args.models, args.dtypes, args.batch_size, args.image_size,
                            args.steps)))
    return

  allocator = "reuse freed memory" if args.reuse_host_memory else "glibc defaults"
  print(f"{os.cpu_count()} CPUs; batch {args.batch_size}, {args.image_size} px; median of 3 "
        f"runs of {args.steps} steps after >= 4 steps and 10 s of warm-up; every measurement "
        f"in a fresh process; allocator: {allocator}")
  header = (f"{'model':<19} {'dtype':<8} {'ours train':>10} {'timm train':>10} {'ratio':>6} "
            f"{'ours infer':>10} {'timm infer':>10} {'ratio':>6}")
  print(f"{header}\n{'-' * len(header)}  (images/s)", flush=True)
  versions = set()
  names = FAMILY_MODELS if args.models == "families" else args.models.split(",")
  for name in names:
    for dtype in args.dtypes.split(","):
      ours = _worker(args, sys.executable, "jax", name, dtype)
      if isinstance(ours, str):
        raise RuntimeError(f"our side {name} {dtype} {ours}")
      versions.add(f"ours: {ours['version']}")
      theirs = _worker(args, args.torch_python or sys.executable, "torch", name, dtype)
      row = f"{name:<19} {dtype:<8} {ours['train_img_s']:>10.2f} "
      if isinstance(theirs, str):
        print(f"{row}{'-':>10} {'-':>6} {ours['infer_img_s']:>10.2f}   timm skipped: torch/timm "
              f"{theirs}", flush=True)
        continue
      versions.add(f"timm: {theirs['version']}, {theirs['threads']} threads")
      print(f"{row}{theirs['train_img_s']:>10.2f} "
            f"{ours['train_img_s'] / theirs['train_img_s']:>6.2f} {ours['infer_img_s']:>10.2f} "
            f"{theirs['infer_img_s']:>10.2f} {ours['infer_img_s'] / theirs['infer_img_s']:>6.2f}"
            f"   page faults per train step: ours {ours['train_faults']:.0f}, "
            f"timm {theirs['train_faults']:.0f}", flush=True)
  for v in sorted(versions):
    print(v)


if __name__ == "__main__":
  main()
