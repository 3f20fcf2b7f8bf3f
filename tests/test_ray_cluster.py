"""Ray on a simulated two-node cluster (tests/cluster/two_nodes.sh): a head node, and a second node in its own
mount namespace with empty tmpfs mounts over the driver's data, cache and results, so that tasks scheduled
there can read nothing of the driver's. A suite with a model trained here and a model whose weights come from a
file gives the records of a local run, tasks run on both nodes, and the run survives the second node being
killed while one of its tasks runs. Needs root, `unshare` and Ray; skipped otherwise."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from repreval.store import ResultStore

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
SCRIPT = Path(__file__).parent / "cluster" / "two_nodes.sh"
BIN = Path(sys.executable).parent


def _can_unshare() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--net", "--mount", "--pid", "--fork", "true"], capture_output=True)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare (net, mount, pid namespaces)")


@pytest.fixture
def driver(tmp_path_factory):
    """A driver folder outside the repository: an image folder of digits, a weights file, a suite."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("driver")
    digits = load_digits()
    for i in range(48):
        folder = root / "data" / "images" / f"class{digits.target[i] % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (digits.images[i] * 255 / 16).astype(np.uint8)
        Image.fromarray(pixels).resize((16, 16)).save(folder / f"{i:03d}.png")
    from repreval.plugins import load_plugins

    source = load_plugins().model_source.create("cnn")
    torch.manual_seed(7)
    network = source.build("small", {"size": 16, "channels": 1}, 7)
    torch.save(network.module.state_dict(), root / "data" / "cnn.pt")
    images = str(root / "data" / "images")
    suite = {
        "name": "cluster",
        "seed": 0,
        "datasets": {
            "train": {"kind": "image_folder", "options": {"path": images, "grayscale": True}, "limit": 40},
            "held": {"kind": "image_folder", "options": {"path": images, "grayscale": True}, "skip": 40},
        },
        "models": {
            "trained_here": {
                "model": "cnn:small",
                "options": {"size": 16, "channels": 1},
                "train": {"dataset": "train", "epochs": 1},
                "layers": ["block2"],
            },
            "from_file": {
                "model": "cnn:small",
                "options": {"size": 16, "channels": 1},
                "weights": str(root / "data" / "cnn.pt"),
                "layers": ["block3"],
            },
        },
        "variants": ["trained", "random"],
        "evaluation": {"dataset": "held", "saliency": ["gradients"], "scores": ["noise_score", "variance_score"]},
    }
    (root / "suite.yaml").write_text(yaml.safe_dump(suite))
    # one model variant split into 4 tasks (2 input shards × 2 layer groups) spread over both nodes
    split = {
        **suite,
        "name": "split",
        "models": {"from_file": {**suite["models"]["from_file"], "layers": ["block2", "block3"]}},
        "variants": ["trained"],
        "evaluation": {**suite["evaluation"], "batch_size": 4},
        "executor": {"kind": "ray", "split": 4},
    }
    (root / "split.yaml").write_text(yaml.safe_dump(split))
    return root


def _environment(root: Path) -> dict[str, str]:
    return {**os.environ, "REPREVAL_CACHE": str(root / "cache"), "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}


def _values(folder: Path) -> dict[str, list[float]]:
    return {record.unit_id: record.values for record in ResultStore(folder).records() if record.status == "ok"}


def _run_locally(driver: Path, suite: str, out: str) -> dict[str, list[float]]:
    command = [str(BIN / "repreval"), "run", str(driver / suite), "--executor", "local", "--out", str(driver / out)]
    subprocess.run(command, check=True, capture_output=True, env=_environment(driver), timeout=600)
    return _values(driver / out)


def test_a_cluster_whose_second_node_cannot_see_the_drivers_files(driver, tmp_path):
    """Records equal to a local run's, tasks on both nodes, Ctrl-C keeping what was written (and the same command
    finishing the rest), the second node killed while one of its tasks runs, and one variant split over both."""
    local = _run_locally(driver, "suite.yaml", "local")
    assert len(local) == 8  # 2 models × 2 variants × 2 scores
    local_split = _run_locally(driver, "split.yaml", "local_split")
    assert len(local_split) == 4  # 2 layers × 2 scores
    marks = tmp_path / "marks"
    marks.mkdir()
    command = ["unshare", "--net", "--mount", "--pid", "--fork", "--mount-proc", "bash", str(SCRIPT), str(driver),
               str(marks), "6391", str(driver / "suite.yaml"), str(driver / "split.yaml")]  # fmt: skip
    environment = _environment(driver) | {"PATH": f"{BIN}:{os.environ['PATH']}"}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=900)
    said = done.stdout
    assert "nodes: 2" in said, said[-2000:] + done.stderr[-2000:]
    assert "tasks ran on: head node2" in said, said
    assert "interrupted: exit 130" in said and "resumed: exit 0" in said, said[:3000]
    kept = int(said.split("records kept: ")[1].split()[0])
    assert 1 <= kept < 8  # Ctrl-C mid-run: what finished was written, the rest was not
    assert "node 2 killed" in said and "killed: exit 0" in said, said
    assert "nodes after the kill: 1" in said, said  # it was gone, not merely slow
    assert "split: exit 0" in said and "split tasks ran on: head node2" in said, said
    on_ray = _values(driver / "split")
    assert set(on_ray) == set(local_split)
    for unit, values in local_split.items():  # the parts' per-input values joined in batch order
        assert on_ray[unit] == pytest.approx(values, abs=1e-6), unit
    for run in ("interrupted", "killed"):
        on_ray = _values(driver / run)
        assert set(on_ray) == set(local), run  # every unit: the lost node's tasks ran again on the head
        for unit, values in local.items():
            assert on_ray[unit] == pytest.approx(values, abs=1e-6), (run, unit)
    assert sorted(p.name for p in (driver / "killed" / "maps").glob("*.npz")) == sorted(
        p.name for p in (driver / "local" / "maps").glob("*.npz")
    )
