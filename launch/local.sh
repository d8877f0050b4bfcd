#!/usr/bin/env bash
# One host, all of its devices: one `python -m vit_jax.main` process.
#
#   launch/local.sh --config configs/vit_digits.py --workdir workdirs/digits
#   launch/local.sh --config configs/vit_b16_finetune.py:cifar10 --workdir workdirs/c10 \
#       --config.init_from.path=/path/to/ViT-B_16.npz
#
# What it launches: a single process that sees every local device (all GPUs, all TPU
# chips of a single-host TPU VM, or the CPU) and builds one ("data", "fsdp") mesh over
# them; no jax.distributed. All arguments go to vit_jax.main unchanged.
#
# Adapt: PYTHON picks the interpreter (default: the repository's .venv, else python3).
# CUDA_VISIBLE_DEVICES=0,1 restricts the GPUs used; DEVICES=N forces N CPU devices (to
# try the multi-device code paths on a laptop); XLA_FLAGS and JAX_PLATFORMS pass through.
# For several hosts use launch/tpu_vm.sh or launch/slurm.sbatch (or
# launch/multiprocess_local.sh to run several processes on this one).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z ${PYTHON:-} ]]; then
  if [[ -x $repo/.venv/bin/python ]]; then PYTHON=$repo/.venv/bin/python; else PYTHON=python3; fi
fi
if [[ -n ${DEVICES:-} ]]; then
  export JAX_PLATFORMS=cpu
  export XLA_FLAGS="--xla_force_host_platform_device_count=$DEVICES ${XLA_FLAGS:-}"
fi
cd "$repo"
exec "$PYTHON" -m vit_jax.main "$@"
