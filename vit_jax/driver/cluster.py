"""Which process of which job this is: joining jax.distributed, and the devices it drives.

How a process finds the others, in this order:

1. Explicit coordinates: `--coordinator_address/--num_processes/--process_id`, or the
   environment variables VIT_JAX_COORDINATOR / VIT_JAX_NUM_PROCESSES / VIT_JAX_PROCESS_ID
   (launch/multiprocess_local.sh sets them).
2. VIT_JAX_DISTRIBUTED=1: JAX's own cluster detection (`jax.distributed.initialize()`),
   which reads the scheduler's environment:
   - Slurm (SLURM_JOB_ID, SLURM_STEP_NODELIST, SLURM_NTASKS, SLURM_PROCID, SLURM_LOCALID):
     the coordinator is the first node of the step, port JAX_COORDINATOR_PORT or
     61440 + SLURM_JOB_ID % 4096; the process count and id are Slurm's task count and
     rank (launch/slurm.sbatch uses this path);
   - Cloud TPU VMs: everything from the TPU metadata (launch/tpu_vm.sh).
3. Neither: one process, nothing to join.

Local devices on Slurm. Left alone, JAX's detection gives each process the one GPU
numbered SLURM_LOCALID, which is right for one task per GPU, wrong for one task per node
(it would drive GPU 0 only), and fails with "invalid device ordinal" when Slurm binds each
task to its own GPU (--gpus-per-task: every task then sees a single GPU 0). So whenever
the node's GPU count is known (CUDA_VISIBLE_DEVICES or SLURM_GPUS_ON_NODE), the node's
GPUs are split evenly between its tasks and passed as `local_device_ids`: one task per
GPU gets [SLURM_LOCALID], one task per node gets all of them.

VIT_JAX_REQUIRE_PLATFORM=gpu|tpu (the launch scripts set it) makes a job that finds
only CPU devices stop at once with the install line of the accelerator build of JAX,
instead of training on the CPU for hours.

When one process fails. The others would wait for it in the next collective until
jax.distributed's heartbeat timeout (VIT_JAX_HEARTBEAT_TIMEOUT, default 100 s), or forever
in a collective that has no timeout. So a process that stops with an error writes it to
the job's key-value store (`announce_failure`), and every process of a job runs a thread
(`watch_peers`) that, within a second of such an entry, prints it and ends its own
process with status 1. Waits for all processes (`barrier`) have a timeout.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import threading
import time
from collections.abc import Mapping

import jax
from absl import logging

from vit_jax import errors
from vit_jax.errors import UserError

SLURM_VARIABLES = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
                   "SLURM_LOCALID")

# What to install when a job asks for an accelerator JAX does not see.
INSTALL_LINES = {
    "gpu": 'pip install "jax[cuda12]=={version}"  (or jax[cuda13]; see requirements.txt)',
    "tpu": 'pip install "jax[tpu]=={version}"',
}


class ClusterError(UserError, RuntimeError):
  """The job's environment does not describe a consistent multi-process job."""


@dataclasses.dataclass(frozen=True)
class Distributed:
  """The arguments of `jax.distributed.initialize`; `mode` says where they came from."""
  mode: str  # "explicit" | "auto" (JAX's cluster detection)
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  local_device_ids: tuple[int, ...] | None = None

  def kwargs(self) -> dict[str, object]:
    out = {"coordinator_address": self.coordinator_address,
           "num_processes": self.num_processes, "process_id": self.process_id,
           "local_device_ids": None if self.local_device_ids is None
           else list(self.local_device_ids)}
    return {k: v for k, v in out.items() if v is not None}


def tasks_per_node(spec: str) -> list[int]:
  """Slurm's compressed task counts, "8(x2),4" -> [8, 8, 4] (SLURM_STEP_TASKS_PER_NODE)."""
  counts = []
  for part in spec.split(","):
    match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
    if not match:
      raise ClusterError(f"cannot read Slurm's tasks per node {spec!r} (expected e.g. "
                         "'8(x2),4').")
    counts += [int(match.group(1))] * int(match.group(2) or 1)
  return counts


def _node_gpu_count(env: Mapping[str, str]) -> int | None:
  visible = env.get("CUDA_VISIBLE_DEVICES")
  if visible is not None:
    return len([d for d in visible.split(",") if d.strip()])
  if env.get("SLURM_GPUS_ON_NODE", "").isdigit():
    return int(env["SLURM_GPUS_ON_NODE"])
  return None


def slurm_local_device_ids(env: Mapping[str, str]) -> tuple[int, ...] | None:
  """This task's share of its node's GPUs, or None when the GPU count is unknown (CPU)."""
  gpus = _node_gpu_count(env)
  if not gpus:
    return None
  spec = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
  if spec:
    node = int(env.get("SLURM_NODEID", "0"))
    counts = tasks_per_node(spec)
    if node >= len(counts):
      raise ClusterError(f"SLURM_NODEID={node} but tasks per node {spec!r} lists "
                         f"{len(counts)} nodes.")
    tasks = counts[node]
  else:
    tasks = 1
  local_id = int(env["SLURM_LOCALID"])
  if gpus % tasks:
    raise ClusterError(
        f"this node has {gpus} GPUs for {tasks} tasks, which does not split evenly: use "
        "--ntasks-per-node equal to the GPUs per node (one process per GPU) or 1 (one "
        "process per node).")
  per_task = gpus // tasks
  return tuple(range(local_id * per_task, (local_id + 1) * per_task))


def resolve(coordinator_address: str | None = None, num_processes: int | None = None,
            process_id: int | None = None, env: Mapping[str, str] | None = None
            ) -> Distributed | None:
  """How this process joins its job (see the module docstring), or None: a single process."""
  env = os.environ if env is None else env
  coordinator_address = coordinator_address or env.get("VIT_JAX_COORDINATOR")
  if num_processes is None and env.get("VIT_JAX_NUM_PROCESSES"):
    num_processes = int(env["VIT_JAX_NUM_PROCESSES"])
  if process_id is None and env.get("VIT_JAX_PROCESS_ID"):
    process_id = int(env["VIT_JAX_PROCESS_ID"])
  on_slurm = all(k in env for k in SLURM_VARIABLES)
  local = slurm_local_device_ids(env) if on_slurm else None
  if coordinator_address:
    if num_processes is None or process_id is None:
      raise ClusterError(
          f"coordinator {coordinator_address} given without the process count and id: set "
          "--num_processes and --process_id (or VIT_JAX_NUM_PROCESSES / "
          "VIT_JAX_PROCESS_ID), or VIT_JAX_DISTRIBUTED=1 alone on Slurm or Cloud TPU.")
    return Distributed("explicit", coordinator_address, num_processes, process_id, local)
  if env.get("VIT_JAX_DISTRIBUTED") == "1":
    return Distributed("auto", local_device_ids=local)
  return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Joins the multi-controller runtime when asked to, and logs this process's devices."""
  spec = resolve(coordinator_address, num_processes, process_id)
  if spec is not None:
    # CPU processes exchange collectives through gloo (the default of recent jax, set
    # here so that it does not depend on the version). Only the CPU backend reads this,
    # and only when it starts, which is after this line.
    jax.config.update("jax_cpu_collectives_implementation",
                      os.environ.get("VIT_JAX_CPU_COLLECTIVES", "gloo"))
    jax.distributed.initialize(
        **spec.kwargs(),
        heartbeat_timeout_seconds=int(os.environ.get("VIT_JAX_HEARTBEAT_TIMEOUT", "100")))
    watch_peers()
  # Every process of a job says what it drives (at warning level: processes other than
  # 0 log only warnings later on): the first thing to read when a cluster job uses fewer
  # devices than it should.
  log = logging.warning if spec is not None else logging.info
  log("Process %d of %d (%s); %d local / %d global devices; local devices: %s.",
      jax.process_index(), jax.process_count(), spec.mode if spec else "single process",
      jax.local_device_count(), jax.device_count(),
      ", ".join(str(d) for d in jax.local_devices()))


def check_platform(required: str | None = None) -> None:
  """Stops a job that asked for an accelerator (VIT_JAX_REQUIRE_PLATFORM) but has none."""
  required = (required if required is not None
              else os.environ.get("VIT_JAX_REQUIRE_PLATFORM", "")).lower()
  if not required:
    return
  if required not in ("cpu", "gpu", "tpu"):
    raise ClusterError(f"VIT_JAX_REQUIRE_PLATFORM={required!r}: use gpu, tpu or cpu.")
  found = jax.devices()[0].platform
  if found != required:
    install = INSTALL_LINES.get(required, "").format(version=jax.__version__)
    raise ClusterError(
        f"this job requires {required} devices (VIT_JAX_REQUIRE_PLATFORM={required}) but "
        f"JAX found only {found} devices ({jax.device_count()}). Install the {required} "
        f"build of JAX into this interpreter: {install}"
        + ("" if required != "gpu" else "; check `nvidia-smi` and CUDA_VISIBLE_DEVICES.")
        + " Unset VIT_JAX_REQUIRE_PLATFORM to run on what is there.")


# Keys in jax.distributed's key-value store (held by process 0's coordination service).
_FAILED = "vit_jax/failed/"
_SEEN = "vit_jax/failure_seen/"
WATCH_INTERVAL_S = 1.0
SERVICE_HOST_GRACE_S = 3.0


def _client():
  """jax.distributed's client, or None in a single process.

  jax has no public accessor for the coordination service's key-value store, so this
  reads the private `jax._src.distributed.global_state`; if a jax release moves it, the
  failure notice is skipped and peers stop at the heartbeat timeout instead.
  """
  if jax.process_count() == 1:
    return None
  try:
    from jax._src import distributed  # noqa: PLC0415
  except ImportError:
    return None
  return getattr(getattr(distributed, "global_state", None), "client", None)


def announce_failure(message: str, wait_s: float = 10.0) -> None:
  """Tells the other processes that this one stops with `message`; waits until they saw it.

  The wait (at most `wait_s`) matters for process 0, which hosts the key-value store:
  leaving at once would take the message with it. A no-op in a single process; never
  raises (if the store is gone, the others still stop at the heartbeat timeout).
  """
  client = _client()
  if client is None:
    return
  try:
    client.key_value_set(f"{_FAILED}{jax.process_index()}", message.strip()[:4000])
    deadline = time.monotonic() + wait_s
    while (time.monotonic() < deadline
           and len(client.key_value_dir_get(_SEEN)) < jax.process_count() - 1):
      time.sleep(0.1)
    if jax.process_index() == 0:
      time.sleep(SERVICE_HOST_GRACE_S)  # the others exit first (see watch_peers)
  except Exception:  # noqa: BLE001 (the job is ending anyway; any failure here is moot)
    pass


def watch_peers(program: str = "vit_jax.main") -> None:
  """Starts the daemon thread that ends this process once another process announced a failure."""
  client = _client()
  if client is None:
    return
  me = jax.process_index()

  def watch():
    while True:
      time.sleep(WATCH_INTERVAL_S)
      try:
        failed = [(k, v) for k, v in client.key_value_dir_get(_FAILED)
                  if not k.endswith(f"/{me}")]
      except Exception:  # noqa: BLE001 (the store is gone: the heartbeat timeout takes over)
        return
      if failed:
        break
    key, message = failed[0]
    with_body = "\n".join("  " + line for line in message.splitlines())
    sys.stderr.write(f"{program}: error: process {key.rsplit('/', 1)[1]} of "
                     f"{jax.process_count()} failed:\n{with_body}\nStopping process {me} too.\n")
    try:
      client.key_value_set(f"{_SEEN}{me}", "1")
    except Exception:  # noqa: BLE001
      pass
    if me == 0:
      # Process 0 hosts the coordination service: a client that sees it vanish aborts
      # (SIGABRT, status -6), so it leaves last, after the failed process has exited.
      time.sleep(SERVICE_HOST_GRACE_S)
    errors.exit_now(1)

  threading.Thread(target=watch, name="vit_jax-watch-peers", daemon=True).start()


def barrier(name: str, timeout_s: float = 600.0) -> None:
  """Waits until every process reaches `name`; raises ClusterError after `timeout_s`."""
  client = _client()
  if client is None:
    return
  try:
    client.wait_at_barrier(f"vit_jax/{name}", int(timeout_s * 1000))
  except Exception as e:  # noqa: BLE001 (XLA raises its own status types)
    raise ClusterError(f"waited {timeout_s:.0f} s at {name!r} for the other processes, which did "
                       f"not all arrive ({str(e).splitlines()[0]}); one of them stopped or hangs: "
                       "see its log.") from None
