"""Command line: top-k classes of images or videos with a trained model.

  python -m vit_jax.predict --workdir workdirs/vit_digits --input a.png b.png more/
  python -m vit_jax.predict --checkpoint ViT-B_16.npz --model ViT-B_16 --input cat.jpg

With --workdir the model, its weights and the evaluation preprocessing come from
the run (config.json and the latest checkpoint), so a file is scored exactly as
the evaluator scores a dataset example. Folders are searched recursively for
image and video files. Output: one block per file,

  a.png
    0.9731  7
    0.0102  1
    ...

or with --json one JSON object per line: {"path", "top_k": [[class, prob], ...]}.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's directory.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A checkpoint file (instead of --workdir).")
_MODEL = flags.DEFINE_string("model", None, "Registered model name, with --checkpoint.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", None, "With --checkpoint: input size "
                                   "(default: from the position embeddings).")
_INPUT = flags.DEFINE_multi_string("input", None, "Image/video files or folders (repeatable; "
                                   "several paths may follow one --input).")
_TOP_K = flags.DEFINE_integer("top_k", 5, "Classes printed per input.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Inputs per forward pass.")
_JSON = flags.DEFINE_bool("json", False, "One JSON object per input instead of text.")


def load_model(workdir: str | None, checkpoint_path: str | None, model_name: str | None,
               image_size: int | None = None):
  """The TrainedModel of --workdir, or of --checkpoint with --model."""
  from vit_jax import inference  # noqa: PLC0415 (after the TF log level is set)

  if bool(workdir) == bool(checkpoint_path):
    raise app.UsageError("Pass exactly one of --workdir DIR or --checkpoint FILE --model NAME.")
  if workdir:
    return inference.load_run(workdir)
  if not model_name:
    raise app.UsageError("--checkpoint needs --model NAME (e.g. ViT-B_16): a checkpoint "
                         "file does not record its architecture.")
  return inference.load_checkpoint(checkpoint_path, model_name, image_size=image_size)


def top_k(probabilities: np.ndarray, class_names: Sequence[str],
          k: int) -> list[list[tuple[str, float]]]:
  """[N, C] probabilities -> per input, the k most probable (class name, probability)."""
  k = min(k, probabilities.shape[-1])
  order = np.argsort(-probabilities, axis=-1, kind="stable")[:, :k]
  return [[(class_names[j], float(p[j])) for j in row] for p, row in zip(probabilities, order)]


def predict(trained, paths: Sequence[str], k: int = 5,
            batch_size: int = 64) -> list[tuple[str, list[tuple[str, float]]]]:
  """(file, top-k) for every file found in `paths`."""
  from vit_jax import inference  # noqa: PLC0415

  files, raw = inference.read_inputs(paths)
  probabilities = trained.probabilities(trained.preprocess(raw), batch_size)
  return list(zip(files, top_k(probabilities, trained.class_names, k)))


def main(argv):
  inputs = list(_INPUT.value or []) + list(argv[1:])  # `--input a.png b.png` leaves b.png in argv
  if not inputs:
    raise app.UsageError("Pass --input PATH [PATH ...].")
  trained = load_model(_WORKDIR.value, _CHECKPOINT.value, _MODEL.value, _IMAGE_SIZE.value)
  for path, best in predict(trained, inputs, _TOP_K.value, _BATCH.value):
    if _JSON.value:
      print(json.dumps({"path": path, "top_k": best}))
    else:
      print(path)
      for name, p in best:
        print(f"  {p:.4f}  {name}")
  sys.stdout.flush()


if __name__ == "__main__":
  app.run(main)
