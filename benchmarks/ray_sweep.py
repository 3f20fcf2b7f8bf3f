"""A sweep of small timm backbones (random init, small inputs) run with the local executor and with Ray on this
machine, each in a fresh process, same run (a benchmark, not a test).

Prints both wall times, their ratio, the per-group times Ray measured (a group: one model variant) and what
they imply for a larger sweep. Reproduce from the repository root, with the project's environment active::

    python benchmarks/ray_sweep.py            # 8 backbones; --models N for fewer, --workers W for Ray's CPUs
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BACKBONES = (
    "resnet10t", "resnet14t", "resnet18", "mobilenetv3_small_050",
    "mobilenetv3_small_100", "lcnet_050", "regnetx_002", "tinynet_e",
)  # fmt: skip


def sweep(models: int, workers: int) -> dict:
    """The suite: each backbone randomly initialised at 64×64, 16 digits, gradients, noise score."""
    return {
        "name": "timm-sweep",
        "seed": 0,
        "datasets": {"digits": {"kind": "digits", "limit": 16}},
        "models": {
            name: {"model": f"timm:{name}", "options": {"input_size": [3, 64, 64]}} for name in BACKBONES[:models]
        },
        "variants": ["random"],
        "evaluation": {"dataset": "digits", "saliency": ["gradients"], "scores": ["noise_score"]},
        "executor": {"kind": "ray", "cpus": 1} if workers else "local",
    }


def run(suite: dict, folder: Path, threads: int) -> float:
    """Wall-clock seconds of ``repreval run`` on ``suite`` in a fresh process."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    command = [sys.executable, "-m", "repreval", "run", str(path), "--out", str(folder / "out")]
    command += ["--threads", str(threads)]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=folder, env=_env())
    return time.perf_counter() - started


def _env() -> dict:
    import os

    return os.environ | {"HF_HUB_OFFLINE": "1"}


def group_seconds(folder: Path) -> dict[str, float]:
    """Per model variant: its records' time (shared by a group's units) summed over its probe layers' families."""
    times: dict[str, float] = {}
    for record in (folder / "out" / "records").glob("*.json"):
        data = json.loads(record.read_text())
        times[data["model"]] = max(times.get(data["model"], 0.0), data["seconds"])
    return times


def main() -> None:
    """Time the sweep with both executors and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=len(BACKBONES))
    parser.add_argument("--workers", type=int, default=2, help="Ray CPUs (one task per CPU)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        local = run(sweep(args.models, 0), Path(scratch) / "local", threads=args.workers)
        distributed = run(sweep(args.models, args.workers), Path(scratch) / "ray", threads=1)
        per_group = group_seconds(Path(scratch) / "ray")
    print(f"{args.models} backbones, random init, 64×64, 16 digits (gradients, noise score)")
    print(f"local executor ({args.workers} threads): {local:6.1f} s")
    print(f"ray executor ({args.workers} workers):  {distributed:6.1f} s   ratio ray/local = {distributed / local:.2f}")
    for name, seconds in sorted(per_group.items()):
        print(f"  {name:24s} {seconds:6.1f} s of maps and scores")
    mean = sum(per_group.values()) / max(len(per_group), 1)
    print(f"mean per group {mean:.1f} s: a 500-model sweep ≈ {500 * mean / 3600:.2f} h of worker time, "
          f"≈ {500 * mean / 60 / 64:.1f} min on 64 workers (plus start-up and model building per task)")  # fmt: skip
    print("reproduce: python benchmarks/ray_sweep.py" + (f" --models {args.models}" if args.models != 8 else ""))


if __name__ == "__main__":
    main()
