"""benchmarks/gpu_check.py, the one-call GPU check, kept from rotting between GPU loans.

Its --dry-run runs every row at tiny sizes on the CPU, as the lent GPU machine would run
them: TensorFlow, TensorFlow Datasets and ml_collections are absent there (a child
process's import system refuses them here, and records every attempt), and so are torch
and timm here (their rows must say they were skipped, not fail). It then checks that a
batch over the memory limit is refused and the next smaller one measured. The other tests
check the rest of what a GPU run leans on when something goes wrong: a row over its time
budget is stopped and recorded while the files stay readable, a spent budget skips rows,
and bad arguments are refused before anything is written.
"""

import dataclasses
import gzip
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time

import pytest

from tests.helpers import REPO, subprocess_env

SCRIPT = os.path.join(REPO, "benchmarks", "gpu_check.py")
GPU_ONLY = {"cudnn_vs_xla", "vit_b16_attn_cudnn"}
TIMM = {"timm_b16_eager", "timm_b16_compile"}

# sitecustomize runs at the start of every Python process that has this folder on its
# PYTHONPATH: the check and each of its workers.
BLOCKER = textwrap.dedent("""
    import importlib.abc
    import os
    import sys

    BLOCKED = ("tensorflow", "tensorflow_datasets", "ml_collections", "torch", "timm")

    class Absent(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
          with open(os.environ["GPU_CHECK_TEST_IMPORTS"], "a") as f:
            f.write(name + "\\n")
          raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None

    sys.meta_path.insert(0, Absent())
""")


def _run(tmp_path, *args, blocked=False):
  env = subprocess_env(devices=None)
  # As on the device machine: no persistent compilation cache (the session's, from
  # tests/conftest.py, has etils probe for TensorFlow, an import attempt this test counts).
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  if blocked:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", REPO)])
    env["GPU_CHECK_TEST_IMPORTS"] = str(tmp_path / "imports.txt")
  return subprocess.run([sys.executable, SCRIPT, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_dry_run_runs_every_row_without_tensorflow_or_ml_collections(tmp_path):
  out = tmp_path / "out"
  proc = _run(tmp_path, "--dry-run", "--out", str(out), blocked=True)
  assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
  attempts = (tmp_path / "imports.txt").read_text().split() if (
      tmp_path / "imports.txt").exists() else []
  assert not [m for m in attempts if m.partition(".")[0] not in ("torch", "timm")], attempts

  report = json.loads((out / "gpu_check.json").read_text())
  rows = {r["row"]: r for r in report["rows"]}
  assert list(rows)[:3] == ["env", "matmul_bf16", "vit_b16_attn_none"] and len(rows) == 16
  for name, r in rows.items():
    if name in GPU_ONLY:
      assert r["status"] == "skipped" and "needs a GPU" in r["note"], r
    elif name in TIMM:
      assert r["status"] == "skipped" and "torch/timm not importable" in r["note"], r
    else:
      assert r["status"] == "ok", r
  assert rows["env"]["platform"] == "cpu" and rows["env"]["spec_bf16_flops"] is None
  assert rows["matmul_bf16"]["matmul_flops"] > 1e8
  # Correctness on this device: the golden models against their stored outputs, bf16
  # within the tests' tolerance.
  checks = [c for r in rows.values() for c in r.get("checks", [])]
  assert checks and all(c["pass"] for c in checks), checks
  assert rows["golden_fp32"]["checks"][0]["error"] < 1e-4

  train = [n for n, r in rows.items() if "train_flops" in r]
  assert train == ["vit_b16_attn_none", "vit_b16_attn_xla", "vit_b16_scan_remat", "vit_s16",
                   "vit_l16", "dinov2_l14_518", "vivit_b16x2_st", "vivit_b16x2_fe"]
  for name in train:
    r = rows[name]
    assert r["batch"] == 8 and r["train_img_s"] > 0 and r["compile_s"] > 0, r
    assert r["train_flops"] > 0 and r["peak_gib"] > 0 and r["mfu_matmul"] > 0, r
    assert r["mfu_spec"] is None  # a CPU has no bf16 spec peak
    assert (r.get("infer_img_s", 0) > 0) == (name in ("vit_b16_attn_none", "vit_b16_attn_xla")), r
  # Model FLOPs come from the unrolled program: scan + remat does not change them.
  assert rows["vit_b16_scan_remat"]["train_flops"] == rows["vit_b16_attn_none"]["train_flops"]
  assert rows["vivit_b16x2_st"]["frames"] == 4

  # The optimised HLO of the headline step, for reading offline (the cuDNN row's: GPU only),
  with gzip.open(out / "hlo_vit_b16_attn_none.txt.gz", "rt") as f:
    assert f.read().startswith("HloModule jit_step")
  # ... and a profile of 3 of its steps, one file (the call returns files 2 folders deep).
  with tarfile.open(out / "profile_vit_b16_attn_none.tar.gz") as tar:
    assert any(name.endswith(".xplane.pb") for name in tar.getnames()), tar.getnames()
  assert rows["vit_b16_attn_none"]["profile"].startswith("profile_vit_b16_attn_none.tar.gz")
  assert sorted(os.listdir(out)) == [  # <= 8: the call's limit
      "gpu_check.json", "gpu_check.log", "gpu_check.md", "hlo_vit_b16_attn_none.txt.gz",
      "profile_vit_b16_attn_none.tar.gz"]

  table = (out / "gpu_check.md").read_text()
  assert "| row | model |" in table and "| correctness check |" in table
  for name in [*train, *GPU_ONLY - {"cudnn_vs_xla"}, *TIMM]:
    assert f"| {name} |" in table, name
  for check in checks:
    assert f"| {check['check']} | {check['error']:.2e} |" in table, check
  assert "gpu_check: 12 ok, 4 skipped, 0 failed or timed out" in proc.stdout

  # A batch whose XLA peak memory is over --max_gib is refused and the next one measured.
  limit = 0.99 * rows["vit_b16_attn_none"]["peak_gib"]
  proc = _run(tmp_path, "--dry-run", "--out", str(tmp_path / "small"), "--rows",
              "vit_b16_attn_none", "--max_gib", str(limit))
  assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
  (r,) = json.loads((tmp_path / "small" / "gpu_check.json").read_text())["rows"]
  assert r["status"] == "ok" and r["batch"] == 4 and 0 < r["peak_gib"] < limit, r
  assert [b.split(":")[0] for b in r["refused_batches"]] == ["8"], r
  assert "RESOURCE_EXHAUSTED: XLA's peak" in r["refused_batches"][0]
  assert "refused batches 8" in (tmp_path / "small" / "gpu_check.md").read_text()


def test_a_row_over_its_budget_is_stopped_and_recorded(tmp_path):
  # 1% of the golden row's 90 s: its worker cannot even import jax and compile in 0.9 s.
  out = tmp_path / "out"
  proc = _run(tmp_path, "--dry-run", "--out", str(out), "--rows", "golden_fp32",
              "--budget_scale", "0.01")
  assert proc.returncode == 1, proc.stdout + proc.stderr
  rows = json.loads((out / "gpu_check.json").read_text())["rows"]
  assert [(r["row"], r["status"]) for r in rows] == [("golden_fp32", "timed out")], rows
  assert "over its 1 s budget" in rows[0]["error"]
  assert "| golden_fp32 | - | - | timed out: over its 1 s budget |" in (
      out / "gpu_check.md").read_text()


def test_a_spent_budget_skips_the_rows_without_starting_a_worker(tmp_path):
  out = tmp_path / "out"
  proc = _run(tmp_path, "--out", str(out), "--budget_s", "0", "--rows", "env,vit_s16")
  assert proc.returncode == 0, proc.stdout + proc.stderr
  rows = json.loads((out / "gpu_check.json").read_text())["rows"]
  assert [r["status"] for r in rows] == ["skipped", "skipped"]
  assert "budget was spent" in rows[1]["note"]
  assert not (out / "gpu_check.log").read_text()  # no worker wrote anything


@pytest.mark.parametrize("args,message", [
    (["--rows", "vit_b16,env"], "unknown row(s) vit_b16: choose from env, matmul_bf16"),
    (["--budget_s", "-1"], "--budget_s and --max_gib must be >= 0"),
])
def test_bad_arguments_are_refused_before_anything_is_written(tmp_path, args, message):
  out = tmp_path / "out"
  proc = _run(tmp_path, "--out", str(out), *args)
  assert proc.returncode == 2 and message in proc.stderr, proc.stderr
  assert "Traceback" not in proc.stderr
  assert not out.exists()


def test_out_must_be_a_folder(tmp_path):
  target = tmp_path / "file.md"
  target.write_text("kept")
  proc = _run(tmp_path, "--out", str(target))
  assert proc.returncode == 2 and "is a file, not a folder" in proc.stderr, proc.stderr
  assert target.read_text() == "kept"


def test_a_row_with_the_same_program_copies_the_numbers_instead_of_measuring(tmp_path):
  """jax <= 0.11 maps attention None to "xla" on GPUs: the xla row is then the None row's
  program, and is not compiled and timed twice. Here: the None row against itself."""
  sys.path.insert(0, os.path.join(REPO, "benchmarks"))
  import gpu_check  # noqa: PLC0415

  row = dataclasses.replace(gpu_check.dry_sizes(gpu_check.ROWS_BY_ID["vit_b16_attn_none"]),
                            batches=(4,), infer=False)
  args = gpu_check.parse_args(["--dry-run", "--out", str(tmp_path)])
  first = gpu_check.row_train(row, gpu_check._Ctx(args, {}))
  assert first["status"] == "ok" and len(first["program"]) == 16, first
  again = dataclasses.replace(row, id="again", same_program_as="vit_b16_attn_none")
  second = gpu_check.row_train(again, gpu_check._Ctx(args, {"vit_b16_attn_none": first}))
  assert second["note"].startswith("the same program as vit_b16_attn_none"), second
  for key in ("batch", "program", "compile_s", "train_img_s", "peak_gib", "train_flops"):
    assert second[key] == first[key], key
  # Another program, or the same at another batch, is measured.
  ctx = gpu_check._Ctx(args, {"vit_b16_attn_none": first})
  assert gpu_check._copy_if_same_program(again, ctx, "0" * 16, 4) is None
  assert gpu_check._copy_if_same_program(again, ctx, first["program"], 2) is None
  assert gpu_check._copy_if_same_program(again, ctx, first["program"], 4) == {
      k: v for k, v in second.items() if k not in ("status", "model", "image", "frames",
                                                     "attention", "options", "refused_batches")}


def _workers_writing_to(out) -> list[str]:
  """Pids of live processes whose command line names `out` (the check's workers)."""
  pids = []
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read().decode(errors="replace")
    except OSError:
      continue
    if "--worker" in cmdline and str(out) in cmdline:
      pids.append(pid)
  return pids


def test_sigterm_stops_the_worker_and_keeps_the_files(tmp_path):
  """The device call's `timeout` signals the check only; its worker has its own session."""
  out = tmp_path / "out"
  proc = subprocess.Popen([sys.executable, SCRIPT, "--dry-run", "--out", str(out), "--rows",
                           "golden_fp32"], cwd=REPO, env=subprocess_env(devices=None),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 60
  while not _workers_writing_to(out) and time.monotonic() < deadline:
    time.sleep(0.05)
  assert _workers_writing_to(out), "no worker started"
  proc.send_signal(signal.SIGTERM)
  stdout, _ = proc.communicate(timeout=60)
  assert proc.returncode == 128 + signal.SIGTERM, stdout
  assert "stopped by signal 15" in stdout
  assert not _workers_writing_to(out)
  (row,) = json.loads((out / "gpu_check.json").read_text())["rows"]
  assert row["status"] in ("stopped", "ok"), row  # ok: it finished before the signal


def test_a_row_stopped_after_its_numbers_keeps_them_and_one_stopped_before_keeps_its_compile():
  sys.path.insert(0, os.path.join(REPO, "benchmarks"))
  import gpu_check  # noqa: PLC0415

  # The profile comes after a row's numbers; the worker stopped during it.
  done = gpu_check._unfinished({"status": "ok", "train_img_s": 5.0}, "timed out", "over 9 s")
  assert done == {"status": "ok", "train_img_s": 5.0,
                  "note": "timed out after its numbers (over 9 s): no profile"}
  # Stopped while timing: the compilation's report stays.
  cut = gpu_check._unfinished({"batch": 512, "compile_s": 40.0}, "timed out", "over 9 s")
  assert cut == {"batch": 512, "compile_s": 40.0, "status": "timed out", "error": "over 9 s"}
