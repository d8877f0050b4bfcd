"""A job that hits an error exits promptly with status 1, and loses no trained step.

Each test runs `python -m vit_jax.main` as a subprocess under a deadline, as a scheduler
would, on inputs that used to leave the process alive after its error message (the
tf.data iterator's destructor waited for a decoder that needed the GIL): a corrupted DMVR
shard in training and in evaluation, a too-short video read inside tf.data, and a
2-process job where one process meets the bad shard. A hang shows as the deadline
passing (subprocess.TimeoutExpired), not as a slow test.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import REPO, main_command, subprocess_env
from tests.media import write_video

pytestmark = pytest.mark.slow  # every test here starts python -m vit_jax.main processes

VIDEO_CONFIG = "tests/tiny_video_config.py"
# A prompt exit takes start-up + compilation (seconds; tens on a loaded 2-core machine);
# the hangs this guards against lasted until an outer timeout (150-770 s).
DEADLINE_S = 150
PROMPT_S = 120


def _videos(root, counts, frames=8):
  """root/<split>/{left,right}/<i>.mp4: a bar moving left or right, `frames` frames each."""
  for split, count in counts.items():
    for direction in ("left", "right"):
      os.makedirs(os.path.join(root, split, direction))
      for i in range(count):
        clip = np.zeros((frames, 16, 16, 3), np.uint8)
        for t in range(frames):
          x = t * 2 if direction == "right" else 14 - t * 2
          clip[t, :, max(x, 0):max(x, 0) + 2] = 255
        write_video(os.path.join(root, split, direction, f"{i}.mp4"), clip)


def _flip_bytes(path):
  """Flips 8 bytes in the middle of a file: its size is unchanged (dmvr_info.json still
  matches), a TFRecord checksum no longer does."""
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    chunk = f.read(8)
    f.seek(-len(chunk), os.SEEK_CUR)
    f.write(bytes(b ^ 0xFF for b in chunk))


@pytest.fixture(scope="module")
def dmvr_root(tmp_path_factory):
  """DMVR shards of 2 x 8 train and 2 x 2 test videos: 2 train shards, 2 test shards."""
  from vit_jax.data import dmvr_writer  # noqa: PLC0415

  base = tmp_path_factory.mktemp("dmvr")
  folder = str(base / "videos")
  _videos(folder, {"train": 8, "test": 2})
  root = str(base / "shards")
  dmvr_writer.write_dataset(f"folder:{folder}", root, ["train", "test"], num_shards=2)
  return root


def _damaged_copy(dmvr_root, tmp_path, shard):
  root = str(tmp_path / "damaged")
  shutil.copytree(dmvr_root, root)
  _flip_bytes(os.path.join(root, shard))
  return root


def _run(workdir, *flags, config=VIDEO_CONFIG, devices=8, **env):
  start = time.monotonic()
  proc = subprocess.run(main_command(workdir, *flags, config=config), cwd=REPO,
                        env=subprocess_env(devices, **env), capture_output=True, text=True,
                        timeout=DEADLINE_S)
  return proc, time.monotonic() - start


def _assert_prompt_error(proc, seconds, *fragments):
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert "vit_jax.main: error: " in proc.stderr
  for fragment in fragments:
    assert fragment in proc.stderr, proc.stderr[-3000:]
  assert seconds < PROMPT_S, f"{seconds:.0f} s"


def test_a_corrupted_training_shard_ends_the_run_naming_shard_and_record(dmvr_root, tmp_path):
  root = _damaged_copy(dmvr_root, tmp_path, "train-00001-of-00002")
  proc, seconds = _run(tmp_path / "run", f"--config.data.dataset=dmvr:{root}",
                       "--config.data.shuffle_buffer=2")
  _assert_prompt_error(proc, seconds, "BadDataError",
                       f"{root}/train-00001-of-00002 record ", "corrupted record at ",
                       "python -m vit_jax.data.dmvr_writer --index")


def test_a_corrupted_evaluation_shard_keeps_the_trained_steps(dmvr_root, tmp_path):
  root = _damaged_copy(dmvr_root, tmp_path, "test-00001-of-00002")
  workdir = tmp_path / "run"
  # One checkpoint only, at the last step: the evaluation there runs first and fails.
  proc, seconds = _run(workdir, f"--config.data.dataset=dmvr:{root}",
                       "--config.checkpoint.every_steps=1000")
  _assert_prompt_error(proc, seconds, f"{root}/test-00001-of-00002 record ")
  assert "The evaluation at step 8 failed; saving step 8 before stopping." in proc.stderr
  assert sorted(os.listdir(workdir / "checkpoints")) == ["8"]
  assert not (workdir / "results.json").exists()


def test_a_too_short_video_read_inside_tf_data_ends_the_run(tmp_path):
  root = tmp_path / "videos"
  _videos(str(root), {"train": 2, "test": 1}, frames=16)
  write_video(str(root / "train" / "left" / "short.mp4"), np.zeros((4, 16, 16, 3), np.uint8))
  proc, seconds = _run(tmp_path / "run", f"--config.data.dataset=folder:{root}",
                       "--config.data.min_frames=16", "--config.data.skip_bad_examples=False")
  _assert_prompt_error(proc, seconds, f"{root}/train/left/short.mp4: it has 4 frames, fewer "
                       "than data.min_frames=16. Fix or delete the file.")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_both_exit_when_one_meets_bad_data(dmvr_root, tmp_path):
  # Process 1 reads train-00001 (the second half of the records) and fails on it; process
  # 0 waits in the train step's collectives and must not wait there forever.
  root = _damaged_copy(dmvr_root, tmp_path, "train-00001-of-00002")
  port = _free_port()
  start = time.monotonic()
  procs = [subprocess.Popen(
      main_command(tmp_path / "run", f"--config.data.dataset=dmvr:{root}",
                   "--config.data.shuffle_buffer=2", config=VIDEO_CONFIG),
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=subprocess_env(1, VIT_JAX_COORDINATOR=f"127.0.0.1:{port}",
                         VIT_JAX_NUM_PROCESSES="2", VIT_JAX_PROCESS_ID=str(i)))
      for i in (0, 1)]
  try:
    outputs = [p.communicate(timeout=DEADLINE_S)[1] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  seconds = time.monotonic() - start
  assert [p.returncode for p in procs] == [1, 1], outputs[0][-2000:] + outputs[1][-2000:]
  assert f"{root}/train-00001-of-00002 record " in outputs[1]
  assert "vit_jax.main: error: process 1 of 2 failed:" in outputs[0], outputs[0][-3000:]
  assert "train-00001-of-00002 record " in outputs[0]
  assert "Stopping process 0 too." in outputs[0]
  assert seconds < PROMPT_S, f"{seconds:.0f} s"


def test_ctrl_c_saves_like_sigterm_and_the_run_resumes(tmp_path, digits_data_dir):
  workdir = tmp_path / "run"
  proc = subprocess.Popen(
      main_command(workdir, "--config.total_steps=100000", "--config.log_every_steps=1"),
      cwd=REPO, env=subprocess_env(1, digits_data_dir), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + DEADLINE_S
  while not (metrics.exists() and metrics.stat().st_size) and time.time() < deadline:
    time.sleep(0.2)
  proc.send_signal(signal.SIGINT)
  _, stderr = proc.communicate(timeout=DEADLINE_S)
  assert proc.returncode == 130, stderr[-3000:]
  assert "KeyboardInterrupt" not in stderr and "Traceback" not in stderr
  assert "SIGINT received: saving a checkpoint and stopping" in stderr
  assert "Preempted at step" in stderr and "(SIGINT)" in stderr
  saved = [int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit()]
  assert saved and 0 < max(saved) < 100000
  resumed, _ = _run(workdir, f"--config.total_steps={max(saved) + 2}",
                    "--config.log_every_steps=1", config="tests/tiny_digits_config.py",
                    VIT_JAX_DATA_DIR=str(digits_data_dir))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"starting at step {max(saved)}." in resumed.stderr


def _bad_inputs(tmp_path):
  """(name, flags, workdir, fragments of the message) of a new user's bad inputs."""
  bad_config = tmp_path / "bad_config.py"
  bad_config.write_text("import ml_collections\n\ndef get_config()\n  return None\n")
  from safetensors.numpy import save_file  # noqa: PLC0415

  truncated = tmp_path / "model.safetensors"
  save_file({"cls": np.zeros((1, 1, 32), np.float32), "pos": np.zeros((1, 17, 32), np.float32)},
            str(truncated))
  truncated.write_bytes(truncated.read_bytes()[:-50])
  a_file = tmp_path / "a_file"
  a_file.write_text("")
  tiny = "tests/tiny_digits_config.py"
  return [
      ("syntax", ["--config", str(bad_config)], tmp_path / "w1",
       [f"config file {bad_config} line 3: expected ':'", "def get_config()"]),
      ("no config", ["--config", "configs/vit_digitz.py"], tmp_path / "w2",
       ["config file configs/vit_digitz.py does not exist. configs holds: ", "vit_digits.py"]),
      ("steps", ["--config", tiny, "--config.total_steps=-5"], tmp_path / "w3",
       ["total_steps must be positive."]),
      ("patch", ["--config", tiny, "--config.data.image_size=9"], tmp_path / "w4",
       ["data.image_size=9 is not divisible by the patch size 2x2 of ViT-Mu_2: pass "
        "--config.data.image_size=8"]),
      ("dataset", ["--config", tiny, "--config.data.dataset=digit"], tmp_path / "w5",
       ["Unknown dataset 'digit'. Did you mean 'digits'?"]),
      ("workdir", ["--config", tiny], a_file, [f"--workdir {a_file} is a file"]),
      ("missing init", ["--config", tiny, f"--config.init_from.path={tmp_path}/nope.npz"],
       tmp_path / "w7", [f"{tmp_path}/nope.npz"]),
      ("truncated init", ["--config", tiny, f"--config.init_from.path={truncated}"],
       tmp_path / "w8", ["CheckpointError", f"{truncated}", "truncated or corrupt"]),
      # The README's fine-tuning path: the file also gives the architecture.
      ("truncated pretrained", ["--config", "configs/finetune_pretrained.py:probe",
                                f"--config.init_from.path={truncated}"],
       tmp_path / "w9", ["CheckpointError", f"{truncated}", "truncated or corrupt"]),
  ]


def test_bad_inputs_get_one_message_within_seconds_and_leave_nothing(tmp_path, digits_data_dir):
  cases = _bad_inputs(tmp_path)
  start = time.monotonic()
  # All at once: each is seconds of start-up; together they fit the suite's budget.
  procs = [subprocess.Popen(
      [sys.executable, "-m", "vit_jax.main", *flags, "--workdir", str(workdir),
       "--compilation_cache="], cwd=REPO, env=subprocess_env(1, digits_data_dir),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for _, flags, workdir, _ in cases]
  outputs = [p.communicate(timeout=DEADLINE_S)[1] for p in procs]
  seconds = time.monotonic() - start
  for (name, _, workdir, fragments), proc, stderr in zip(cases, procs, outputs):
    assert proc.returncode == 1, (name, stderr[-3000:])
    assert "Traceback" not in stderr, (name, stderr[-3000:])
    message = stderr[stderr.index("vit_jax.main: error: "):]
    assert len(message.splitlines()) <= 8, (name, message)
    for fragment in fragments:
      assert fragment in message, (name, message)
    if name != "workdir":
      assert not workdir.exists(), (name, sorted(os.listdir(workdir)))
  assert seconds < PROMPT_S, f"{seconds:.0f} s for {len(cases)} runs in parallel"


def test_help_lists_each_commands_flags():
  expected = {"main": ["--config:", "--workdir:", "--mode:", "--checkpoint:", "--[no]verbose:"],
              "predict": ["--workdir:", "--checkpoint:", "--model:", "--input:", "--top_k:"],
              "visualize": ["--workdir:", "--input:", "--out:", "--dpi:"]}
  procs = {name: subprocess.Popen([sys.executable, "-m", f"vit_jax.{name}", "--help"], cwd=REPO,
                                  env=subprocess_env(1), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for name in expected}
  for name, proc in procs.items():
    out = proc.communicate(timeout=DEADLINE_S)[0]  # absl exits with 1 after --help
    assert "Traceback" not in out, out[-3000:]
    for flag in expected[name]:
      assert f"  {flag}" in out, (name, out[-3000:])


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-x", "-q"]))
