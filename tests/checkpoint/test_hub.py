"""hf-hub: ids through a Hugging Face cache folder laid out as huggingface_hub lays it out.

    HF_HUB_CACHE/models--ORG--NAME/refs/main            the commit hash of "main"
    HF_HUB_CACHE/models--ORG--NAME/snapshots/<hash>/     the files (links into blobs/)
    HF_HUB_CACHE/models--ORG--NAME/blobs/<etag>          their contents

No test reaches the Hub: HF_ENDPOINT points at a closed local port.
"""

import json
import os
import time

import _ckpt_helpers as H
import numpy as np
import pytest
import safetensors.numpy

from vit_jax import checkpoint
from vit_jax.checkpoint import hub

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
  cache = tmp_path / "hf_cache"
  monkeypatch.setenv("HF_HUB_CACHE", str(cache))
  monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
  monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
  return cache


def cache_repo(cache, repo, files: dict[str, bytes], commit=COMMIT, ref="main"):
  """Puts `files` in the cache as snapshot `commit` of `repo`, `ref` pointing at it."""
  root = cache / ("models--" + repo.replace("/", "--"))
  (root / "refs").mkdir(parents=True, exist_ok=True)
  (root / "refs" / ref).write_text(commit)
  snapshot = root / "snapshots" / commit
  snapshot.mkdir(parents=True, exist_ok=True)
  for i, (name, data) in enumerate(files.items()):
    blob = root / "blobs" / f"{commit[:8]}{i:032x}"
    blob.parent.mkdir(exist_ok=True)
    blob.write_bytes(data)
    os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
  return snapshot


def timm_file(tmp_path):
  sd = H.timm_state_dict(width=32, depth=1, mlp=64, classes=5, patch=4, grid=(4, 3))
  path = tmp_path / "model.safetensors"
  safetensors.numpy.save_file(sd, str(path))
  return path


def test_cached_repo_loads_like_its_file(tmp_path, hub_cache):
  path = timm_file(tmp_path)
  snapshot = cache_repo(hub_cache, "timm/vit_test", {
      "model.safetensors": path.read_bytes(), "config.json": json.dumps({
          "architecture": "vit_base_patch16_224",
          "model_args": {"embed_dim": 32, "depth": 1, "patch_size": 4, "num_heads": 2}}).encode()})
  assert hub.resolve("hf-hub:timm/vit_test") == str(snapshot)
  params, fmt = checkpoint.load_with_format("hf-hub:timm/vit_test")
  direct = checkpoint.load(str(path))
  assert fmt == "timm"
  np.testing.assert_array_equal(params["embedding"]["kernel"], direct["embedding"]["kernel"])


def test_a_revision_selects_its_snapshot(tmp_path, hub_cache):
  path = timm_file(tmp_path)
  other = "f" * 40
  cache_repo(hub_cache, "timm/vit_test", {"model.safetensors": path.read_bytes()})
  snapshot = cache_repo(hub_cache, "timm/vit_test", {"model.safetensors": path.read_bytes()},
                        commit=other, ref="v2")
  assert hub.resolve("hf-hub:timm/vit_test@v2") == str(snapshot)
  assert hub.resolve(f"hf-hub:timm/vit_test@{other}") == str(snapshot)


def test_missing_repo_fails_fast_naming_repo_and_cache(hub_cache, monkeypatch):
  start = time.time()
  with pytest.raises(hub.HubError, match=r"hf-hub:facebook/dinov2-small: not in the Hugging "
                     r"Face cache .*hf_cache, and the Hub cannot be reached.*hf download "
                     r"facebook/dinov2-small"):
    checkpoint.load("hf-hub:facebook/dinov2-small")
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  with pytest.raises(hub.HubError, match=r"HF_HUB_OFFLINE is set"):
    hub.resolve("hf-hub:facebook/dinov2-small")
  assert time.time() - start < 30


def test_a_pickle_only_repo_is_refused_with_the_conversion(hub_cache):
  snapshot = cache_repo(hub_cache, "someone/old_vit", {"pytorch_model.bin": b"PK\x03\x04"})
  with pytest.raises(hub.HubError, match=r"no safetensors weights.*pytorch_model\.bin.*"
                     r"never loaded.*st\.save_file"):
    hub.weights_file(str(snapshot))


def test_malformed_ids_say_the_form():
  for bad in ("hf-hub:vit_base", "hf-hub:a/b/c", "hf-hub:/x"):
    with pytest.raises(hub.HubError, match=r"expected hf-hub:ORG/NAME"):
      hub.parse(bad)
  assert hub.parse("hf-hub:timm/a.b@main") == ("timm/a.b", "main")
