"""`hf-hub:ORG/NAME[@REVISION]`: a Hugging Face Hub model, through the local Hub cache.

    hub.resolve("hf-hub:timm/vit_base_patch16_224.augreg2_in21k_ft_in1k")
    # -> ~/.cache/huggingface/hub/models--timm--vit_base.../snapshots/<commit>/

The folder is huggingface_hub's own cache (HF_HUB_CACHE, HF_HOME), so files that
`huggingface_hub`, timm or transformers downloaded before are found and nothing is copied.
Only safetensors weights and JSON configs are fetched (`ALLOW_PATTERNS`): a PyTorch pickle
(`pytorch_model.bin`) is never downloaded, let alone unpickled.

Offline (HF_HUB_OFFLINE=1, or no route to the Hub, as on machines that reach only a
package index) a repository that is in the cache is used as it is, and one that is not
fails at once with an error naming the repository, the cache folder and the command that
fills it on a connected machine.
"""

from __future__ import annotations

import os

from vit_jax.errors import MissingFileError

PREFIX = "hf-hub:"
ALLOW_PATTERNS = ["*.safetensors", "*.json"]
# Seconds to wait for the Hub before calling it unreachable (huggingface_hub's default: 10).
ETAG_TIMEOUT_S = 10.0


class HubError(MissingFileError):
  """A hf-hub: id that could not be resolved to files on this machine."""


def is_hub_id(path: str | os.PathLike) -> bool:
  return str(path).startswith(PREFIX)


def parse(spec: str) -> tuple[str, str | None]:
  """'hf-hub:org/name@rev' -> ('org/name', 'rev'); the revision is optional."""
  repo = spec[len(PREFIX):] if is_hub_id(spec) else spec
  repo, _, revision = repo.partition("@")
  if repo.count("/") != 1 or not all(repo.split("/")):
    raise HubError(f"{spec!r}: expected {PREFIX}ORG/NAME or {PREFIX}ORG/NAME@REVISION, e.g. "
                   f"{PREFIX}timm/vit_base_patch16_224.augreg2_in21k_ft_in1k.")
  return repo, revision or None


def cache_dir() -> str:
  """huggingface_hub's cache folder, by its rules, read now (its constants are read at import)."""
  env = os.environ
  folder = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
  if not folder:
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME", "~/.cache"),
                                              "huggingface")
    folder = os.path.join(home, "hub")
  return os.path.expanduser(folder)


def offline() -> bool:
  return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve(spec: str) -> str:
  """The local snapshot folder of a hf-hub: id (downloaded first when online and missing)."""
  import huggingface_hub  # noqa: PLC0415 (only Hub users pay for the import)
  from huggingface_hub import errors  # noqa: PLC0415

  repo, revision = parse(spec)
  kwargs = dict(revision=revision, allow_patterns=ALLOW_PATTERNS, cache_dir=cache_dir())
  try:
    return huggingface_hub.snapshot_download(repo, local_files_only=True, **kwargs)
  except errors.LocalEntryNotFoundError:
    pass  # not cached (or not this revision): try the Hub
  fill = (f"on a machine with access, run `hf download {repo} --include '*.safetensors' "
          f"'*.json'` (HF_HUB_CACHE={cache_dir()}) and copy that folder here")
  if offline():
    raise HubError(f"{spec}: not in the Hugging Face cache {cache_dir()} and HF_HUB_OFFLINE "
                   f"is set: {fill}.")
  try:
    return huggingface_hub.snapshot_download(repo, etag_timeout=ETAG_TIMEOUT_S, **kwargs)
  except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError,
          errors.GatedRepoError) as e:
    raise HubError(f"{spec}: the Hub refused it ({type(e).__name__}): check the name and "
                   "revision, and for a gated model log in (`hf auth login`).") from e
  except Exception as e:  # no route, DNS failure, timeout: huggingface_hub wraps them variously
    raise HubError(f"{spec}: not in the Hugging Face cache {cache_dir()}, and the Hub cannot "
                   f"be reached ({type(e).__name__}): {fill}.") from e


def weights_file(folder: str) -> str:
  """The safetensors weights of a model folder (timm and transformers: model.safetensors)."""
  path = os.path.join(folder, "model.safetensors")
  if os.path.exists(path):
    return path
  found = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
  if len(found) == 1:
    return os.path.join(folder, found[0])
  if found:
    raise HubError(f"{folder}: several safetensors files {found} and no model.safetensors "
                   "(sharded weights are not supported): pass one file.")
  raise HubError(f"{folder}: no safetensors weights (only {sorted(os.listdir(folder))}). "
                 "PyTorch pickles are never loaded: convert with `python -c \"import torch, "
                 "safetensors.torch as st; st.save_file(torch.load('pytorch_model.bin', "
                 "weights_only=True), 'model.safetensors')\"` where you trust the file.")
