"""The fast part of the whole-zoo layout sweep (``benchmarks/zoo_sweep.py``): a handful of timm families, each layer
right (equal to the sweep's own oracle: plain autograd, the tensor laid out by matching values against timm's own
NCHW tensors) or refused, never silently wrong; and the oracle itself catches the scrambled reading of Hiera's
unrolled tokens that repreval once gave with exit 0."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from repreval.engine.probe import Probe, probe_layout

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "zoo_sweep.py"
#: family (timm module) -> its representative here (small, quick at 64×64)
FAMILIES = {
    "resnet": "resnet10t",
    "vision_transformer": "vit_tiny_patch16_224",
    "hiera": "hiera_tiny_224",
    "pvt_v2": "pvt_v2_b0",
    "twins": "twins_svt_small",
}


@pytest.fixture(scope="module")
def zoo():
    spec = importlib.util.spec_from_file_location("zoo_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results(zoo, plugins):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {family: zoo.sweep_family(plugins, family, model, 64) for family, model in FAMILIES.items()}
    finally:
        torch.set_num_threads(threads)


def verdicts(result) -> dict[str, str]:
    return {layer.layer: layer.verdict for layer in result.layers}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_layer_is_right_or_refused(results, family):
    result = results[family]
    assert not result.build_error, result.build_error
    wrong = [layer for layer in result.layers if layer.verdict not in {"verified", "refused"}]
    assert not wrong, wrong
    assert all(layer.reason for layer in result.layers if layer.verdict == "refused")


def test_the_known_cases(results):
    """Hiera's stages are read in their re-rolled order, ViT's attention internals and Twins' misnamed feature_info
    modules are refused, pvt_v2's NHWC patch embedding is right or refused."""
    hiera = verdicts(results["hiera"])
    assert [hiera[stage] for stage in ("blocks.0", "blocks.2", "blocks.9", "blocks.11")] == ["verified"] * 4
    vit = verdicts(results["vision_transformer"])
    assert vit["blocks.3"] == "verified"
    assert [v for layer, v in vit.items() if ".attn." in layer] == ["refused"]
    twins = results["twins"]
    assert {verdicts(twins)[f"block.{i}"] for i in range(4)} == {"refused"}
    assert "no layer 'block.0'" in next(r.reason for r in twins.layers if r.layer == "block.0")
    assert verdicts(results["pvt_v2"])["patch_embed"] in {"verified", "refused"}
    assert any(r.verdict == "verified" for r in results["resnet"].layers)


def test_the_oracle_catches_a_scrambled_reading(zoo, plugins, monkeypatch, one_thread):
    """Hiera's tokens read row-major (the reading repreval once declared), judged as if accepted: WRONG."""
    network, size = zoo.build(plugins, "hiera_tiny_224", 64)
    layout = probe_layout(network, Probe.parse("blocks.2"))
    assert layout.order is not None
    network.stage_layouts["blocks.2"] = dataclasses.replace(layout, order=None)
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        components = network.embed(image)[0].abs().topk(3).indices
    trace = zoo.Trace(network.module, image)
    result = zoo.judge(plugins, network, trace, "blocks.2", image, components)
    assert result.verdict == "WRONG", result


def test_the_oracle_lays_out_by_timms_own_tensors(zoo, plugins, one_thread):
    """ViT: the patch tokens of a block, the class token left out; qkv (a per-token linear layer) followed upstream
    to the previous block; the queries' [B, heads, N, d] tensor has no grid."""
    network, _ = zoo.build(plugins, "vit_tiny_patch16_224", 64)
    trace = zoo.Trace(network.module, torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    block = zoo.layout_index(trace, "blocks.3")
    assert block.shape == (192, 4, 4) and block.min() >= 192  # token 0 (the class token) is not on the grid
    assert torch.equal(block[:, 0, 1] - block[:, 0, 0], torch.full((192,), 192))  # the next token, same channel
    qkv = zoo.layout_index(trace, "blocks.3.attn.qkv")
    assert qkv.shape == (576, 4, 4) and torch.equal(qkv // 576, block[:1].expand(576, 4, 4) // 192)
    assert zoo.layout_index(trace, "blocks.3.attn.q_norm") is None  # [B, heads, N, d]: no grid


def test_the_table(zoo, results):
    text = zoo.markdown(list(results.values()), 64)
    for family, model in FAMILIES.items():
        assert f"| {family} | {model} | 64 |" in text
    assert "## Totals" in text and "refusal reason" in text
    reason = "layer 'a.1' cannot be read: read as declared (2×2 positions), where (correlation -0.5 (a)): it is not"
    assert zoo.reason_kind(reason) == "read as declared, where"
