"""Commands that compute nothing (``--help``, ``list``, ``plugins``) import no heavy library: loading the CLI
and every plugin must not import torch, timm, torchvision, matplotlib, scipy or scikit-learn.

Checked in a fresh interpreter, since this test process has imported them all long ago. No timings here
(``python benchmarks/startup.py`` measures them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

HEAVY = ("torch", "timm", "torchvision", "matplotlib", "scipy", "sklearn")

SCRIPT = f"""
import contextlib, io, json, sys

import repreval.cli
from repreval.plugins import load_plugins

plugins = load_plugins()
with contextlib.redirect_stdout(io.StringIO()):
    codes = [repreval.cli.main(["list", "scores"]), repreval.cli.main(["plugins"])]
    for command in [None, *repreval.cli.COMMANDS]:
        try:
            repreval.cli.main([command, "--help"] if command else ["--help"])
        except SystemExit as exc:
            codes.append(exc.code)
print(json.dumps({{
    "codes": codes,
    "plugins": sorted(plugins.info),
    "scores": plugins.score.names(),
    "heavy": [name for name in {HEAVY!r} if name in sys.modules],
}}))
"""


def test_list_plugins_and_help_import_no_heavy_library():
    env = {key: value for key, value in os.environ.items() if key != "REPREVAL_BLOCK_PLUGINS"}
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(found["codes"]) == {0}, found["codes"]
    # Every built-in plugin was loaded (so the check below is not vacuous) ...
    builtins = {
        "aggregators",
        "autoencoders",
        "cifar_resnets",
        "datasets",
        "saliency",
        "scores",
        "timm",
        "torch_factory",
        "variants",
    }
    assert builtins <= set(found["plugins"]), found["plugins"]
    assert {"noise_score", "variance_score", "linear_probe"} <= set(found["scores"])
    # ... and none of them, nor the CLI, imported a heavy library.
    assert found["heavy"] == [], (
        f"imported while listing: {found['heavy']} (import them inside the methods that need them)"
    )
