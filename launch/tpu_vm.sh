#!/usr/bin/env bash
# A Cloud TPU VM slice (one or many hosts): create or reuse it, install this repository on
# every worker, and start the same vit_jax.main command on all of them.
#
#   TPU_NAME=vit-v4-32 ZONE=us-central2-b ACCELERATOR=v4-32 WORKDIR=gs://my-bucket/runs/s16 \
#     launch/tpu_vm.sh --config configs/vit_s16_i1k.py --config.data.data_dir=gs://my-bucket/tfds
#   TPU_NAME=... ZONE=... launch/tpu_vm.sh status   # each worker: running, or its exit status
#   TPU_NAME=... ZONE=... launch/tpu_vm.sh stop     # SIGTERM: save a checkpoint and stop
#
# What it does, in order (each step is idempotent; rerunning the script resumes the job):
# 1. The slice. RUNTIME_VERSION defaults to the TPU software version for ACCELERATOR
#    (v6e: v2-alpha-tpuv6e, v5p: v2-alpha-tpuv5, v5e/v5litepod: v2-alpha-tpuv5-lite,
#    v4 and older: tpu-ubuntu2204-base). SPOT=1 requests it as a Spot queued resource
#    (`gcloud compute tpus queued-resources create --spot`; the script waits until it is
#    ACTIVE), otherwise `tpu-vm create`. A slice that exists but was preempted (state
#    PREEMPTED, or a SUSPENDED/FAILED queued resource) cannot be restarted: it is deleted
#    and created again, so "run the script again to resume" holds.
# 2. On every worker (--worker=all), unless INSTALL=0: refuse if a vit_jax job is still
#    running there (`launch/tpu_vm.sh stop` first); this repository's committed HEAD
#    (git archive: uncommitted edits are not shipped); a venv with Python PYTHON_VERSION
#    (default 3.11; the TPU images ship 3.10, older than the pinned jax needs), made with
#    uv (installed to ~/.local/bin if missing), with requirements.txt and jax[tpu] of the
#    pinned version.
# 3. On every worker at once: `VIT_JAX_DISTRIBUTED=1 python -m vit_jax.main <args>
#    --workdir WORKDIR`. jax.distributed.initialize() finds the coordinator, the process
#    count and its id from the TPU metadata; one mesh spans all chips of all hosts.
#    VIT_JAX_REQUIRE_PLATFORM=tpu stops at once if JAX sees no TPU. WORKDIR is a gs:// URL
#    used as it is: Orbax writes checkpoints to Cloud Storage itself and the metrics,
#    config.json and results go through TensorFlow's GCS file system (no FUSE mount; see
#    vit_jax/paths.py). The output of all workers streams back here and the script exits
#    with the job's status (75: stopped early after saving, rerun to resume). DETACH=1
#    starts the job under nohup instead and returns; each worker appends its output to
#    ~/vit_jax.log (one "=== start" header per run) and writes its exit status to
#    ~/vit_jax.exit when the job ends: read them with `launch/tpu_vm.sh status`.
#
# Adapt: PROJECT (default: gcloud's configured project), ZONE, ACCELERATOR,
# RUNTIME_VERSION, SPOT, TPU_NAME, WORKDIR (gs://BUCKET/PATH, in a bucket the TPU VM's
# service account can write); read datasets from GCS directly
# (--config.data.data_dir=gs://...). Delete the slice when done:
#   gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone "$ZONE"            (SPOT=0)
#   gcloud compute tpus queued-resources delete "$TPU_NAME" --zone "$ZONE" --force  (SPOT=1)
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME, e.g. vit-v4-32}"
: "${ZONE:?set ZONE, e.g. us-central2-b}"
ACCELERATOR=${ACCELERATOR:-v4-8}
JAX_VERSION=${JAX_VERSION:-0.10.2}
PYTHON_VERSION=${PYTHON_VERSION:-3.11}

runtime_for() {  # runtime_for ACCELERATOR_TYPE: the TPU software version JAX needs
  case $1 in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    *) echo "unknown ACCELERATOR=$1: set RUNTIME_VERSION (see cloud.google.com/tpu/docs/runtimes)" >&2
       return 2 ;;
  esac
}
RUNTIME_VERSION=${RUNTIME_VERSION:-$(runtime_for "$ACCELERATOR")}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
gcloud_tpu=(gcloud compute tpus tpu-vm)
gcloud_qr=(gcloud compute tpus queued-resources)
where=(--zone "$ZONE")
if [[ -n ${PROJECT:-} ]]; then where+=(--project "$PROJECT"); fi
# The job as the workers see it: ps shows "python -m vit_jax.main".
job_pattern='[p]ython -m vit_jax\.main'

on_all_workers() {  # on_all_workers COMMAND: runs COMMAND on every host of the slice
  "${gcloud_tpu[@]}" ssh "$TPU_NAME" "${where[@]}" --worker=all --command "$1"
}

action=run
if [[ ${1:-} == status || ${1:-} == stop ]]; then action=$1; shift; fi
if [[ $action == status ]]; then
  on_all_workers "if pgrep -f '$job_pattern' > /dev/null; then echo \"\$(hostname): running\";
    elif [[ -f ~/vit_jax.exit ]]; then echo \"\$(hostname): exited with status \$(cat ~/vit_jax.exit)\";
    else echo \"\$(hostname): no job\"; fi; tail -n 3 ~/vit_jax.log 2> /dev/null || true"
  exit 0
fi
if [[ $action == stop ]]; then
  on_all_workers "pkill -TERM -f '$job_pattern' || true"
  echo "Sent SIGTERM: the job saves a checkpoint at its next logging step and exits with 75."
  exit 0
fi

: "${WORKDIR:?set WORKDIR=gs://BUCKET/PATH (checkpoints, metrics, results)}"
[[ $WORKDIR =~ ^gs://[^/]+/.+ ]] || { echo "WORKDIR must be gs://BUCKET/PATH" >&2; exit 2; }

# 1. The slice.
node_state() {  # READY, PREEMPTED, CREATING, ...; empty when there is no such TPU VM
  "${gcloud_tpu[@]}" describe "$TPU_NAME" "${where[@]}" --format='value(state)' 2> /dev/null || true
}
queued_state() {  # ACTIVE, SUSPENDED, FAILED, ...; empty when there is no such request
  "${gcloud_qr[@]}" describe "$TPU_NAME" "${where[@]}" --format='value(state.state)' \
    2> /dev/null || true
}
create_slice() {
  if [[ ${SPOT:-0} == 1 ]]; then
    "${gcloud_qr[@]}" create "$TPU_NAME" "${where[@]}" --node-id "$TPU_NAME" \
      --accelerator-type "$ACCELERATOR" --runtime-version "$RUNTIME_VERSION" --spot
    echo "Waiting for the Spot slice $TPU_NAME to become ACTIVE ..."
    local state
    while true; do
      state=$(queued_state)
      case $state in
        ACTIVE) break ;;
        FAILED | SUSPENDED) echo "Queued resource $TPU_NAME is $state." >&2; exit 1 ;;
      esac
      sleep "${POLL_S:-30}"
    done
  else
    "${gcloud_tpu[@]}" create "$TPU_NAME" "${where[@]}" --accelerator-type "$ACCELERATOR" \
      --version "$RUNTIME_VERSION"
  fi
}
state=$(node_state)
qr_state=""
if [[ ${SPOT:-0} == 1 ]]; then qr_state=$(queued_state); fi
if [[ $state == PREEMPTED || $state == TERMINATED || $qr_state == SUSPENDED ||
      $qr_state == FAILED ]]; then
  echo "TPU VM $TPU_NAME was preempted (${state:-$qr_state}): deleting and recreating it;" \
       "the job resumes from its last checkpoint in $WORKDIR."
  if [[ -n $qr_state ]]; then
    "${gcloud_qr[@]}" delete "$TPU_NAME" "${where[@]}" --force --quiet
  else
    "${gcloud_tpu[@]}" delete "$TPU_NAME" "${where[@]}" --quiet
  fi
  state=""
  INSTALL=1  # a new VM has nothing installed
fi
if [[ -n $state ]]; then
  echo "Reusing TPU VM $TPU_NAME ($state)."
else
  create_slice
fi

# 2. The project on every worker.
if [[ ${INSTALL:-1} == 1 ]]; then
  if ! on_all_workers "! pgrep -f '$job_pattern' > /dev/null"; then
    echo "A vit_jax job is still running on $TPU_NAME: wait for it, or stop it with" \
         "'launch/tpu_vm.sh stop' (it saves a checkpoint), then rerun; INSTALL=0 skips" \
         "the reinstall." >&2
    exit 1
  fi
  archive=$(mktemp -t vit_jax.XXXXXX.tar.gz)
  trap 'rm -f "$archive"' EXIT
  git -C "$repo" archive --format=tar.gz -o "$archive" HEAD
  "${gcloud_tpu[@]}" scp "$archive" "$TPU_NAME:vit_jax.tar.gz" "${where[@]}" --worker=all
  on_all_workers "set -euo pipefail
    rm -rf ~/vit_jax && mkdir ~/vit_jax && tar -xzf ~/vit_jax.tar.gz -C ~/vit_jax && cd ~/vit_jax
    export PATH=\$HOME/.local/bin:\$PATH
    command -v uv > /dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh
    uv venv --python $PYTHON_VERSION .venv
    uv pip install --python .venv/bin/python -r requirements.txt -c constraints.txt
    uv pip install --python .venv/bin/python 'jax[tpu]==$JAX_VERSION'"
fi

# 3. The same command on every worker.
command="cd ~/vit_jax && VIT_JAX_DISTRIBUTED=1 VIT_JAX_REQUIRE_PLATFORM=tpu .venv/bin/python -m vit_jax.main $(printf '%q ' "$@")--workdir $(printf '%q' "$WORKDIR")"
if [[ ${DETACH:-0} == 1 ]]; then
  # shellcheck disable=SC2016  # $? and $(date) belong to the worker's shell
  on_all_workers "rm -f ~/vit_jax.exit; echo \"=== start \$(date -u +%FT%TZ)\" >> ~/vit_jax.log
    nohup bash -c $(printf '%q' "$command"'; echo $? > ~/vit_jax.exit') >> ~/vit_jax.log 2>&1 < /dev/null &"
  echo "Started on every worker. Follow: ${gcloud_tpu[*]} ssh $TPU_NAME --zone $ZONE --worker=0" \
       "--command 'tail -f ~/vit_jax.log'; exit statuses: launch/tpu_vm.sh status"
else
  rc=0
  on_all_workers "$command" || rc=$?
  if ((rc == 75)); then
    echo "The job stopped early after saving a checkpoint: rerun this script to resume." >&2
  fi
  exit "$rc"
fi
