#!/usr/bin/env bash
# Several JAX processes on this machine, joined into one multi-host job.
#
#   launch/multiprocess_local.sh NUM_PROCESSES DEVICES_PER_PROCESS -- <vit_jax.main args>
#   launch/multiprocess_local.sh 2 2 -- --config configs/vit_digits.py --workdir /tmp/mp
#
# What it launches: NUM_PROCESSES copies of `python -m vit_jax.main <args>`, each with
# DEVICES_PER_PROCESS forced CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count,
# JAX_PLATFORMS=cpu), joined by jax.distributed.initialize with process 0 as coordinator
# on 127.0.0.1 and a free port (VIT_JAX_COORDINATOR / VIT_JAX_NUM_PROCESSES /
# VIT_JAX_PROCESS_ID). Cross-process collectives on CPU go through gloo
# (VIT_JAX_CPU_COLLECTIVES). The job sees NUM_PROCESSES x DEVICES_PER_PROCESS devices and
# runs the real multi-host code paths: per-process data shards, global arrays, multi-process
# Orbax checkpoints, process-0-only writes. It is how tests/test_multihost.py runs them.
#
# Output: every line is prefixed with "[p<id>] ". The script waits for all processes and
# exits with the first failure's status, else 75 when the processes stopped after saving
# on SIGTERM (vit_jax.main's "preempted, resume me" status), else 0. When one process
# fails (a status other than 0 and 75), the others are sent
# SIGTERM and, after KILL_GRACE_S seconds (default 10), SIGKILL (a peer stuck in a
# collective with a dead process never returns by itself). SIGINT/SIGTERM to the script
# are forwarded to every process (SIGTERM: each saves a checkpoint and stops).
#
# Adapt: PYTHON (default: .venv/bin/python of the repository, else python3) picks the
# interpreter; PORT fixes the coordinator port; EXTRA_XLA_FLAGS are appended to XLA_FLAGS.
# The per-process settings above are the ones a real cluster gets from its scheduler; see
# launch/slurm.sbatch and launch/tpu_vm.sh for those.
set -euo pipefail

usage() {
  echo "usage: $0 NUM_PROCESSES DEVICES_PER_PROCESS -- <vit_jax.main args>" >&2
  exit 2
}

[[ $# -ge 3 && $3 == "--" ]] || usage
num_processes=$1
devices_per_process=$2
shift 3
[[ $num_processes =~ ^[1-9][0-9]*$ && $devices_per_process =~ ^[1-9][0-9]*$ ]] || usage

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z ${PYTHON:-} ]]; then
  if [[ -x $repo/.venv/bin/python ]]; then PYTHON=$repo/.venv/bin/python; else PYTHON=python3; fi
fi
# A port the OS says is free now (a tiny race with other programs is possible; set PORT).
port=${PORT:-$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
grace=${KILL_GRACE_S:-10}

pids=()
signal_all() {  # signal_all SIGNAL: to every process still running
  local pid
  for pid in "${pids[@]}"; do
    if [[ -n $pid ]]; then kill "-$1" "$pid" 2>/dev/null || true; fi
  done
}
trap 'signal_all TERM' TERM
trap 'signal_all INT' INT

cd "$repo"
for ((i = 0; i < num_processes; i++)); do
  # Process substitution keeps $! the python process itself (not a pipeline), so it can
  # be signalled and its exit status read; sed prefixes its output line by line.
  JAX_PLATFORMS=cpu \
  XLA_FLAGS="--xla_force_host_platform_device_count=$devices_per_process ${EXTRA_XLA_FLAGS:-}" \
  VIT_JAX_COORDINATOR="127.0.0.1:$port" \
  VIT_JAX_NUM_PROCESSES="$num_processes" \
  VIT_JAX_PROCESS_ID="$i" \
  VIT_JAX_CPU_COLLECTIVES="${VIT_JAX_CPU_COLLECTIVES:-gloo}" \
  PYTHONUNBUFFERED=1 \
    "$PYTHON" -m vit_jax.main "$@" > >(sed -u "s/^/[p$i] /") 2>&1 &
  pids+=("$!")
done

# Poll rather than `wait -n`, which needs bash >= 4.3 (macOS ships 3.2).
status=0
preempted=0
running=$num_processes
while ((running > 0)); do
  for i in "${!pids[@]}"; do
    pid=${pids[$i]}
    [[ -z $pid ]] && continue
    kill -0 "$pid" 2>/dev/null && continue
    rc=0
    wait "$pid" || rc=$?
    pids[i]=""
    running=$((running - 1))
    if ((rc == 75)); then  # saved and stopped after SIGTERM: the others do the same
      preempted=1
      continue
    fi
    if ((rc != 0 && status == 0)); then
      status=$rc
      echo "[launch] process $i exited with status $rc; stopping the others." >&2
      signal_all TERM
      deadline=$((SECONDS + grace))
      while ((SECONDS < deadline)); do
        alive=0
        for pid in "${pids[@]}"; do
          [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && alive=1
        done
        ((alive)) || break
        sleep 0.5
      done
      signal_all KILL
    fi
  done
  sleep 0.2
done
wait  # the output filters
if ((status == 0 && preempted)); then status=75; fi
exit "$status"
