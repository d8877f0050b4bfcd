"""Our ViTs against timm's PyTorch ViTs, side by side in one run on this machine.

    python benchmarks/timm_compare.py --models ViT-Ti_16,ViT-S_16,ViT-B_16 --batch_size 8
    python benchmarks/timm_compare.py --models families     # one size of each later family
    # torch/timm in another environment (they are never a dependency of vit_jax):
    python benchmarks/timm_compare.py --torch_python /work/bench-venv/bin/python

For each size (224 px, patch 16, 1000 classes, float32 unless --dtypes says otherwise) it
measures a training step (forward, backward, AdamW update; batch --batch_size) and
inference (forward without gradients; batch --infer_batch_size) three ways:

  lib    ours through the library API only (create_model, model.apply, optax.adamw,
         jax.jit), with whatever `import vit_jax` sets up: what a notebook gets;
  drv    ours through the driver's train step (`steps.make_train_step`), as
         `python -m vit_jax.main` trains;
  timm   `vit_tiny_patch16_224`, ...: create_model, torch.optim.AdamW, eager PyTorch,
         glibc's allocator (--timm_reuse_host_memory 1 gives it ours).

Exact-erf GELU on both sides, as timm. It prints images/s, the ratios ours / timm (> 1:
we are faster) and each train step's share of the machine's float32 matmul rate ("peak":
the better of jax's and torch's 2048^3 matmul, measured in the same processes). timm runs
on CUDA when torch sees a GPU, else on the CPU; bfloat16 runs timm under torch.autocast.
Without torch and timm importable (here or through --torch_python) the timm side is
skipped with a message.

With `--models families` it also runs SigLIP 2 NaFlex at native resolution: images of
eight aspect ratios (1:1 to 16:9 and 1:2), each resized to the patch budget
--max_num_patches (256) keeping its aspect ratio, as Siglip2ImageProcessor does; ours
packs them into rows of that many patches (`models.packed.pack_images`, up to 4 images a
row), timm's `naflexvit_base_patch16_siglip` takes them one image a row padded to the
budget (its NaFlex dict input: patches, patch_coord, patch_valid). Both see the same
patches; the table gives images/s and real (non-padding) patch tokens/s.

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
              "EVA02-S_14": "eva02_small_patch14_224",
              # issue 25: RMSNorm + bias-free SwiGLU, PE's RoPE + MAP, learned RoPE, So150m,
              # DINOv3's SwiGLU sizes, SigLIP 2, I-JEPA.
              "PE-Core-Ti_16": "vit_pe_core_tiny_patch16_384",
              "AIMv2-L_14": "aimv2_large_patch14_224",
              "So150m2_16": "vit_so150m2_patch16_reg1_gap_256",
              "RoPE-Mixed-S_16": "vit_small_patch16_rope_mixed_224",
              "DINOv3-S+_16": "vit_small_plus_patch16_dinov3",  # SwiGLU as fc1_g / fc1_x
              "SigLIP-B_32": "vit_base_patch32_siglip_256",  # a SigLIP 2 size (tanh GELU)
              "IJEPA-H_14": "vit_huge_patch14_gap_224"}  # I-JEPA's smallest size
MATMUL_N = 2048  # the float32 matmul that measures the machine's rate ("peak")
FAMILY_MODELS = ("DeiT-S_16-distilled", "DeiT3-S_16", "DINOv2-S_14-reg4", "DINOv3-S_16",
                 "CLIP-B_16", "SigLIP-B_16", "MAE-B_16", "EVA02-S_14", "PE-Core-Ti_16",
                 "AIMv2-L_14", "So150m2_16", "RoPE-Mixed-S_16", "DINOv3-S+_16",
                 "SigLIP-B_32")


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


def torch_bench(args) -> dict:
  """timm written as its users write it: create_model, AdamW, eager PyTorch."""
  import torch  # noqa: PLC0415
  timm = _import_timm()
  torch.manual_seed(0)
  device = "cuda" if torch.cuda.is_available() else "cpu"  # the device kind ours runs on
  model = timm.create_model(TIMM_NAMES[args.models], num_classes=1000,
                            img_size=args.image_size).to(device)
  shape = (3, args.image_size, args.image_size)
  images = torch.empty(args.batch_size, *shape, device=device).uniform_(-1, 1)
  infer_images = torch.empty(args.infer_batch_size, *shape, device=device).uniform_(-1, 1)
  labels = torch.arange(args.batch_size, device=device) % 1000
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
  autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=args.dtypes == "bfloat16")
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

  def train_step():
    with autocast:
      loss = torch.nn.functional.cross_entropy(model(images), labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()

  def infer():
    with torch.inference_mode(), autocast:
      model(infer_images)

  def seconds(fn):  # timed as ours (benchmarks/timing.py)
    return timing.seconds_per_call(fn, lambda _: sync(), args.steps)

  model.train()
  train_s, train_faults = seconds(train_step)
  model.eval()
  infer_s, _ = seconds(infer)
  a = torch.randn(MATMUL_N, MATMUL_N, device=device)
  matmul_s, _ = seconds(lambda: a @ a)
  return {"train_img_s": args.batch_size / train_s,
          "infer_img_s": args.infer_batch_size / infer_s, "train_faults": train_faults,
          "matmul_flops": 2 * MATMUL_N ** 3 / matmul_s,
          "threads": torch.get_num_threads(), "version": f"{device}, torch {torch.__version__}, "
          f"timm {timm.__version__}"}


def jax_library_bench(args) -> dict:
  """Ours written as a library user writes it: no driver, nothing but this code.

  create_model, model.init / model.apply, optax.adamw and jax.jit; whatever `import
  vit_jax` sets up for the process is all the user gets.
  """
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  from vit_jax import models  # noqa: PLC0415
  rand = np.random.RandomState(0)
  shape = (args.image_size, args.image_size, 3)
  images = rand.uniform(-1, 1, (args.batch_size, *shape)).astype(np.float32)
  infer_images = rand.uniform(-1, 1, (args.infer_batch_size, *shape)).astype(np.float32)
  labels = np.arange(args.batch_size) % 1000
  model = models.create_model(args.models, num_classes=1000, dtype=jnp.dtype(args.dtypes),
                              gelu_approximate=False)
  params = jax.jit(model.init)(jax.random.key(0), images[:1])["params"]
  import jax_library  # noqa: PLC0415  (benchmarks/: jax only in the jax worker)
  calls = jax_library.train_and_infer(model, params, images, labels, infer_images)
  train_s, train_faults = timing.seconds_per_call(calls.step, jax.block_until_ready, args.steps)
  infer_s, _ = timing.seconds_per_call(calls.infer, jax.block_until_ready, args.steps)
  a = jnp.asarray(rand.standard_normal((MATMUL_N, MATMUL_N)).astype(np.float32))
  matmul = jax.jit(lambda a: a @ a)
  matmul_s, _ = timing.seconds_per_call(lambda: matmul(a), jax.block_until_ready, args.steps)
  from gpu_check import xla_cost  # noqa: PLC0415  (XLA's cost analysis, as every table)
  flops = xla_cost(calls.lowered().compile()).get("flops", float("nan"))
  return {"train_img_s": args.batch_size / train_s,
          "infer_img_s": args.infer_batch_size / infer_s, "train_faults": train_faults,
          "train_flops": flops, "matmul_flops": 2 * MATMUL_N ** 3 / matmul_s,
          "version": f"jax {jax.__version__} on {jax.local_device_count()} x "
          f"{jax.local_devices()[0].device_kind}"}


def jax_driver_bench(args) -> dict:
  """Ours as `python -m vit_jax.main` runs it: the driver's AdamW train step, its allocator."""
  import jax  # noqa: PLC0415
  from train_throughput import bench  # noqa: PLC0415

  result = bench(args.models, "plain", args.dtypes, None, args.batch_size, args.image_size,
                 args.steps, optimizer="adamw", gelu_approximate=False)
  result["version"] = f"jax {jax.__version__}"
  return result


NAFLEX_MODEL, NAFLEX_TIMM = "SigLIP2-NaFlex-B_16", "naflexvit_base_patch16_siglip"
NAFLEX_ASPECTS = ((1, 1), (3, 4), (4, 3), (9, 16), (16, 9), (1, 2), (2, 1), (2, 3))
NAFLEX_MAX_IMAGES = 4


def naflex_images(count: int, budget: int, patch: int = 16, seed: int = 0) -> list:
  """`count` images [H, W, 3] cycling through NAFLEX_ASPECTS, each the largest grid of its
  aspect ratio within `budget` patches (the patch budget's aspect-preserving resize)."""
  import numpy as np  # noqa: PLC0415

  rand = np.random.RandomState(seed)
  out = []
  for i in range(count):
    ah, aw = NAFLEX_ASPECTS[i % len(NAFLEX_ASPECTS)]
    scale = (budget / (ah * aw)) ** 0.5
    gh, gw = max(1, int(ah * scale)), max(1, int(aw * scale))
    out.append(rand.uniform(-1, 1, (gh * patch, gw * patch, 3)).astype(np.float32))
  return out


def jax_naflex_bench(args) -> dict:
  """Ours at native resolution: packed rows of `max_num_patches` patches (library API)."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415
  import optax  # noqa: PLC0415

  from vit_jax import models  # noqa: PLC0415
  from vit_jax.models.packed import pack_images  # noqa: PLC0415

  model = models.create_model(NAFLEX_MODEL, num_classes=1000, dtype=jnp.dtype(args.dtypes),
                              gelu_approximate=False)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 256, 256, 3)))["params"]
  pack = lambda n: pack_images(naflex_images(n, args.max_num_patches), (16, 16),
                               args.max_num_patches, NAFLEX_MAX_IMAGES)
  train, slots = pack(args.batch_size)
  infer, _ = pack(args.infer_batch_size)
  labels = np.zeros(train.image_ids.shape[:1] + (NAFLEX_MAX_IMAGES,), np.int32)
  present = np.zeros(labels.shape, np.float32)
  for i, slot in enumerate(slots):
    labels[slot], present[slot] = i % 1000, 1.0
  tx = optax.adamw(1e-3)

  def loss_fn(params, batch):
    logits = model.apply({"params": params}, batch, train=True)  # [rows, M, 1000]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(loss * present) / jnp.sum(present)

  @jax.jit
  def train_step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  run = jax.jit(lambda params, batch: model.apply({"params": params}, batch))
  state = [params, tx.init(params)]

  def step():
    state[0], state[1], loss = train_step(state[0], state[1], train)
    return loss

  train_s, _ = timing.seconds_per_call(step, jax.block_until_ready, args.steps)
  infer_s, _ = timing.seconds_per_call(lambda: run(state[0], infer), jax.block_until_ready,
                                       args.steps)
  return {"train_img_s": args.batch_size / train_s, "infer_img_s": args.infer_batch_size / infer_s,
          "train_tokens": int((train.image_ids > 0).sum()),
          "infer_tokens": int((infer.image_ids > 0).sum()),
          "rows": [int(train.patches.shape[0]), int(infer.patches.shape[0])],
          "version": f"jax {jax.__version__}"}


def torch_naflex_bench(args) -> dict:
  """timm's NaFlexViT on the same images: one image a row, padded to the budget."""
  import numpy as np  # noqa: PLC0415
  import torch  # noqa: PLC0415
  timm = _import_timm()
  torch.manual_seed(0)
  model = timm.create_model(NAFLEX_TIMM, num_classes=1000)
  autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.dtypes == "bfloat16")

  def batch(n):
    images, length = naflex_images(n, args.max_num_patches), args.max_num_patches
    patches = np.zeros((n, length, 16 * 16 * 3), np.float32)
    coords = np.zeros((n, length, 2), np.int64)
    valid = np.zeros((n, length), bool)
    for i, im in enumerate(images):
      gh, gw = im.shape[0] // 16, im.shape[1] // 16
      patches[i, :gh * gw] = im.reshape(gh, 16, gw, 16, 3).transpose(0, 2, 1, 3, 4).reshape(
          gh * gw, -1)
      coords[i, :gh * gw] = np.stack(np.divmod(np.arange(gh * gw), gw), -1)
      valid[i, :gh * gw] = True
    return {"patches": torch.from_numpy(patches), "patch_coord": torch.from_numpy(coords),
            "patch_valid": torch.from_numpy(valid)}

  train, infer = batch(args.batch_size), batch(args.infer_batch_size)
  labels = torch.arange(args.batch_size) % 1000
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

  def train_step():
    with autocast:
      loss = torch.nn.functional.cross_entropy(model(train), labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()

  def run():
    with torch.inference_mode(), autocast:
      model(infer)

  model.train()
  train_s, _ = timing.seconds_per_call(train_step, lambda _: None, args.steps)
  model.eval()
  infer_s, _ = timing.seconds_per_call(run, lambda _: None, args.steps)
  return {"train_img_s": args.batch_size / train_s, "infer_img_s": args.infer_batch_size / infer_s,
          "train_tokens": int(train["patch_valid"].sum()),
          "infer_tokens": int(infer["patch_valid"].sum()),
          "version": f"torch {torch.__version__}, timm {timm.__version__}"}


WORKERS = {"torch": torch_bench, "jax_library": jax_library_bench, "jax_driver": jax_driver_bench,
           "jax_naflex": jax_naflex_bench, "torch_naflex": torch_naflex_bench}


def _worker(args, python: str, role: str, name: str, dtype: str) -> dict | str:
  """One measurement in a fresh process of `python` (a JSON line), or why it failed."""
  cmd = [python, os.path.abspath(__file__), "--worker", role, "--models", name,
         "--dtypes", dtype, "--batch_size", str(args.batch_size), "--infer_batch_size",
         str(args.infer_batch_size), "--image_size", str(args.image_size), "--steps",
         str(args.steps), "--timm_reuse_host_memory", str(args.timm_reuse_host_memory),
         "--max_num_patches", str(args.max_num_patches)]
  proc = subprocess.run(cmd, capture_output=True, text=True)
  if proc.returncode:
    last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return f"failed with {python} ({last})"
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", default="ViT-Ti_16,ViT-S_16,ViT-B_16")
  parser.add_argument("--dtypes", default="float32")
  parser.add_argument("--batch_size", type=int, default=8, help="training batch")
  parser.add_argument("--infer_batch_size", type=int, default=32)
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--torch_python", default="",
                      help="interpreter with torch and timm (default: this one)")
  parser.add_argument("--timm_reuse_host_memory", type=int, default=0,
                      help="1: give timm's process the allocator settings of "
                      "vit_jax/host_memory.py too; 0 (default): glibc's, as timm runs")
  parser.add_argument("--max_num_patches", type=int, default=256,
                      help="patch budget of the native-resolution (NaFlex) rows")
  parser.add_argument("--naflex_only", action="store_true",
                      help="only the native-resolution NaFlex comparison")
  parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:  # one measurement, as a JSON line; never both frameworks in one process
    if args.worker == "torch" and args.timm_reuse_host_memory:
      os.environ["VIT_JAX_REUSE_HOST_MEMORY"] = "1"  # before torch starts its threads
      import vit_jax  # noqa: F401, PLC0415  (its __init__ sets the allocator; stdlib only)
    print(json.dumps(WORKERS[args.worker](args)))
    return

  timm_alloc = "reuse freed memory" if args.timm_reuse_host_memory else "glibc defaults"
  print(f"{os.cpu_count()} CPUs; train batch {args.batch_size}, inference batch "
        f"{args.infer_batch_size}, {args.image_size} px, AdamW; median of {timing.REPEATS} runs "
        f"of {args.steps} steps after >= {timing.WARMUP} steps and {timing.WARMUP_SECONDS:.0f} s "
        f"of warm-up; every measurement in a fresh process; timm's allocator: {timm_alloc}")
  header = (f"{'model':<19} {'dtype':<8} {'lib train':>9} {'drv train':>9} {'timm train':>10} "
            f"{'lib/timm':>8} {'drv/timm':>8} {'lib infer':>9} {'timm infer':>10} "
            f"{'lib/timm':>8} {'peak lib':>8} {'peak timm':>9}")
  if not args.naflex_only:
    print(f"{header}\n{'-' * len(header)}  (images/s; peak: train FLOP/s over the float32 "
          "matmul rate measured in the same process)", flush=True)
  versions = set()
  names = FAMILY_MODELS if args.models == "families" else args.models.split(",")
  for name in [] if args.naflex_only else names:
    for dtype in args.dtypes.split(","):
      lib = _worker(args, sys.executable, "jax_library", name, dtype)
      drv = _worker(args, sys.executable, "jax_driver", name, dtype)
      for side, result in (("library", lib), ("driver", drv)):
        if isinstance(result, str):
          raise RuntimeError(f"our {side} side {name} {dtype} {result}")
      versions.add(f"ours: {lib['version']}")
      theirs = _worker(args, args.torch_python or sys.executable, "torch", name, dtype)
      row = (f"{name:<19} {dtype:<8} {lib['train_img_s']:>9.2f} {drv['train_img_s']:>9.2f} ")
      share = lambda r, lib=lib: (lib["train_flops"] / args.batch_size * r["train_img_s"]
                         / max(lib["matmul_flops"], r.get("matmul_flops", 0)))
      if isinstance(theirs, str):
        print(f"{row}{'-':>10} {'-':>8} {'-':>8} {lib['infer_img_s']:>9.2f} {'-':>10} {'-':>8} "
              f"{share(lib):>8.0%}   timm skipped: torch/timm {theirs}", flush=True)
        continue
      versions.add(f"timm: {theirs['version']}, {theirs['threads']} threads")
      versions.add(f"float32 matmul {MATMUL_N}^3: jax {lib['matmul_flops'] / 1e9:.0f} GFLOP/s, "
                   f"torch {theirs['matmul_flops'] / 1e9:.0f} GFLOP/s")
      t_train, t_infer = theirs["train_img_s"], theirs["infer_img_s"]
      print(f"{row}{t_train:>10.2f} {lib['train_img_s'] / t_train:>8.2f} "
            f"{drv['train_img_s'] / t_train:>8.2f} {lib['infer_img_s']:>9.2f} {t_infer:>10.2f} "
            f"{lib['infer_img_s'] / t_infer:>8.2f} {share(lib):>8.0%} {share(theirs):>9.0%}"
            f"   page faults per train step: lib {lib['train_faults']:.0f}, "
            f"driver {drv['train_faults']:.0f}, timm {theirs['train_faults']:.0f}", flush=True)
  if args.models == "families" or args.naflex_only:
    naflex_table(args, versions)
  for v in sorted(versions):
    print(v)


def naflex_table(args, versions: set) -> None:
  """SigLIP 2 NaFlex at native resolution, ours (packed) against timm's NaFlexViT."""
  print(f"\nNative resolution, patch budget {args.max_num_patches} (aspect ratios "
        f"{', '.join(f'{h}:{w}' for h, w in NAFLEX_ASPECTS)}; ours packs up to "
        f"{NAFLEX_MAX_IMAGES} images a row, timm one a row)")
  header = (f"{'model':<34} {'dtype':<8} {'train img/s':>11} {'tok/s':>8} {'infer img/s':>11} "
            f"{'tok/s':>8}")
  print(f"{header}\n{'-' * len(header)}", flush=True)
  for dtype in args.dtypes.split(","):
    for label, role, python in (("ours " + NAFLEX_MODEL, "jax_naflex", sys.executable),
                                ("timm " + NAFLEX_TIMM, "torch_naflex",
                                 args.torch_python or sys.executable)):
      r = _worker(args, python, role, NAFLEX_MODEL, dtype)
      if isinstance(r, str):
        print(f"{label:<34} {dtype:<8} skipped: {r}", flush=True)
        continue
      versions.add(f"{label.split()[0]}: {r['version']}")
      tok = lambda kind, r=r: r[f"{kind}_img_s"] * r[f"{kind}_tokens"] / getattr(
          args, "batch_size" if kind == "train" else "infer_batch_size")
      print(f"{label:<34} {dtype:<8} {r['train_img_s']:>11.2f} {tok('train'):>8.0f} "
            f"{r['infer_img_s']:>11.2f} {tok('infer'):>8.0f}"
            + (f"   packed rows: train {r['rows'][0]}, infer {r['rows'][1]}" if "rows" in r
               else ""), flush=True)


if __name__ == "__main__":
  main()
