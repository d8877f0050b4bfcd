"""Command line: top-k classes of images or videos with a trained model.

  python -m vit_jax.predict --workdir workdirs/vit_digits --input a.png b.png more/
  python -m vit_jax.predict --checkpoint ViT-B_16.npz --model ViT-B_16 --input cat.jpg
  python -m vit_jax.predict --checkpoint hf-hub:timm/deit_small_patch16_224.fb_in1k --input cat.jpg

With --workdir the model, its weights and the evaluation preprocessing come from
the run (config.json and the latest checkpoint), so a file is scored exactly as
the evaluator scores a dataset example. --checkpoint alone reads the model and its
preprocessing from the file or folder (`checkpoint.load_pretrained`); --model NAME reads
a file that does not say its model (this project's .npz of a later family) as that model. Folders are searched recursively for
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
from collections.abc import Sequence  # noqa: E402
from typing import Optional  # noqa: E402

from absl import flags  # noqa: E402

from vit_jax import errors  # noqa: E402
from vit_jax.tools import cli  # noqa: E402

PROGRAM = "vit_jax.predict"


def predict(trained, paths: Sequence[str], k: int = 5, batch_size: int = 64,
            failed: Optional[list[tuple[str, str]]] = None
            ) -> list[tuple[str, list[tuple[str, float]]]]:
  """(file, top-k (class name, probability)) for every file found in `paths`.

  Files that do not decode raise, or with a `failed` list are skipped and listed there.
  """
  from vit_jax.tools import inference  # noqa: PLC0415 (after the TF log level is set)

  if not trained.class_names:
    raise errors.CheckpointError(
        f"{trained.source or 'the model'} has no classification head (its output is a "
        "feature vector, not class scores), so there is nothing to predict: fine-tune it "
        "(model_name='from_checkpoint'), evaluate its features (vit-jax-evaluate), or draw "
        "its attention (vit-jax-visualize).")
  files, raw = inference.read_inputs(paths, failed)
  if not files:
    return []
  probabilities = trained.probabilities(trained.preprocess(raw), batch_size)
  return list(zip(files, inference.top_k(probabilities, trained.class_names, k)))


def _define_flags() -> None:
  cli.define_flags("With --checkpoint: input size (default: from the position embeddings).")
  flags.DEFINE_integer("top_k", 5, "Classes printed per input.")
  flags.DEFINE_integer("batch_size", 64, "Inputs per forward pass.")
  flags.DEFINE_bool("json", False, "One JSON object per input instead of text.")
  cli.list_in_help(__name__)


def main(argv):
  f = flags.FLAGS
  results, failed = cli.run_on_inputs(PROGRAM, argv, lambda trained, inputs, failed: predict(
      trained, inputs, f.top_k, f.batch_size, failed))
  for path, best in results:
    if f.json:
      print(json.dumps({"path": path, "top_k": best}))
    else:
      print(path)
      for name, p in best:
        print(f"  {p:.4f}  {name}")
  cli.finish(PROGRAM, failed)


def run() -> None:
  """`python -m vit_jax.predict` (vit_jax/predict.py) lands here."""
  cli.run(_define_flags, main)


if __name__ == "__main__":
  run()
