"""The command line that `predict` and `visualize` share: which model, which inputs.

    python -m vit_jax.predict   --workdir RUN | --checkpoint PATH [--model NAME]  --input PATH...
    python -m vit_jax.visualize (the same) --out DIR

The flags are defined only when one of the commands runs (both use the same names).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from absl import app, flags, logging

from vit_jax import compilation_cache, errors


def list_in_help(*modules: str) -> None:
  """Makes `--help` list the flags that `modules` define.

  absl's `--help` lists only the flags of the program's main module (sys.argv[0]), here
  the thin `vit_jax/<command>.py`, so it printed none of ours, just "Try --helpfull".
  """
  main = sys.argv[0]
  for module in modules:
    for flag in flags.FLAGS.flags_by_module_dict().get(module, []):
      flags.FLAGS.register_flag_by_module(main, flag)
      flags.FLAGS.register_key_flag_for_module(main, flag)


def define_flags(image_size_help: str) -> None:
  flags.DEFINE_string("workdir", None, "A training run's directory.")
  flags.DEFINE_string("checkpoint", None, "A checkpoint file or folder, or hf-hub:ORG/NAME "
                      "(instead of --workdir); it gives its model and preprocessing.")
  flags.DEFINE_string("model", None, "With --checkpoint: read the file as this registered "
                      "model (for files that do not say their model).")
  flags.DEFINE_integer("image_size", None, image_size_help)
  flags.DEFINE_enum("resolution", None, ["native", "square"], "Image models: 'native' runs "
                    "each image at its own aspect ratio under a patch budget (the model needs "
                    "posemb_resize); 'square' resizes to the input size. Default: as the run "
                    "or checkpoint says.")
  flags.DEFINE_integer("max_num_patches", None, "With --resolution native: the patch budget "
                       "(default: a native run's, else the patches of the input size).")
  flags.DEFINE_multi_string("input", None, "Image/video files or folders (repeatable; several "
                            "paths may follow one --input).")
  flags.DEFINE_bool("verbose", False, "Show the traceback of errors vit_jax reports on purpose.")
  flags.DEFINE_string("compilation_cache", compilation_cache.DEFAULT_DIR, compilation_cache.HELP)
  list_in_help(__name__)


def run_on_inputs(program: str, argv: list[str],
                  fn: Callable[[Any, list[str], list[tuple[str, str]]], Any]
                  ) -> tuple[Any, list[tuple[str, str]]]:
  """Loads the model the flags name and returns (fn(trained, inputs, failed), failed).

  `failed` collects the inputs that do not decode (reported by `finish`); errors
  vit_jax raises on purpose exit with one message (errors.reported).
  """
  from vit_jax.tools import inference  # noqa: PLC0415 (after the TF log level is set)

  f = flags.FLAGS
  logging.set_verbosity(logging.WARNING)  # Orbax's restore chatter would bury the output
  inputs = list(f.input or []) + list(argv[1:])  # `--input a.png b.png` leaves b.png in argv
  if not inputs:
    raise app.UsageError("Pass --input PATH [PATH ...].")
  failed: list[tuple[str, str]] = []
  compilation_cache.use(f.compilation_cache)
  with errors.reported(program, f.verbose):
    trained = inference.with_resolution(
        inference.load(f.workdir, f.checkpoint, f.model, f.image_size), f.resolution,
        f.max_num_patches)
    return fn(trained, inputs, failed), failed


def run(define: Callable[[], None], main: Callable[[list[str]], Any]) -> None:
  """Defines a command's flags, then runs its `main` under absl."""
  define()
  app.run(main)


def finish(program: str, failed: list[tuple[str, str]]) -> None:
  """After the output: one stderr line per skipped input, and exit 1 if there was any."""
  sys.stdout.flush()
  for path, reason in failed:
    sys.stderr.write(f"{program}: skipped {path}: it does not decode ({reason})\n")
  if failed:
    sys.stderr.write(f"{program}: {len(failed)} input(s) skipped.\n")
    sys.exit(1)
