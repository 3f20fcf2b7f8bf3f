"""Shared fixtures. Tests never reach the network: timm's hub is forced offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
