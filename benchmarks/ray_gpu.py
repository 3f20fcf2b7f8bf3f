"""Ray tasks on a GPU (a benchmark and a check; needs a CUDA GPU and Ray): one suite computed on ``cuda`` by the
local executor, by Ray with one task per variant holding the GPU, and by Ray split into tasks sharing it
(``gpus: 0.25``). Each in a fresh process, timed from the command to its exit; every record must say it ran
on the GPU, and the values of every way are compared with the local run's (GPU reductions need not be
bit-identical between processes: the largest relative difference is printed). Reproduce::

    python benchmarks/ray_gpu.py            # --images N (default 256)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent


def suite(images: int, executor: dict | str, device: str = "cuda") -> dict:
    """ResNet-18, random init, 64×64, ``images`` digits in batches of 32, two probe layers, gradients and
    activations×gradients, noise and variance scores, on cuda."""
    return {
        "name": "ray-gpu",
        "seed": 0,
        "device": device,
        "datasets": {"digits": {"kind": "digits", "limit": images}},
        "models": {
            "resnet18": {
                "model": "timm:resnet18",
                "options": {"input_size": [3, 64, 64]},
                "layers": ["layer2", "layer3"],
            }
        },
        "variants": ["random"],
        "evaluation": {
            "dataset": "digits",
            "saliency": ["gradients", "activations_x_gradients"],
            "scores": ["noise_score", "variance_score"],
            "batch_size": 32,
        },
        "executor": executor,
    }


def timed(folder: Path, spec: dict) -> tuple[float, str]:
    """Wall seconds of ``repreval run`` on ``spec`` in a fresh process, and what it printed."""
    folder.mkdir(parents=True)
    (folder / "suite.yaml").write_text(yaml.safe_dump(spec))
    command = [str(BIN / "repreval"), "run", str(folder / "suite.yaml"), "--out", str(folder / "out")]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{folder.name}: exit {done.returncode}: {(done.stdout + done.stderr)[-3000:]}")
    return seconds, done.stdout


def records(folder: Path) -> dict[str, dict]:
    """Per unit: its record."""
    return {
        data["unit_id"]: data
        for data in (json.loads(p.read_text()) for p in (folder / "out" / "records").glob("*.json"))
    }


def main() -> None:
    """Run the three ways and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the script where there is no GPU")
    args = parser.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    ways = {
        "local": "local",
        "ray, 1 task": {"kind": "ray", "gpus": 1, "split": 1},
        "ray, 4 tasks sharing the GPU": {"kind": "ray", "gpus": 0.25, "split": 4},
    }
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["REPREVAL_CACHE"] = str(Path(scratch) / "cache")
        times, found = {}, {}
        for index, (way, executor) in enumerate(ways.items()):
            if args.device == "cpu" and executor != "local":
                executor = {**executor, "gpus": 0}
            times[way], said = timed(Path(scratch) / f"way{index}", suite(args.images, executor, args.device))
            found[way] = records(Path(scratch) / f"way{index}")
            print(f"{way:30s} {times[way]:6.1f} s", flush=True)
            for line in said.splitlines():
                if "tasks for" in line or "one per variant" in line:
                    print(f"  {line.strip()}")
    reference = found["local"]
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    print(f"\n{name}; ResNet-18 random init, 64×64, {args.images} digits, 2 layers")
    for way, got in found.items():
        assert got.keys() == reference.keys(), way
        assert all(r["status"] == "ok" for r in got.values()), way
        devices = sorted({r["device"] for r in got.values()})
        assert all(device.startswith(args.device) for device in devices), (way, devices)
        worst = max(
            abs(a - b) / max(abs(b), 1e-12)
            for unit, record in got.items()
            for a, b in zip(record["values"], reference[unit]["values"], strict=True)
        )
        print(f"{way:30s} {times[way]:6.1f} s  ratio to local {times[way] / times['local']:.2f}  devices {devices}  "
              f"largest relative difference to local {worst:.1e}")  # fmt: skip
    print("reproduce: python benchmarks/ray_gpu.py" + (f" --images {args.images}" if args.images != 256 else ""))


if __name__ == "__main__":
    main()
