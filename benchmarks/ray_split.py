"""One large model variant on a simulated Ray cluster (a benchmark, not a test): split over 2 nodes vs whole on 1.

The cluster is the one tests/cluster/two_nodes.sh builds: a head node and a second node in its own mount
namespace (an empty tmpfs over the driver's folder: it reads only Ray's object store), 1 CPU each, loopback
only. Three ways, in alternating rounds, each ``repreval run`` timed from the command to its exit:

* ``1 node``: the head alone, ``split: auto`` (one worker: the variant stays one task);
* ``1 node, N tasks``: the head alone, the variant forced into the N tasks the 2-node run chose (what splitting
  costs with nothing to spread over: per-task overhead = its extra time / (N - 1));
* ``2 nodes``: both nodes, ``split: auto`` (calibrated on the driver, then N tasks).

Every run's values are checked equal to the first's. Prints the medians, the ratio 1 node / 2 nodes (the
ideal is 2 on 2 cores), the per-task overhead and the command to reproduce. Needs root and ``unshare``; run
from the repository root with the project's environment (``pip install -e ".[ray]"``)::

    python benchmarks/ray_split.py            # --rounds R (default 2), --images N (default 24)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PORT = 6393
INSIDE = "REPREVAL_BENCH_INSIDE"  # set once the script runs in its own net/mount/pid namespaces


def suite(images: int, split: int | str) -> dict:
    """ResNet-18, random init, 64×64, ``images`` digits in batches of 4, three probe layers, gradients, noise
    score."""
    return {
        "name": "ray-split",
        "seed": 0,
        "datasets": {"digits": {"kind": "digits", "limit": images}},
        "models": {
            "resnet18": {
                "model": "timm:resnet18",
                "options": {"input_size": [3, 64, 64]},
                "layers": ["layer1", "layer2", "layer3"],
            }
        },
        "variants": ["random"],
        "evaluation": {"dataset": "digits", "saliency": ["gradients"], "scores": ["noise_score"], "batch_size": 4},
        "executor": {"kind": "ray", "cpus": 1, "split": split},
    }


def ray(*arguments: str, env: dict | None = None) -> None:
    """``ray ARGUMENTS`` (the CLI of this environment)."""
    subprocess.run([str(BIN / "ray"), *arguments], check=True, capture_output=True, env=env)


def alive_nodes() -> int:
    """Live nodes in the cluster at PORT (0 when it does not answer)."""
    probe = (
        f"import ray; ray.init(address='127.0.0.1:{PORT}', log_to_driver=False); "
        "print('alive:', sum(n['Alive'] for n in ray.nodes()))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    said = re.search(r"^alive: (\d+)$", done.stdout, re.MULTILINE)
    return int(said.group(1)) if said else 0


def wait_for(nodes: int) -> None:
    """Until the cluster has ``nodes`` live nodes (two minutes at most)."""
    for _ in range(120):
        if alive_nodes() == nodes:
            return
        time.sleep(1)
    raise SystemExit(f"the cluster did not reach {nodes} live nodes")


def start_second_node(hidden: Path, isolated: bool) -> subprocess.Popen:
    """The second node, in its own mount and pid namespaces, with an empty tmpfs over ``hidden`` (``isolated``;
    else a plain process that sees the driver's files)."""
    start = (
        f"'{BIN / 'ray'}' start --address 127.0.0.1:{PORT} --node-ip-address 127.0.0.1 --num-cpus 1 "
        "--temp-dir /tmp/ray-bench-node2 --disable-usage-stats --block"
    )
    script = f"mount -t tmpfs tmpfs '{hidden}' && exec {start}" if isolated else f"exec {start}"
    namespaces = ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"] if isolated else []
    command = [*namespaces, "bash", "-c", script]
    node = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for(2)
    return node


def stop_second_node(node: subprocess.Popen) -> None:
    """Kill the second node: its pid namespace (isolated), else its process group and any process of its own
    temporary folder (Ray's daemons)."""
    os.killpg(node.pid, signal.SIGKILL)
    node.wait()
    subprocess.run(["pkill", "-9", "-f", "ray-bench-node2"], check=False)
    wait_for(1)


def timed_run(path: Path, out: Path) -> tuple[float, str]:
    """Wall seconds of ``repreval run`` (joining the cluster) and what it printed."""
    command = [str(BIN / "repreval"), "run", str(path), "--executor", "ray", "--address", f"127.0.0.1:{PORT}"]
    started = time.perf_counter()
    done = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{path.name} failed: {done.stderr[-2000:]}")
    return seconds, done.stdout + done.stderr


def values(out: Path) -> dict[str, list[float]]:
    """Per unit: its per-input values."""
    return {
        data["unit_id"]: data["values"]
        for data in (json.loads(p.read_text()) for p in (out / "records").glob("*.json"))
        if data["status"] == "ok"
    }


def inside(rounds: int, images: int, isolated: bool = True) -> None:
    """The benchmark proper (in the namespaces): the cluster, the rounds, the figures."""
    if isolated:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    env = os.environ | {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}
    env |= {"RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "4"}
    os.environ.update(env)
    driver = Path(tempfile.mkdtemp(prefix="ray-split-"))
    os.environ["REPREVAL_CACHE"] = str(driver / "cache")
    (driver / "auto.yaml").write_text(yaml.safe_dump(suite(images, "auto")))
    ray("start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(PORT), "--num-cpus", "1",
        "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", "/tmp/ray-bench-head")  # fmt: skip
    times: dict[str, list[float]] = {"1 node": [], "1 node, N tasks": [], "2 nodes": []}
    reference: dict[str, list[float]] | None = None
    tasks = 0
    try:
        for round_ in range(rounds):
            order = list(times) if round_ % 2 == 0 else list(reversed(times))
            if tasks == 0:  # the 2-node run decides N: it goes first
                order = ["2 nodes", *[way for way in order if way != "2 nodes"]]
            for way in order:
                node = start_second_node(driver, isolated) if way == "2 nodes" else None
                path = driver / "auto.yaml"
                if way == "1 node, N tasks":
                    path = driver / "forced.yaml"
                    path.write_text(yaml.safe_dump(suite(images, tasks)))
                out = driver / f"{way.replace(' ', '-').replace(',', '')}-{round_}"
                seconds, said = timed_run(path, out)
                times[way].append(seconds)
                if way == "2 nodes":
                    chosen = re.search(r"^(\d+) tasks?(?: for 1 variant|, one per variant).*$", said, re.MULTILINE)
                    tasks = int(chosen.group(1)) if chosen else 1
                    print(f"  the split: {chosen.group(0) if chosen else 'not said'}", flush=True)
                    assert node is not None
                    stop_second_node(node)
                got = values(out)
                reference = reference or got
                if got.keys() != reference.keys() or any(
                    max(abs(a - b) for a, b in zip(got[k], reference[k], strict=True)) > 1e-6 for k in got
                ):
                    raise SystemExit(f"{way}, round {round_ + 1}: values differ from the first run's")
                print(f"round {round_ + 1}: {way:16s} {seconds:6.1f} s", flush=True)
    finally:
        ray("stop", "--force")
        shutil.rmtree(driver, ignore_errors=True)
    median = {way: statistics.median(seconds) for way, seconds in times.items()}
    print(f"\nResNet-18 random init, 64×64, {images} digits, 3 layers, gradients, noise score; 1 CPU per node")
    for way, seconds in times.items():
        shown = way.replace("N", str(tasks))
        print(f"{shown:18s} median {median[way]:6.1f} s   (rounds: {', '.join(f'{s:.1f}' for s in seconds)})")
    print(f"speed-up 2 nodes vs 1 node: {median['1 node'] / median['2 nodes']:.2f}× (ideal 2 on 2 cores)")
    if tasks > 1:
        overhead = (median["1 node, N tasks"] - median["1 node"]) / (tasks - 1)
        print(f"per-task overhead (1 node, {tasks} tasks vs 1): {overhead:.1f} s per extra task")
    print("values: equal in every run")
    flag = "" if isolated else " --no-namespaces"
    print(f"reproduce: sudo python benchmarks/ray_split.py --rounds {rounds} --images {images}{flag}")


def main() -> None:
    """Re-run inside net, mount and pid namespaces of its own (loopback only), then benchmark there."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument(
        "--no-namespaces", action="store_true", help="where unshare is refused: nodes share this machine's files"
    )
    args = parser.parse_args()
    if os.environ.get(INSIDE) or args.no_namespaces:
        inside(args.rounds, args.images, isolated=not args.no_namespaces)
        return
    if os.geteuid() != 0 or not shutil.which("unshare"):
        raise SystemExit("needs root and unshare (a simulated cluster in its own namespaces)")
    command = ["unshare", "--net", "--mount", "--pid", "--fork", "--mount-proc", sys.executable, __file__]
    command += ["--rounds", str(args.rounds), "--images", str(args.images)]
    raise SystemExit(subprocess.run(command, env=os.environ | {INSIDE: "1"}).returncode)


if __name__ == "__main__":
    main()
