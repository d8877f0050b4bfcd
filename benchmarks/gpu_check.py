"""The one-call GPU check: throughput, MFU, timm beside us, and correctness on the GPU.

    python3 benchmarks/gpu_check.py --out "$OUT"                 # on a GPU, ~7.5 minutes
    python benchmarks/gpu_check.py --dry-run --out /tmp/check    # every row, tiny, on the CPU

Writes `gpu_check.md` (tables) and `gpu_check.json` (every number) to --out, rewritten
after each row, so a run cut short still leaves the rows it finished; `gpu_check.log` (the
workers' stderr); for the ViT-B/16 None and cuDNN rows the optimised HLO of the train step
(`hlo_ROW.txt.gz`) and a jax.profiler trace of 3 steps (`profile_ROW.tar.gz`). The rows,
in the order they run (the most wanted first, so a short budget drops the least wanted):

  env, matmul_bf16    the device, the versions, and the bf16 matmul rate measured here
                      (8192^3): the second denominator of MFU, next to the spec sheet's.
  golden_fp32         the golden-output test's models (tests/models/test_attention_score.py)
                      in float32 on this device against their stored CPU outputs: 1e-4 at
                      matmul precision "highest"; the default precision's error is shown too.
  bf16_logits         bf16 compute against float32, at the tolerance of the tests
                      (tests/models/test_vit.py, test_vivit.py: 5% of the largest logit).
  cudnn_vs_xla        ViT-B/16 in bf16: logits and gradients with cuDNN's fused attention
                      against XLA's attention, relative L2 error (GPU only).
  vit_b16_*           ViT-B/16 train step (AdamW, bf16 compute, float32 params) at the
                      largest batch of 512 / 256 / 128 that fits, per attention
                      implementation (None, "cudnn", "xla"), then scan + remat at the None
                      row's batch; compile seconds, XLA's peak memory, train and inference
                      images/s.
  vit_s16, vit_l16, dinov2_l14_518, vivit_b16x2_st, vivit_b16x2_fe
                      one batch each (its half if it does not fit).
  timm_b16_eager, timm_b16_compile
                      timm's vit_base_patch16_224 (AMP bf16, AdamW) at our ViT-B/16 batch,
                      eager and under torch.compile; skipped where torch/timm do not import.

MFU: model FLOPs over time. The FLOPs are XLA's cost analysis of the train step of the
unrolled model (no scan, whose body cost analysis counts once; no remat, whose recomputation
is not model work) with attention "xla" (cost analysis does not see inside cuDNN's kernel),
so every row of one model at one batch has the same numerator. timm's rows use our ViT-B/16
count. Two denominators: the spec sheet's dense bf16 rate (PEAK_BF16) and the matmul rate
this run measured.

Every row runs in a worker process (`--worker jax|torch`): a row that runs out of memory,
fails to compile or outlives its time budget (ROWS, seconds) is recorded and the next row
runs in a fresh worker; the whole check stops starting rows when --budget_s is spent. The
GPU needs neither TensorFlow nor ml_collections (neither is imported; the train step is
optax and the library's models, not the driver's config-built step).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import gzip
import hashlib
import importlib.util
import json
import math
import os
import platform
import queue
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)  # timing.py, timm_compare.py
sys.path.insert(0, REPO)  # vit_jax, tests (the golden models)

import timing  # noqa: E402  (stdlib only)

# Dense (no 2:4 sparsity) bf16 tensor-core FLOP/s per device, by a substring of jax's
# device_kind, first match. NVIDIA's datasheets give the figure "with sparsity", twice the
# dense one: H100/H200 SXM 1,979 -> 989 TFLOP/s, H100/H200 NVL 1,671 -> 835, H100 PCIe
# 1,513 -> 756, A100 624 -> 312, L4 242 -> 121, L40S 733 -> 362, B200 (HGX, 1,000 W)
# 4.5 PFLOP/s -> 2,250. A10G, V100 and the TPUs (Google's per-chip bf16 peaks) are as
# benchmarks/train_throughput.py had them, not checked again.
PEAK_BF16 = (
    ("H200 NVL", 835e12), ("H200", 989e12), ("H100 PCIe", 756e12), ("H100 NVL", 835e12),
    ("H100", 989e12), ("GH200", 989e12), ("B200", 2250e12), ("A100", 312e12),
    ("L40S", 362e12), ("L4", 121e12), ("A10G", 70e12), ("V100", 125e12),
    ("TPU v6", 918e12), ("TPU v5p", 459e12), ("TPU v5", 197e12), ("TPU v4", 275e12),
    ("TPU v3", 123e12),
)
MARK = "@@gpu_check "  # prefix of a worker's event lines on its stdout
NUM_CLASSES = 1000
# The tests' bf16 tolerance: |bf16 - f32| < 5% of the largest f32 logit (ViViT adds 1e-2).
BF16_TOLERANCE = 0.05
GOLDEN_TOLERANCE = 1e-4
# cuDNN against XLA attention, both bf16: relative L2 error of logits and gradients. Two
# bf16 programs that round in different places differ by ~1e-3-1e-2 (bf16 has 8 bits).
CUDNN_TOLERANCE = 2e-2
# The tiny sizes of --dry-run: the same registered models and options, these dimensions.
TINY = dict(hidden_size=32, num_layers=1, mlp_dim=64, num_heads=2)


def peak_flops(device_kind: str) -> float | None:
  """The spec sheet's dense bf16 FLOP/s of one device of this kind (None: not in the table)."""
  return next((peak for name, peak in PEAK_BF16 if name in device_kind), None)


def xla_cost(stage) -> dict:
  """XLA's cost analysis of a jax Lowered or Compiled stage, as one dict ({} if none)."""
  cost = stage.cost_analysis()
  return (cost[0] if isinstance(cost, list) else cost) or {}


@dataclasses.dataclass(frozen=True)
class Row:
  """One row of the check. `budget_s`: wall seconds it may take on the GPU, compilation
  included; `model` etc. describe a train-step row (kind "train")."""
  id: str
  kind: str  # env, matmul, golden, bf16, cudnn_vs_xla, train, timm
  budget_s: float
  model: str = ""
  image: int = 224
  frames: int = 0  # > 0: a video model, clips of this many frames
  batches: tuple[int, ...] = ()
  attention: str | None = None
  options: tuple[tuple[str, object], ...] = ()  # create_model overrides (scan, variant)
  infer: bool = True
  compile_torch: bool = False
  # A row whose `batch` caps this row's batches (the same batch as our ViT-B/16).
  same_batch_as: str = ""
  # A row whose numbers this row copies when its program is the same (hash of the lowered
  # train step) at the same batch: jax <= 0.11 maps attention None to "xla" on GPUs.
  same_program_as: str = ""
  save_hlo: bool = False  # write the compiled train step's HLO to --out (hlo_ROW.txt.gz)

  @property
  def worker(self) -> str:
    return "torch" if self.kind == "timm" else "jax"


B16 = dict(model="ViT-B_16", batches=(512, 256, 128))
SCAN_REMAT = (("scan_layers", True), ("remat", True))
ROWS = (
    # The headline first (ViT-B/16 and timm beside it), so that a short run still has it.
    Row("env", "env", 60),
    Row("matmul_bf16", "matmul", 30),
    Row("vit_b16_attn_none", "train", 120, save_hlo=True, **B16),
    Row("timm_b16_eager", "timm", 90, model="vit_base_patch16_224", batches=(512, 256, 128),
        same_batch_as="vit_b16_attn_none"),
    Row("golden_fp32", "golden", 90),
    Row("bf16_logits", "bf16", 90),
    Row("cudnn_vs_xla", "cudnn_vs_xla", 75, model="ViT-B_16", batches=(8,)),
    Row("vit_b16_attn_cudnn", "train", 100, attention="cudnn", save_hlo=True, **B16),
    Row("vit_b16_attn_xla", "train", 100, attention="xla", same_program_as="vit_b16_attn_none",
        **B16),
    # At the None row's batch (the largest that fitted). Inference is measured on the
    # three rows above only: each costs a compilation, and remat does not change it.
    Row("vit_b16_scan_remat", "train", 80, options=SCAN_REMAT, infer=False,
        same_batch_as="vit_b16_attn_none", **B16),
    # One batch each; the half of it if that does not fit.
    Row("vit_s16", "train", 60, model="ViT-S_16", batches=(512, 256), infer=False),
    Row("vit_l16", "train", 90, model="ViT-L_16", batches=(128, 64), infer=False),
    Row("dinov2_l14_518", "train", 90, model="DINOv2-L_14", image=518, batches=(32, 16),
        infer=False),
    Row("vivit_b16x2_st", "train", 90, model="ViViT-B_16x2", frames=32, batches=(8, 4),
        options=(("variant", "spatio_temporal"),), infer=False),
    Row("vivit_b16x2_fe", "train", 90, model="ViViT-B_16x2", frames=32, batches=(8, 4),
        options=(("variant", "factorised_encoder"),), infer=False),
    Row("timm_b16_compile", "timm", 150, model="vit_base_patch16_224",
        batches=(512, 256, 128), compile_torch=True, same_batch_as="vit_b16_attn_none"),
)
ROWS_BY_ID = {r.id: r for r in ROWS}


def dry_sizes(row: Row) -> Row:
  """The row at --dry-run sizes: tiny widths, 16 px (8 for ViViT), batches 8 / 4 / 2."""
  if row.kind == "train":
    return dataclasses.replace(row, image=8 if row.frames else 16, frames=4 if row.frames else 0,
                               batches=(8, 4, 2)[:len(row.batches)])
  if row.kind == "timm":
    return dataclasses.replace(row, image=32, batches=(8, 4, 2))
  return row


def _batches(row: Row, ctx) -> tuple[int, ...]:
  """row.batches, capped by the batch of the row it follows (same_batch_as), if that ran."""
  fitted = ctx.results.get(row.same_batch_as, {}).get("batch") if row.same_batch_as else None
  return tuple(b for b in row.batches if fitted is None or b <= fitted) or row.batches


# ---------------------------------------------------------------------------------------
# Worker side: one process runs rows of one framework and prints an event line per row.
# ---------------------------------------------------------------------------------------

def _emit(event: dict) -> None:
  print(MARK + json.dumps(event), flush=True)


def _time_call(call, wait, min_run_s: float) -> float:
  """Median seconds per call: one warm-up call (compiled already), then 3 runs of as many
  calls as fill `min_run_s`. A GPU has no host heap to settle (cf. timing.py)."""
  start = time.perf_counter()
  wait(call())
  once = max(time.perf_counter() - start, 1e-6)
  steps = max(2, math.ceil(min_run_s / once))
  return timing.seconds_per_call(call, wait, steps, warmup=1, warmup_seconds=0.0)[0]


class _Ctx:
  """What a worker knows: the arguments, and results of earlier rows (from the parent)."""

  def __init__(self, args, results: dict):
    self.dry = args.dry_run
    self.max_gib = args.max_gib
    # Each timed run lasts this long (3 runs after a warm-up one): ~2 s a measurement.
    self.min_run_s = 0.0 if args.dry_run else 0.5
    self.out = args.out
    self.results = results
    self.row_id = ""
    self.step = None  # the last measured train step (a zero-argument call)


def _test_module(name: str):
  """tests/models/NAME.py, loaded from its file: a `tests` package installed on the machine
  (some distributions ship one) would shadow this repository's namespace package."""
  if name not in sys.modules:
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(REPO, "tests", "models", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: dataclasses and pickling look it up
    spec.loader.exec_module(module)
  return sys.modules[name]


def _jax():
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415
  return jax, jnp, np


def row_env(row: Row, ctx: _Ctx) -> dict:
  jax, _, np = _jax()
  import flax  # noqa: PLC0415
  import optax  # noqa: PLC0415
  device = jax.local_devices()[0]
  stats = device.memory_stats() or {}
  # The clocks and power at the start: an MFU far below the others' may be a throttled card.
  try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,"
                          "clocks.max.sm,power.draw,power.limit,temperature.gpu",
                          "--format=csv,noheader"], capture_output=True, text=True,
                         timeout=20).stdout.strip() or None
  except (OSError, subprocess.SubprocessError):
    smi = None
  return {"status": "ok", "platform": device.platform, "device_kind": device.device_kind,
          "nvidia_smi": smi, "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "device_count": jax.local_device_count(),
          "memory_gib": stats.get("bytes_limit", 0) / 2**30 or None,
          "spec_bf16_flops": peak_flops(device.device_kind),
          "versions": {"python": platform.python_version(), "jax": jax.__version__,
                       "flax": flax.__version__, "optax": optax.__version__,
                       "numpy": np.__version__}}


def row_matmul(row: Row, ctx: _Ctx) -> dict:
  """bf16 [n, n] @ [n, n] (float32 accumulation), random normal data (zeros run faster)."""
  jax, jnp, _ = _jax()
  n = 256 if ctx.dry else 8192
  a, b = (jax.random.normal(k, (n, n), jnp.bfloat16) for k in jax.random.split(jax.random.key(0)))
  matmul = jax.jit(lambda a, b: a @ b)
  seconds = _time_call(lambda: matmul(a, b), jax.block_until_ready, ctx.min_run_s)
  return {"status": "ok", "n": n, "matmul_flops": 2 * n**3 / seconds}


def row_golden(row: Row, ctx: _Ctx) -> dict:
  """The golden test's five models, their parameters, logits and attention weights."""
  jax, _, np = _jax()
  golden_test = _test_module("test_attention_score")
  golden = np.load(golden_test.GOLDEN)
  golden_models = golden_test._golden_models()
  # The dry run keeps the code path and drops repetitions: one model, one precision (the
  # CPU has one float32 matmul anyway).
  names = list(golden_models)[:1] if ctx.dry else list(golden_models)
  errors = {}
  for precision in ("highest",) if ctx.dry else ("highest", "default"):
    worst = 0.0
    with jax.default_matmul_precision(precision):
      for name in names:
        model, x = golden_models[name]
        actual = golden_test._outputs(model, x)
        for key in golden.files:
          if key.startswith(name + "|"):
            expected = golden[key]
            got = actual[key.split("|", 1)[1]]
            worst = max(worst, float(np.max(np.abs(got - expected))))
    errors[precision] = worst
  ok = errors["highest"] <= GOLDEN_TOLERANCE
  return {"status": "ok" if ok else "failed", "checks": [
      {"check": f"golden models ({len(names)} of {len(golden_models)}) fp32, matmul "
       f"precision {p}", "error": e,
       "tolerance": GOLDEN_TOLERANCE if p == "highest" else None,
       "pass": e <= GOLDEN_TOLERANCE if p == "highest" else None}
      for p, e in errors.items()],
      **({} if ok else {"error": f"max |GPU - CPU| {errors['highest']:.2e} > 1e-4"})}


def row_bf16(row: Row, ctx: _Ctx) -> dict:
  """The tests' bf16-vs-f32 pairs: ViT-Nano/4 at 32 px, ViViT-Mu/4x2 per variant."""
  jax, jnp, np = _jax()
  test_vit, test_vivit = _test_module("test_vit"), _test_module("test_vivit")
  from vit_jax import models  # noqa: PLC0415
  checks = []
  f32 = models.create_model("ViT-Nano_4", num_classes=10)
  # The tests' set-up, jitted (eager initialisation is slower than compiling it).
  params, images = jax.jit(lambda: test_vit._init(f32, image_size=32))()
  params = jax.jit(lambda p: test_vit._perturb(p, scale=0.05))(params)
  pairs = [("ViT-Nano_4", f32, f32.clone(dtype=jnp.bfloat16), params, images, 0.0)]
  for variant in test_vivit.VARIANTS[:1] if ctx.dry else test_vivit.VARIANTS:  # as golden
    model = test_vivit.make(variant)
    params = jax.jit(functools.partial(test_vivit.params_of.__wrapped__, variant))()
    pairs.append((f"ViViT-Mu_4x2 {variant}", model, test_vivit.make(variant, dtype=jnp.bfloat16),
                  params, test_vivit.video(), 1e-2))
  for name, m32, m16, p, x, slack in pairs:
    a = np.asarray(test_vivit.jit_apply(m32, p, x))
    b = np.asarray(test_vivit.jit_apply(m16, p, x))
    scale = float(np.max(np.abs(a)))
    error = float(np.max(np.abs(a - b)))
    bound = BF16_TOLERANCE * scale + slack
    checks.append({"check": f"bf16 logits {name}", "error": error, "tolerance": bound,
                   "pass": error < bound and not np.array_equal(a, b)})
  failed = [c["check"] for c in checks if not c["pass"]]
  return {"status": "failed" if failed else "ok", "checks": checks,
          **({"error": "outside the tests' tolerance: " + ", ".join(failed)} if failed else {})}


def row_cudnn_vs_xla(row: Row, ctx: _Ctx) -> dict:
  """ViT-B/16 in bf16 with perturbed weights: logits and loss gradients, cuDNN vs XLA."""
  jax, jnp, np = _jax()
  import optax  # noqa: PLC0415

  from vit_jax import models  # noqa: PLC0415
  if jax.default_backend() != "gpu":
    return {"status": "skipped", "note": f"cuDNN attention needs a GPU (this is "
            f"{jax.default_backend()})"}
  batch = row.batches[0]
  x = jax.random.uniform(jax.random.key(1), (batch, row.image, row.image, 3), minval=-1, maxval=1)
  y = jnp.arange(batch) % NUM_CLASSES
  xla = models.create_model(row.model, num_classes=NUM_CLASSES, dtype=jnp.bfloat16,
                            attention_implementation="xla")
  params = jax.jit(lambda: xla.init(jax.random.key(0), x[:1])["params"])()
  # The zero-initialised head would make every logit 0 and hide the encoder.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(2), len(leaves))
  params = jax.tree.unflatten(tree, [v + 0.02 * jax.random.normal(k, v.shape, v.dtype)
                                     for v, k in zip(leaves, keys)])

  def outputs(model):
    def loss(p):
      logits = model.apply({"params": p}, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits
    (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return np.asarray(logits, np.float32), np.concatenate(
        [np.ravel(np.asarray(g, np.float32)) for g in jax.tree.leaves(grads)])

  def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))

  (l_cudnn, g_cudnn), (l_xla, g_xla) = outputs(xla.clone(attention_implementation="cudnn")), \
      outputs(xla)
  checks = [{"check": f"cuDNN vs XLA attention, {row.model} bf16 {what} (rel. L2)",
             "error": e, "tolerance": CUDNN_TOLERANCE, "pass": e < CUDNN_TOLERANCE}
            for what, e in (("logits", rel(l_cudnn, l_xla)), ("gradients", rel(g_cudnn, g_xla)))]
  failed = [c["check"] for c in checks if not c["pass"]]
  return {"status": "failed" if failed else "ok", "checks": checks,
          **({"error": "cuDNN and XLA attention disagree"} if failed else {})}


def _is_oom(e: Exception) -> bool:
  text = str(e)
  return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def _short(e: BaseException) -> str:
  text = " ".join(str(e).split())
  return f"{type(e).__name__}: {text[:300]}"


def _input_shapes(row: Row, batch: int):
  """Images [B, H, W, 3] (clips [B, T, H, W, 3]) float32 and labels [B] int32."""
  jax, jnp, _ = _jax()
  frames = (row.frames,) if row.frames else ()
  return (jax.ShapeDtypeStruct((batch, *frames, row.image, row.image, 3), jnp.float32),
          jax.ShapeDtypeStruct((batch,), jnp.int32))


def _train_inputs(row: Row, batch: int):
  """Random images in [-1, 1] and labels, on the device."""
  jax, jnp, np = _jax()
  x, y = _input_shapes(row, batch)
  return (jax.device_put(np.random.RandomState(0).uniform(-1, 1, x.shape).astype(np.float32)),
          jnp.arange(batch, dtype=jnp.int32) % NUM_CLASSES)


def _model(row: Row, ctx: _Ctx, **changes):
  _, jnp, _ = _jax()
  from vit_jax import models  # noqa: PLC0415
  options = {**dict(row.options), **changes}
  options.setdefault("attention_implementation", row.attention)
  if ctx.dry:
    options.update(TINY, patch_size=4 if not row.frames else 2)
  return models.create_model(row.model, num_classes=NUM_CLASSES, dtype=jnp.bfloat16, **options)


def _train_step(model):
  """The library user's AdamW step (jit, donated state): loss, grads, update."""
  jax, _, _ = _jax()
  import optax  # noqa: PLC0415
  tx = optax.adamw(1e-3, weight_decay=0.05)

  def step(params, opt_state, x, y):
    def loss_fn(p):
      logits = model.apply({"params": p}, x, train=True, rngs={"dropout": jax.random.key(0)})
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return tx, jax.jit(step, donate_argnums=(0, 1))


def _model_flops(row: Row, ctx: _Ctx, batch: int) -> float:
  """XLA's FLOPs of one train step of the unrolled model, attention "xla" (module doc)."""
  jax, _, _ = _jax()
  model = _model(row, ctx, attention_implementation="xla", scan_layers=False, remat=False)
  x, y = _input_shapes(row, batch)
  one = jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype)
  params = jax.eval_shape(lambda x: model.init(jax.random.key(0), x)["params"], one)
  tx, step = _train_step(model)
  return xla_cost(step.lower(params, jax.eval_shape(tx.init, params), x, y)).get("flops", math.nan)


def _save_hlo(compiled, path: str) -> None:
  """The optimised HLO of a compiled step, for reading offline (fusions, transposes,
  f32 upcasts around attention) without spending device time on it."""
  try:
    text = compiled.as_text()
  except NotImplementedError:
    return
  with gzip.open(path, "wt") as f:
    f.write(text)


def _save_profile(call, path: str, steps: int = 3, max_mib: int = 15) -> str:
  """A jax.profiler trace of `steps` calls, as one .tar.gz (the call returns at most 16 MiB
  a file, two folders deep: the trace's own folders are deeper). Returns what happened."""
  jax, _, _ = _jax()
  with tempfile.TemporaryDirectory() as tmp:
    try:
      jax.profiler.start_trace(tmp)
      try:
        for _ in range(steps):
          out = call()
        jax.block_until_ready(out)
      finally:
        jax.profiler.stop_trace()
    except Exception as e:  # noqa: BLE001  (the profiler is an extra: the row stands)
      return f"no profile: {_short(e)[:200]}"
    with tarfile.open(path, "w:gz") as tar:
      tar.add(tmp, arcname="profile")
  mib = os.path.getsize(path) / 2**20
  if mib > max_mib:
    os.remove(path)
    return f"no profile: {mib:.0f} MiB, over the {max_mib} MiB a returned file may have"
  return f"{os.path.basename(path)} ({steps} steps, {mib:.1f} MiB)"


def _copy_if_same_program(row: Row, ctx: _Ctx, program: str, batch: int) -> dict | None:
  """The numbers of row.same_program_as if it ran this program at this batch, else None."""
  same = ctx.results.get(row.same_program_as, {}) if row.same_program_as else {}
  if same.get("program") != program or same.get("batch") != batch:
    return None
  return {**{k: same[k] for k in ("batch", "compile_s", "peak_gib", "train_step_s",
                                  "train_img_s", "loss", "infer_img_s", "train_flops")
             if k in same},
          "program": program,
          "note": f"the same program as {row.same_program_as}: its numbers, not measured again"}


def _measure_train(row: Row, ctx: _Ctx, batch: int, limit_bytes: float | None) -> dict:
  jax, _, _ = _jax()
  model = _model(row, ctx)
  x, y = _train_inputs(row, batch)
  params = jax.jit(lambda: model.init(jax.random.key(0), x[:1])["params"])()
  tx, step = _train_step(model)
  opt_state = tx.init(params)
  start = time.perf_counter()
  lowered = step.lower(params, opt_state, x, y)
  program = hashlib.sha256(lowered.as_text().encode()).hexdigest()[:16]
  copied = _copy_if_same_program(row, ctx, program, batch)
  if copied:
    return copied
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  memory = compiled.memory_analysis()
  peak = (memory.temp_size_in_bytes + memory.argument_size_in_bytes) if memory else math.nan
  if limit_bytes and peak > limit_bytes:
    raise MemoryError(f"RESOURCE_EXHAUSTED: XLA's peak {peak / 2**30:.2f} GiB > the limit "
                      f"{limit_bytes / 2**30:.2f} GiB")
  if row.save_hlo:
    _save_hlo(compiled, os.path.join(ctx.out, f"hlo_{ctx.row_id}.txt.gz"))
  # Kept if the row then runs out of time: what compiling took is worth knowing.
  _emit({"event": "partial", "row": ctx.row_id, "batch": batch, "compile_s": compile_s,
         "peak_gib": peak / 2**30})
  state = [params, opt_state]

  def call():
    state[0], state[1], loss = compiled(state[0], state[1], x, y)
    return loss

  train_s = _time_call(call, jax.block_until_ready, ctx.min_run_s)
  result = {"batch": batch, "program": program, "compile_s": compile_s,
            "peak_gib": peak / 2**30,
            "train_step_s": train_s, "train_img_s": batch / train_s,
            "loss": float(call())}
  ctx.step = call  # for the profile, taken once the row's numbers are safe (row_train)
  if row.infer:
    infer = jax.jit(lambda p, x: model.apply({"params": p}, x))
    start = time.perf_counter()
    infer_compiled = infer.lower(state[0], x).compile()
    result["infer_compile_s"] = time.perf_counter() - start
    infer_s = _time_call(lambda: infer_compiled(state[0], x), jax.block_until_ready,
                         ctx.min_run_s)
    result["infer_img_s"] = batch / infer_s
  return result


def row_train(row: Row, ctx: _Ctx) -> dict:
  """The largest of `row.batches` that fits (memory analysis, then a real step)."""
  jax, _, _ = _jax()
  if row.attention == "cudnn" and jax.default_backend() != "gpu":
    return {"status": "skipped", "model": row.model, "attention": "cudnn",
            "note": f"cuDNN attention needs a GPU (this is {jax.default_backend()})"}
  batches = _batches(row, ctx)
  stats = jax.local_devices()[0].memory_stats() or {}
  limit = ctx.max_gib * 2**30 if ctx.max_gib else stats.get("bytes_limit")
  refused = []
  for batch in batches:
    try:
      result = _measure_train(row, ctx, batch, limit)
    except Exception as e:  # noqa: BLE001  (out of memory: try the next batch)
      if not _is_oom(e):
        raise
      refused.append(f"{batch}: {_short(e)[:160]}")
      continue
    flops = result.pop("train_flops", None) or _model_flops(row, ctx, batch)
    result = {"status": "ok", "model": row.model, "image": row.image, "frames": row.frames,
              "attention": row.attention or "None", "options": dict(row.options),
              "train_flops": flops, "refused_batches": refused, **result}
    if row.save_hlo and ctx.step is not None:
      # The numbers first: if the profiler hangs or takes the worker down, they stand.
      _emit({"event": "partial", "row": ctx.row_id, **result})
      result["profile"] = _save_profile(ctx.step, os.path.join(ctx.out,
                                                               f"profile_{ctx.row_id}.tar.gz"))
    ctx.step = None
    return result
  return {"status": "failed", "model": row.model, "error": "no batch fits: " + "; ".join(refused)}


def row_timm(row: Row, ctx: _Ctx) -> dict:
  """timm's ViT-B/16 as its users train it: AMP bf16, AdamW; eager or torch.compile."""
  try:
    import torch  # noqa: PLC0415
    from timm_compare import _import_timm  # noqa: PLC0415
    timm = _import_timm()
  except Exception as e:  # noqa: BLE001  (absent, or a broken install)
    return {"status": "skipped", "model": row.model,
            "note": f"torch/timm not importable ({_short(e)[:120]})"}
  device = "cuda" if torch.cuda.is_available() else "cpu"
  out_of_memory = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
  refused = []
  for batch in _batches(row, ctx):
    try:
      result = _measure_timm(row, ctx, torch, timm, device, batch)
    except out_of_memory as e:
      refused.append(f"{batch}: {_short(e)[:160]}")
      continue
    finally:  # what a refused batch left on the device
      gc.collect()
      if device == "cuda":
        torch.cuda.empty_cache()
    return {"status": "ok", "model": row.model, "image": row.image, "attention": "torch sdpa",
            "refused_batches": refused, **result,
            "versions": {"torch": torch.__version__, "timm": timm.__version__}}
  return {"status": "failed", "model": row.model, "error": "no batch fits: " + "; ".join(refused)}


def _measure_timm(row: Row, ctx: _Ctx, torch, timm, device: str, batch: int) -> dict:
  size = dict(embed_dim=32, depth=2, num_heads=2, patch_size=4) if ctx.dry else {}
  torch.manual_seed(0)
  model = timm.create_model(row.model, num_classes=NUM_CLASSES, img_size=row.image,
                            **size).to(device)
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
  run = torch.compile(model) if row.compile_torch else model
  x = torch.empty(batch, 3, row.image, row.image, device=device).uniform_(-1, 1)
  y = torch.arange(batch, device=device) % NUM_CLASSES
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  if device == "cuda":
    torch.cuda.reset_peak_memory_stats()

  def train_step():
    with torch.autocast(device, dtype=torch.bfloat16):
      loss = torch.nn.functional.cross_entropy(run(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss

  def infer():
    with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16):
      return run(x)

  def first_call(fn) -> float:  # torch.compile compiles here
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start

  model.train()
  compile_s = first_call(train_step)
  train_s = _time_call(train_step, lambda _: sync(), ctx.min_run_s)
  model.eval()
  infer_compile_s = first_call(infer)
  infer_s = _time_call(infer, lambda _: sync(), ctx.min_run_s)
  return {"batch": batch, "compile_s": compile_s, "infer_compile_s": infer_compile_s,
          "train_step_s": train_s, "train_img_s": batch / train_s, "infer_img_s": batch / infer_s,
          "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
          "device": device}


RUNNERS = {"env": row_env, "matmul": row_matmul, "golden": row_golden, "bf16": row_bf16,
           "cudnn_vs_xla": row_cudnn_vs_xla, "train": row_train, "timm": row_timm}


def worker_main(args) -> None:
  ctx = _Ctx(args, json.loads(args.context))
  for row_id in args.rows.split(","):
    row = ROWS_BY_ID[row_id]
    row = dry_sizes(row) if args.dry_run else row
    _emit({"event": "start", "row": row_id})
    ctx.row_id = row_id
    start = time.perf_counter()
    try:
      result = RUNNERS[row.kind](row, ctx)
    except Exception as e:  # noqa: BLE001  (recorded; the next row runs)
      traceback.print_exc()  # to gpu_check.log
      result = {"status": "failed", "error": _short(e)}
    result["wall_s"] = time.perf_counter() - start
    ctx.results[row_id] = result
    _emit({"event": "done", "row": row_id, **result})


# ---------------------------------------------------------------------------------------
# Parent side: runs the workers under the budgets and writes the report.
# ---------------------------------------------------------------------------------------

class Check:
  """The rows' results so far, and the files that show them."""

  def __init__(self, args, rows: list[Row]):
    self.args, self.rows = args, rows
    self.results: dict[str, dict] = {}
    self.signal = 0  # SIGTERM's number once it arrived: run() stops
    self.start = time.perf_counter()
    self.started_utc = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    self.log = open(os.path.join(args.out, "gpu_check.log"), "a")  # noqa: SIM115

  def elapsed(self) -> float:
    return time.perf_counter() - self.start

  def remaining(self) -> float:
    return self.args.budget_s - self.elapsed()

  def record(self, row_id: str, result: dict) -> None:
    self.results[row_id] = result
    status = result.get("status")
    detail = result.get("error") or result.get("note") or ""
    print(f"[{self.elapsed():6.1f} s] {row_id}: {status} {detail}".rstrip(), flush=True)
    self.write()

  def write(self) -> None:
    """gpu_check.json and gpu_check.md, each written whole and renamed into place."""
    for name, text in (("gpu_check.json", json.dumps(self.report(), indent=1, default=str)),
                       ("gpu_check.md", render_markdown(self))):
      path = os.path.join(self.args.out, name)
      with open(path + ".tmp", "w") as f:
        f.write(text)
      os.replace(path + ".tmp", path)

  def report(self) -> dict:
    env = self.results.get("env", {})
    spec = env.get("spec_bf16_flops")
    matmul = self.results.get("matmul_bf16", {}).get("matmul_flops")
    b16 = self.results.get("vit_b16_attn_none", {})
    b16_flops_img = (b16["train_flops"] / b16["batch"]) if b16.get("train_flops") else None
    rows = []
    for row in self.rows:
      r = dict(self.results.get(row.id, {"status": "pending"}))
      r["row"] = row.id
      flops = r.get("train_flops")
      if row.kind == "timm" and r.get("train_img_s") and b16_flops_img:
        flops = b16_flops_img * r["batch"]  # our count of the same architecture
        r["train_flops"] = flops
      if flops and r.get("train_step_s"):
        r["train_tflops"] = flops / r["train_step_s"] / 1e12
        r["gflops_img"] = flops / r["batch"] / 1e9
        r["mfu_spec"] = flops / r["train_step_s"] / spec if spec else None
        r["mfu_matmul"] = flops / r["train_step_s"] / matmul if matmul else None
      rows.append(r)
    return {"started": self.started_utc, "argv": sys.argv[1:],
            "dry_run": self.args.dry_run, "budget_s": self.args.budget_s,
            "elapsed_s": self.elapsed(), "spec_bf16_flops": spec, "matmul_bf16_flops": matmul,
            "rows": rows}


def _fmt(v, spec: str = ".1f", none: str = "-") -> str:
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return none
  return format(v, spec)


def render_markdown(check: Check) -> str:
  report = check.report()
  rows = {r["row"]: r for r in report["rows"]}
  env = rows["env"] if "env" in rows else {}
  versions = env.get("versions", {})
  timm_versions = next((r["versions"] for r in report["rows"] if r.get("versions")
                        and "torch" in r["versions"]), {})
  lines = [
      f"# gpu_check{' (dry run: tiny sizes, not a measurement)' if check.args.dry_run else ''}",
      "",
      f"- device: {env.get('device_count', '?')} x {env.get('device_kind', '?')} "
      f"({env.get('platform', '?')}), {_fmt(env.get('memory_gib'))} GiB for JAX",
      "- versions: " + ", ".join(f"{k} {v}" for k, v in {**versions, **timm_versions}.items()),
      f"- bf16 dense peak, spec sheet: {_fmt(_div(report['spec_bf16_flops'], 1e12), '.0f')} "
      f"TFLOP/s; measured bf16 matmul "
      f"{rows.get('matmul_bf16', {}).get('n', '?')}^3: "
      f"{_fmt(_div(report['matmul_bf16_flops'], 1e12), '.3g')} TFLOP/s",
      f"- nvidia-smi at the start (name, driver, SM clock, max SM clock, power, limit, "
      f"temperature): {env.get('nvidia_smi') or '-'}",
      f"- started {report['started']}; wall {report['elapsed_s']:.0f} s of a "
      f"{report['budget_s']:.0f} s budget",
      "",
      "| row | model | input | batch | attention | compile s | train img/s | infer img/s "
      "| train GFLOPs/img | TFLOP/s | MFU (spec) | MFU (matmul) | peak GiB | status |",
      "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
  ]
  for r in report["rows"]:
    row = ROWS_BY_ID[r["row"]]
    row = dry_sizes(row) if check.args.dry_run else row
    if row.kind not in ("train", "timm"):
      continue
    frames = f"{row.frames}x" if row.frames else ""
    options = ", ".join(f"{k}={v}" for k, v in row.options)
    model = f"{r.get('model', row.model)}{' (' + options + ')' if options else ''}"
    if row.kind == "timm":
      model = f"timm {row.model}{', torch.compile' if row.compile_torch else ', eager'}"
    lines.append(
        f"| {row.id} | {model} | {frames}{r.get('image', row.image)} | {_fmt(r.get('batch'), 'd')} "
        f"| {r.get('attention', '-' if row.kind == 'timm' else str(row.attention))} "
        f"| {_fmt(r.get('compile_s'))} "
        f"| {_fmt(r.get('train_img_s'), '.0f')} | {_fmt(r.get('infer_img_s'), '.0f')} "
        f"| {_fmt(r.get('gflops_img'))} | {_fmt(r.get('train_tflops'))} "
        f"| {_fmt(_pct(r.get('mfu_spec')))} | {_fmt(_pct(r.get('mfu_matmul')))} "
        f"| {_fmt(r.get('peak_gib'), '.2f')} | {_status(r)} |")
  ours = rows.get("vit_b16_attn_none", {})
  if ours.get("train_img_s"):
    mfu = ours.get("mfu_spec")
    verdict = [f"ViT-B/16 (attention None) trains at {ours['train_img_s']:.0f} images/s, " + (
        f"MFU {100 * mfu:.1f}% of the spec sheet" if mfu else "MFU unknown (no spec entry)")
        + " (goal: >= 50%)"]
    for name in ("timm_b16_eager", "timm_b16_compile"):
      if rows.get(name, {}).get("train_img_s"):
        verdict.append(f"{ours['train_img_s'] / rows[name]['train_img_s']:.2f}x {name}")
    lines += ["", "; ".join(verdict) + "."]
  lines += ["", "| correctness check | error | tolerance | pass |", "|---|---:|---:|---|"]
  for r in report["rows"]:
    for c in r.get("checks", []):
      lines.append(f"| {c['check']} | {c['error']:.2e} | {_fmt(c['tolerance'], '.1e')} "
                   f"| {'-' if c['pass'] is None else ('yes' if c['pass'] else 'NO')} |")
    if ROWS_BY_ID[r["row"]].kind in ("golden", "bf16", "cudnn_vs_xla") and not r.get("checks"):
      lines.append(f"| {r['row']} | - | - | {_status(r)} |")
  lines += ["", "MFU: XLA's FLOPs of the unrolled train step (attention \"xla\") over the "
            "step time, over the spec sheet's dense bf16 rate and over the measured matmul "
            "rate; timm rows use our ViT-B/16 count (train GFLOPs/img: that count per image). Peak GiB: XLA's memory analysis (arguments + temporaries); torch's "
            "max_memory_allocated for timm.", ""]
  return "\n".join(lines)


def _div(a, b):
  return None if a is None else a / b


def _pct(v):
  return None if v is None else 100 * v


def _status(r: dict) -> str:
  status = r.get("status", "pending")
  detail = r.get("error") or r.get("note") or ""
  if r.get("refused_batches"):
    detail = (detail + " refused batches " + "; ".join(
        b.split(":")[0] for b in r["refused_batches"])).strip()
  return f"{status}: {detail}".replace("|", "/") if detail else status


def _start_worker(check: Check, kind: str, row_ids: list[str]) -> subprocess.Popen:
  args = check.args
  cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--rows",
         ",".join(row_ids), "--context", json.dumps(check.results, default=str), "--out",
         args.out, "--max_gib", str(args.max_gib)] + (["--dry-run"] if args.dry_run else [])
  env = dict(os.environ)
  if args.dry_run:
    # XLA:CPU compiles ~2x faster without LLVM's optimisations: the dry run times nothing.
    env.update(JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="", XLA_FLAGS=" ".join((
        env.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0",
        "--xla_llvm_disable_expensive_passes=true")).strip())
  check.log.flush()
  # Its own process group, so that a row over its budget is stopped with its children
  # (torch.compile's compiler workers).
  return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=check.log, text=True, env=env,
                          cwd=REPO, start_new_session=True)


def _lines(proc: subprocess.Popen) -> queue.Queue:
  """The worker's stdout lines, then None when it closes."""
  q: queue.Queue = queue.Queue()

  def read():
    for line in proc.stdout:
      q.put(line)
    q.put(None)

  threading.Thread(target=read, daemon=True).start()
  return q


def _stop(proc: subprocess.Popen) -> None:
  try:
    os.killpg(proc.pid, signal.SIGKILL)
  except ProcessLookupError:
    pass
  proc.wait()


class Stopped(Exception):
  """SIGTERM arrived; the worker is stopped."""


def run(check: Check) -> None:
  """Runs the rows, one worker per run of consecutive rows of one framework; a worker
  stopped at a row's budget is replaced by a fresh one for the rows after it."""
  pending = list(check.rows)
  partial: dict[str, dict] = {}  # what rows reported before they finished
  while pending:
    if check.remaining() <= 0:
      for row in pending:
        check.record(row.id, {"status": "skipped",
                              "note": f"the check's {check.args.budget_s:.0f} s budget was spent"})
      return
    group = []
    for row in pending:
      if row.worker != pending[0].worker:
        break
      group.append(row)
    proc = _start_worker(check, group[0].worker, [r.id for r in group])
    lines = _lines(proc)
    # The worker's start-up (imports, the device) counts towards its first row.
    current, deadline = group[0], time.perf_counter() + _allowance(check, group[0])
    while True:
      if check.signal:  # here, where the worker of the moment is known (not in the handler)
        _stop(proc)
        raise Stopped
      try:
        line = lines.get(timeout=min(0.5, max(0.0, deadline - time.perf_counter())))
      except queue.Empty:
        if time.perf_counter() < deadline:
          continue
        _stop(proc)
        if current is not None:
          why = ("the check's budget was spent" if check.remaining() <= 0 else
                 f"over its {current.budget_s * check.args.budget_scale:.0f} s budget")
          check.record(current.id, _unfinished(partial.get(current.id, {}), "timed out", why))
          pending.remove(current)
        break
      if line is None:  # the worker has exited
        rc = proc.wait()
        if current is not None:
          check.record(current.id, _unfinished(
              partial.get(current.id, {}), "failed",
              f"the worker exited with status {rc}: {_log_tail(check)}"))
          pending.remove(current)
        break
      if not line.startswith(MARK):
        check.log.write(line)
        continue
      event = json.loads(line[len(MARK):])
      row = ROWS_BY_ID[event.pop("row")]
      kind = event.pop("event")
      if kind == "start":
        if row is not group[0]:
          current, deadline = row, time.perf_counter() + _allowance(check, row)
      elif kind == "partial":
        partial.setdefault(row.id, {}).update(event)
      else:
        check.record(row.id, event)
        pending.remove(row)
        # The next row's start follows at once; a worker silent for a minute has hung.
        current, deadline = None, time.perf_counter() + 60
    if proc.poll() is None:
      _stop(proc)


def _unfinished(partial: dict, status: str, why: str) -> dict:
  """The record of a row whose worker was stopped or died: what it reported before that.
  A row that had all its numbers (the profile came after them) stays ok, with a note."""
  if partial.get("status") == "ok":
    return {**partial, "note": f"{status} after its numbers ({why}): no profile"}
  return {**partial, "status": status, "error": why}


def _log_tail(check: Check) -> str:
  check.log.flush()
  with open(check.log.name) as f:
    lines = [line.strip() for line in f.read()[-2000:].splitlines() if line.strip()]
  return lines[-1][:300] if lines else "no output"


def _allowance(check: Check, row: Row) -> float:
  """Seconds a row may run: its budget (x --budget_scale), within the check's budget."""
  own = row.budget_s * check.args.budget_scale
  return max(0.0, min(own, check.remaining()))


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default=os.environ.get("OUT"),
                      help="folder for gpu_check.md/.json/.log (default: $OUT)")
  parser.add_argument("--dry-run", action="store_true",
                      help="every row at tiny sizes on the CPU, in seconds (the CI test)")
  parser.add_argument("--rows", default="",
                      help=f"comma list of rows to run (default: all): {', '.join(ROWS_BY_ID)}")
  parser.add_argument("--budget_s", type=float, default=450.0,
                      help="no row starts after this many seconds; rows past it are skipped")
  parser.add_argument("--budget_scale", type=float, default=1.0,
                      help="multiplies every row's own time budget (ROWS)")
  parser.add_argument("--max_gib", type=float, default=0.0,
                      help="refuse a batch whose XLA peak memory is above this (default: "
                      "the device's memory for JAX); simulates a smaller GPU")
  parser.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
  parser.add_argument("--context", default="{}", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if not args.out:
    parser.error("no output folder: pass --out DIR (or set $OUT)")
  if os.path.exists(args.out) and not os.path.isdir(args.out):
    parser.error(f"--out {args.out} is a file, not a folder: pass a folder")
  unknown = [r for r in args.rows.split(",") if r and r not in ROWS_BY_ID]
  if unknown:
    parser.error(f"unknown row(s) {', '.join(unknown)}: choose from {', '.join(ROWS_BY_ID)}")
  if args.budget_s < 0 or args.budget_scale <= 0 or args.max_gib < 0:
    parser.error("--budget_s and --max_gib must be >= 0 and --budget_scale > 0")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.worker:
    worker_main(args)
    return 0
  os.makedirs(args.out, exist_ok=True)
  wanted = set(args.rows.split(",")) - {""}
  check = Check(args, [r for r in ROWS if not wanted or r.id in wanted])
  check.write()

  def stop(signum, frame):
    # `timeout` (the device call's backstop) signals this process only: the worker has a
    # session of its own and would run on, holding the GPU; run() stops it.
    check.signal = signum

  signal.signal(signal.SIGTERM, stop)
  try:
    run(check)
  except Stopped:
    for row in check.rows:
      check.results.setdefault(row.id, {"status": "stopped", "error": f"signal {check.signal} "
                                        "stopped the check before this row finished"})
    check.write()
    print(f"gpu_check: stopped by signal {check.signal}; {args.out}/gpu_check.md has the rows "
          "finished so far", flush=True)
    return 128 + check.signal
  check.write()
  print("\n" + render_markdown(check), flush=True)
  statuses = [check.results.get(r.id, {}).get("status") for r in check.rows]
  print(f"gpu_check: {statuses.count('ok')} ok, {statuses.count('skipped')} skipped, "
        f"{len(statuses) - statuses.count('ok') - statuses.count('skipped')} failed or timed "
        f"out; {args.out}/gpu_check.md", flush=True)
  return 0 if all(s in ("ok", "skipped") for s in statuses) else 1


if __name__ == "__main__":
  sys.exit(main())
