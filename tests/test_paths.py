"""vit_jax/paths.py: one API for local and gs:// workdirs (only local paths are reachable here)."""

import os

from vit_jax import paths


def test_bucket_urls_are_kept_as_they_are(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert paths.absolute("gs://bucket/runs/a") == "gs://bucket/runs/a"  # not /cwd/gs:/...
  assert paths.join("gs://bucket/runs/a", "checkpoints") == "gs://bucket/runs/a/checkpoints"
  assert paths.is_remote("gs://b/x") and not paths.is_remote("runs/gs://x")
  assert paths.absolute("runs/a") == os.path.join(str(tmp_path), "runs", "a")


def test_local_files_through_the_layer(tmp_path):
  run = tmp_path / "run"
  paths.makedirs(run / "sub")
  assert paths.is_dir(run) and paths.listdir(run) == ["sub"]
  target = paths.join(run, "results.json")
  paths.write_text_atomic(target, "{}")
  paths.write_text_atomic(target, '{"top1": 1}')
  assert paths.read_text(target) == '{"top1": 1}'
  assert sorted(os.listdir(run)) == ["results.json", "sub"]  # no .tmp left behind
  with paths.open_append(paths.join(run, "metrics.jsonl")) as f:
    f.write("a\n")
  with paths.open_append(paths.join(run, "metrics.jsonl")) as f:
    f.write("b\n")
  assert (run / "metrics.jsonl").read_text() == "a\nb\n"
