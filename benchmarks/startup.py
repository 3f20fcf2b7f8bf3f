"""Start-up time of commands that compute nothing, against ``python -c "import torch"`` (a benchmark, not a test).

Each command runs in a fresh process, once to warm the file cache and then ``--runs`` times (default 5);
the table shows the median wall-clock seconds and the ratio to importing torch, measured in the same run.
Reproduce from the repository root, with the project's environment active::

    python benchmarks/startup.py

To time another checkout (e.g. before a change), put it first on the path: ``git archive HEAD | tar -x -C
/tmp/before`` then ``PYTHONPATH=/tmp/before:/tmp/before/plugins python benchmarks/startup.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = "benchmarks_yaml/quickstart.yaml"


def repreval_command() -> list[str]:
    """The installed ``repreval`` script next to this interpreter, else ``python -m repreval``."""
    script = Path(sys.executable).with_name("repreval")
    if script.exists():
        return [str(script)]
    found = shutil.which("repreval")
    return [found] if found else [sys.executable, "-m", "repreval"]


def commands() -> list[tuple[str, list[str]]]:
    """The timed commands as (label, argv), the ``import torch`` baseline first."""
    repreval = repreval_command()
    return [
        ('python -c "import torch"', [sys.executable, "-c", "import torch"]),
        ("repreval --help", [*repreval, "--help"]),
        ("repreval list scores", [*repreval, "list", "scores"]),
        ("repreval plugins", [*repreval, "plugins"]),
        (f"repreval validate {SUITE}", [*repreval, "validate", SUITE]),
    ]


def seconds(argv: list[str], env: dict[str, str]) -> float:
    """Wall-clock seconds of one run of ``argv`` from the repository root; exits if the command fails."""
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed (exit {result.returncode}):\n{result.stderr}")
    return elapsed


def main() -> None:
    """Time every command (one warm-up, then the median of ``--runs``) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command (default 5; the median is shown)")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("REPREVAL_BLOCK_PLUGINS", None)

    medians: dict[str, float] = {}
    for label, argv in commands():
        seconds(argv, env)  # warm-up: file cache, .pyc files
        medians[label] = statistics.median(seconds(argv, env) for _ in range(args.runs))
        print(f"  {label}: {medians[label]:.2f} s", file=sys.stderr)

    baseline = medians['python -c "import torch"']
    width = max(map(len, medians))
    print(f"\nstart-up, median of {args.runs} runs ({os.cpu_count()} CPUs, Python {sys.version.split()[0]})\n")
    print(f"{'command':<{width}}  {'seconds':>7}  {'× import torch':>14}")
    print(f"{'-' * width}  {'-' * 7}  {'-' * 14}")
    for label, value in medians.items():
        print(f"{label:<{width}}  {value:7.2f}  {value / baseline:14.2f}")
    print("\nreproduce: python benchmarks/startup.py")


if __name__ == "__main__":
    main()
