"""Shared fixtures. Tests never reach the network: timm's hub is forced offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"real data not found at {SHARED}")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Trained-model checkpoints go to a per-session temporary cache, never to ~/.cache."""
    monkeypatch.setenv("REPREVAL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def plugins():
    from repreval.plugins import load_plugins

    return load_plugins()


@pytest.fixture
def one_thread():
    """Tiny networks run much faster on one thread when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def digits_suite() -> dict:
    """A small valid suite: ae:classifier trained on 300 digits, evaluated on 8 held-out ones."""
    return {
        "name": "tiny",
        "seed": 0,
        "datasets": {
            "train": {"kind": "digits", "limit": 300},
            "held": {"kind": "digits", "skip": 300, "limit": 8},
        },
        "models": {
            "ae": {
                "model": "ae:classifier",
                "options": {"bottleneck": 4},
                "train": {"dataset": "train", "epochs": 2},
                "layers": ["encoder.block2"],
            }
        },
        "variants": ["trained", "random"],
        "evaluation": {
            "dataset": "held",
            "saliency": ["gradients", "grad_cam"],
            "scores": ["noise_score", "variance_score"],
        },
    }


@pytest.fixture(autouse=True, scope="session")
def one_thread_per_worker():
    """Under pytest-xdist each worker gets one torch thread: two workers with two threads each on two cores
    spin against each other (many small backward passes then run several times slower)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


def install_offline(site, *distributions) -> None:
    """``pip install`` source folders into ``site`` without the network or build isolation (plugin tests)."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index",
               "--disable-pip-version-check", "--target", str(site), *map(str, distributions)]  # fmt: skip
    installed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr


def hooked_forward(network, layer: str, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The oracles' forward: the unmodified network, the probed tensor (``NAME`` or ``NAME:input``) captured by a
    plain hook; returns (that tensor, the embedding), with a graph from one to the other."""
    name, _, side = layer.partition(":")
    module = dict(network.module.named_modules())[name]
    seen: list[torch.Tensor] = []
    if side == "input":
        handle = module.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    else:
        handle = module.register_forward_hook(lambda _m, _args, output: seen.append(output))
    try:
        with torch.enable_grad():
            embedding = network.embed(inputs.clone().requires_grad_(True))
    finally:
        handle.remove()
    assert seen[0]._version == 0, "the oracle needs a network that leaves the probed tensor unchanged"
    return seen[0], embedding
