"""The console scripts of pyproject.toml are installed and reach the `python -m` commands.

`make install` installs the project (editable), which writes `vit-jax-train`,
`vit-jax-predict`, `vit-jax-visualize`, `vit-jax-convert` and `vit-jax-evaluate` beside the venv's python.
Each must name the function its `python -m vit_jax.<command>` wrapper runs, so the two
spellings cannot drift apart.
"""

import importlib.metadata
import os
import subprocess
import sys
import tomllib

from tests.helpers import REPO

WRAPPERS = {"vit-jax-train": "main", "vit-jax-predict": "predict",
            "vit-jax-visualize": "visualize", "vit-jax-convert": "convert",
            "vit-jax-evaluate": "evaluate"}


def _declared() -> dict[str, str]:
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)["project"]["scripts"]


def test_every_command_has_a_script_that_the_python_m_wrapper_also_runs():
  declared = _declared()
  assert set(declared) == set(WRAPPERS)
  installed = {ep.name: ep for ep in importlib.metadata.entry_points(group="console_scripts")}
  for name, target in declared.items():
    assert name in installed, f"{name} is not installed: run `make install` (pip install -e .)"
    assert installed[name].value == target
    module, func = target.split(":")
    wrapper = open(os.path.join(REPO, "vit_jax", WRAPPERS[name] + ".py")).read()
    # The wrapper imports the same module and calls the same function.
    assert module.rsplit(".", 1)[1] in wrapper and f".{func}()" in wrapper, (name, wrapper)
    assert callable(installed[name].load())


def test_convert_script_runs():
  script = os.path.join(os.path.dirname(sys.executable), "vit-jax-convert")
  out = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  assert "--format" in out.stdout
