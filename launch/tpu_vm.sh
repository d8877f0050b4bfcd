#!/usr/bin/env bash
# A Cloud TPU VM slice (one or many hosts): create or reuse it, install this repository on
# every worker, and start the same vit_jax.main command on all of them.
#
#   TPU_NAME=vit-v4-32 ZONE=us-central2-b ACCELERATOR=v4-32 WORKDIR=gs://my-bucket/runs/s16 \
#     launch/tpu_vm.sh --config configs/vit_s16_i1k.py --config.data.data_dir=gs://my-bucket/tfds
#
# What it launches, in order (each step is idempotent; rerunning resumes the job):
# 1. `gcloud compute tpus tpu-vm create` unless a TPU VM named TPU_NAME exists in ZONE
#    (ACCELERATOR e.g. v4-8, v4-32, v5litepod-16; RUNTIME_VERSION the TPU software image;
#    SPOT=1 for a spot slice);
# 2. on every worker (--worker=all): this repository's committed HEAD (git archive, so
#    uncommitted edits are not shipped), a venv with requirements.txt plus jax[tpu] of
#    the same version, and the bucket of WORKDIR mounted with Cloud Storage FUSE at
#    /gcs/BUCKET (the driver writes plain files; every host must see the same workdir);
#    INSTALL=0 skips this step;
# 3. on every worker at once: `VIT_JAX_DISTRIBUTED=1 python -m vit_jax.main <args>
#    --workdir /gcs/BUCKET/PATH`. VIT_JAX_DISTRIBUTED=1 makes each process call
#    jax.distributed.initialize(), which on TPU VMs finds the coordinator, the process
#    count and its id by itself; one mesh spans all chips of all hosts. Process 0 writes
#    metrics and results, every process its part of each checkpoint. The output of all
#    workers streams back here; DETACH=1 instead starts the job under nohup (log in
#    ~/vit_jax.log on each worker) and returns: preemptible runs are restarted by
#    running this script again (same WORKDIR: it resumes from the latest checkpoint).
#
# Adapt: PROJECT (default: gcloud's configured project), ZONE, ACCELERATOR,
# RUNTIME_VERSION, SPOT, TPU_NAME, WORKDIR (must be gs://BUCKET/PATH, in a bucket the
# TPU VM's service account can write); datasets can be read from GCS directly
# (--config.data.data_dir=gs://...). Delete the slice when done:
#   gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone "$ZONE"
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME, e.g. vit-v4-32}"
: "${ZONE:?set ZONE, e.g. us-central2-b}"
: "${WORKDIR:?set WORKDIR=gs://BUCKET/PATH (checkpoints, metrics, results)}"
ACCELERATOR=${ACCELERATOR:-v4-8}
RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
JAX_VERSION=${JAX_VERSION:-0.10.2}
[[ $WORKDIR =~ ^gs://([^/]+)(/.*)?$ ]] || { echo "WORKDIR must be gs://BUCKET/PATH" >&2; exit 2; }
bucket=${BASH_REMATCH[1]}
mounted_workdir="/gcs/$bucket${BASH_REMATCH[2]}"

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
gcloud_tpu=(gcloud compute tpus tpu-vm)
where=(--zone "$ZONE")
[[ -n ${PROJECT:-} ]] && where+=(--project "$PROJECT")

# 1. The slice.
if "${gcloud_tpu[@]}" describe "$TPU_NAME" "${where[@]}" > /dev/null 2>&1; then
  echo "Reusing TPU VM $TPU_NAME."
else
  create=(create "$TPU_NAME" "${where[@]}" --accelerator-type "$ACCELERATOR"
          --version "$RUNTIME_VERSION")
  [[ ${SPOT:-0} == 1 ]] && create+=(--spot)
  "${gcloud_tpu[@]}" "${create[@]}"
fi
on_all_workers() {  # on_all_workers COMMAND: runs COMMAND on every host of the slice
  "${gcloud_tpu[@]}" ssh "$TPU_NAME" "${where[@]}" --worker=all --command "$1"
}

# 2. The project on every worker.
if [[ ${INSTALL:-1} == 1 ]]; then
  archive=$(mktemp -t vit_jax.XXXXXX.tar.gz)
  trap 'rm -f "$archive"' EXIT
  git -C "$repo" archive --format=tar.gz -o "$archive" HEAD
  "${gcloud_tpu[@]}" scp "$archive" "$TPU_NAME:vit_jax.tar.gz" "${where[@]}" --worker=all
  on_all_workers "set -euo pipefail
    rm -rf ~/vit_jax && mkdir ~/vit_jax && tar -xzf ~/vit_jax.tar.gz -C ~/vit_jax && cd ~/vit_jax
    python3 -m venv .venv
    .venv/bin/pip install -q -r requirements.txt -c constraints.txt
    .venv/bin/pip install -q 'jax[tpu]==$JAX_VERSION'
    if ! command -v gcsfuse > /dev/null; then
      curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg |
        sudo tee /usr/share/keyrings/cloud.google.asc > /dev/null
      echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -cs) main\" |
        sudo tee /etc/apt/sources.list.d/gcsfuse.list > /dev/null
      sudo apt-get update -q && sudo apt-get install -y -q gcsfuse
    fi
    # Orbax renames each finished checkpoint directory: allow directory renames.
    sudo mkdir -p /gcs/$bucket && sudo chown \"\$USER\" /gcs/$bucket
    mountpoint -q /gcs/$bucket ||
      gcsfuse --implicit-dirs --rename-dir-limit=1000000 $bucket /gcs/$bucket"
fi

# 3. The same command on every worker.
command="cd ~/vit_jax && VIT_JAX_DISTRIBUTED=1 .venv/bin/python -m vit_jax.main $(printf '%q ' "$@")--workdir $(printf '%q' "$mounted_workdir")"
if [[ ${DETACH:-0} == 1 ]]; then
  on_all_workers "nohup bash -c $(printf '%q' "$command") > ~/vit_jax.log 2>&1 < /dev/null &"
  echo "Started on every worker; follow with: ${gcloud_tpu[*]} ssh $TPU_NAME --zone $ZONE --worker=0 --command 'tail -f ~/vit_jax.log'"
else
  on_all_workers "$command"
fi
