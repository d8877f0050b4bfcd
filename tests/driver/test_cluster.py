"""How a process finds its job (vit_jax/driver/cluster.py): the environment each scheduler sets."""

import jax
import pytest

from tests.helpers import run_main
from vit_jax.driver import cluster

SLURM = {"SLURM_JOB_ID": "77", "SLURM_STEP_NODELIST": "gpu[001-002]", "SLURM_NTASKS": "16",
         "SLURM_PROCID": "11", "SLURM_LOCALID": "3", "SLURM_NODEID": "1"}
EIGHT_GPUS = {"CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}


def test_tasks_per_node_reads_slurms_compressed_counts():
  assert cluster.tasks_per_node("8(x2),4") == [8, 8, 4]
  assert cluster.tasks_per_node("1") == [1]
  with pytest.raises(cluster.ClusterError, match=r"cannot read Slurm's tasks per node '8x2'"):
    cluster.tasks_per_node("8x2")


def test_one_task_per_gpu_drives_the_gpu_of_its_local_rank():
  env = {**SLURM, **EIGHT_GPUS, "SLURM_STEP_TASKS_PER_NODE": "8(x2)"}
  assert cluster.slurm_local_device_ids(env) == (3,)


def test_one_task_per_node_drives_all_gpus_of_its_node():
  env = {**SLURM, **EIGHT_GPUS, "SLURM_LOCALID": "0", "SLURM_STEP_TASKS_PER_NODE": "1(x2)"}
  assert cluster.slurm_local_device_ids(env) == tuple(range(8))
  # The GPU count may come from Slurm alone; two tasks per node split the node's four.
  env = {**SLURM, "SLURM_GPUS_ON_NODE": "4", "SLURM_LOCALID": "1",
         "SLURM_TASKS_PER_NODE": "2(x2)"}
  assert cluster.slurm_local_device_ids(env) == (2, 3)


def test_gpus_that_do_not_split_between_the_tasks_are_refused():
  env = {**SLURM, **EIGHT_GPUS, "SLURM_LOCALID": "0", "SLURM_STEP_TASKS_PER_NODE": "3(x2)"}
  with pytest.raises(cluster.ClusterError, match=r"8 GPUs for 3 tasks.*--ntasks-per-node"):
    cluster.slurm_local_device_ids(env)


def test_resolve_explicit_auto_and_single():
  explicit = cluster.resolve(env={"VIT_JAX_COORDINATOR": "127.0.0.1:1234",
                                  "VIT_JAX_NUM_PROCESSES": "2", "VIT_JAX_PROCESS_ID": "1"})
  assert explicit == cluster.Distributed("explicit", "127.0.0.1:1234", 2, 1, None)
  assert explicit.kwargs() == {"coordinator_address": "127.0.0.1:1234", "num_processes": 2,
                               "process_id": 1}
  # VIT_JAX_DISTRIBUTED=1 on Slurm: JAX finds the coordinates, we add the local GPUs.
  auto = cluster.resolve(env={**SLURM, **EIGHT_GPUS, "SLURM_STEP_TASKS_PER_NODE": "8(x2)",
                              "VIT_JAX_DISTRIBUTED": "1"})
  assert auto == cluster.Distributed("auto", local_device_ids=(3,))
  assert auto.kwargs() == {"local_device_ids": [3]}
  # On a CPU Slurm node nothing is known about GPUs: JAX's defaults stand.
  assert cluster.resolve(env={**SLURM, "VIT_JAX_DISTRIBUTED": "1"}).kwargs() == {}
  assert cluster.resolve(env=SLURM) is None  # not asked to join: one process
  assert cluster.resolve(env={}) is None


def test_a_coordinator_without_process_count_is_refused():
  with pytest.raises(cluster.ClusterError, match=r"without the process count and id"):
    cluster.resolve(env={"VIT_JAX_COORDINATOR": "host:1"})


def test_required_accelerator_missing_names_the_install_line():
  assert jax.devices()[0].platform == "cpu"
  cluster.check_platform("")  # nothing required
  cluster.check_platform("cpu")
  with pytest.raises(cluster.ClusterError,
                     match=rf'requires gpu devices.*found only cpu devices.*'
                           rf'pip install "jax\[cuda12\]=={jax.__version__}"'):
    cluster.check_platform("gpu")
  with pytest.raises(cluster.ClusterError, match=r'pip install "jax\[tpu\]=='):
    cluster.check_platform("tpu")
  with pytest.raises(cluster.ClusterError, match=r"use gpu, tpu or cpu"):
    cluster.check_platform("cuda")


@pytest.mark.slow
def test_a_gpu_job_on_the_cpu_build_stops_before_anything_is_written(tmp_path, digits_data_dir):
  workdir = tmp_path / "run"
  proc = run_main(workdir, digits_data_dir, devices=1, check=False,
                  VIT_JAX_REQUIRE_PLATFORM="gpu")
  assert proc.returncode == 1
  assert 'requires gpu devices' in proc.stderr and "jax[cuda12]" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not workdir.exists()
