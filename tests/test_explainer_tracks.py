"""Issue 27's pieces of the `parts` explainer, each against an oracle that does not share its mechanism: the
track ablation against the same network with the other track's weights zeroed, the norm layers, the original
code's surrogate gradient against a plain double loop, the overlap term by hand, and the exact filter loss's
(missing) pull on uniform maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from repreval.api import TrainingContext
from repreval_builtins.explainers.network import PartExplainer
from repreval_builtins.explainers.templates import (
    filter_loss,
    overlap_loss,
    peak_mask,
    positive_templates,
    surrogate_filter_loss,
    template_matrix,
)


def _explainer(seed: int = 0) -> PartExplainer:
    torch.manual_seed(seed)
    return PartExplainer((5, 6, 6), {"layer": (5, 6, 6), "deeper": (3, 3, 3)}, filters=4, hidden=8, beta=4.0, tau=None)


def _features(seed: int = 1) -> torch.Tensor:
    return torch.relu(torch.randn(7, 5, 6, 6, generator=torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize("kept, zeroed", [("interpretable", "ordinary"), ("ordinary", "interpretable")])
def test_one_track_alone_equals_the_network_with_the_other_tracks_output_zeroed(kept, zeroed):
    module = _explainer().eval()
    features = _features()
    with torch.no_grad():
        alone = module(features, track=kept)
        last = getattr(module, zeroed)[-2]  # the track's last conv: zero weights and bias -> its output is 0
        last.weight.zero_()
        last.bias.zero_()
        oracle = module(features)
    for name in ("layer", "deeper"):
        torch.testing.assert_close(alone.reconstructions[name], oracle.reconstructions[name], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(alone.part_share, oracle.part_share)


def test_an_unknown_track_is_refused():
    with pytest.raises(ValueError, match="unknown track 'parts'"):
        _explainer()(_features(), track="parts")


def test_norm_layers_bring_both_tracks_to_unit_rms_whatever_their_scale():
    module = _explainer().train()
    with torch.no_grad():
        module.ordinary[-2].weight.mul_(1000.0)  # an ordinary track 1000× louder than the interpretable one
        inputs = _features() / module.source_scale
        raw = {
            "interpretable": peak_mask(module.interpretable(inputs), module.beta),
            "ordinary": module.ordinary(inputs),
        }
        for track, output in raw.items():
            norm = getattr(module, f"{track}_norm")
            assert float(norm(output).pow(2).mean().sqrt()) == pytest.approx(1.0, rel=1e-4)
            rms = float(output.pow(2).mean().sqrt())
            assert float(norm.running_rms) == pytest.approx(0.9 + 0.1 * rms, rel=1e-5)  # momentum 0.1 from 1
        assert float(raw["ordinary"].pow(2).mean().sqrt()) > 30 * float(raw["interpretable"].pow(2).mean().sqrt())
        module.eval()
        evaluated = module.ordinary_norm(raw["ordinary"])  # evaluation divides by the running RMS
        torch.testing.assert_close(evaluated, raw["ordinary"] / module.ordinary_norm.running_rms)


def _surrogate_gradient_by_loops(maps: np.ndarray, beta: float) -> np.ndarray:
    """d loss / d x of the original code's surrogate, element by element from its description (float64)."""
    batch, filters, height, width = maps.shape
    n, a = math.sqrt(height * width), 0.5
    masks = np.zeros_like(maps)
    for b in range(batch):
        for f in range(filters):
            peak = int(np.argmax(maps[b, f]))
            mu_i, mu_j = divmod(peak, width)
            for i in range(height):
                for j in range(width):
                    masks[b, f, i, j] = max(1 - beta * (abs(i - mu_i) + abs(j - mu_j)) / n, -1.0)
    gradient = np.zeros_like(maps)
    for f in range(filters):
        s = [float((maps[b, f] * masks[b, f]).mean()) for b in range(batch)]
        flipped = [float((maps[b, f] * masks[batch - 1 - b, filters - 1 - f]).mean()) for b in range(batch)]
        a_log_z = a * math.log(sum(math.exp(v / a) for v in flipped) / batch)
        g = [math.exp(v / a) * (v - a_log_z + a) for v in s]
        mean_g = sum(g) / batch
        for b in range(batch):
            gradient[b, f] = -(g[b] / mean_g) * masks[b, f] / (batch * height * width) / filters
    return gradient


def test_the_surrogate_gradient_is_the_original_codes_push():
    maps = torch.relu(torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    maps.requires_grad_(True)
    surrogate_filter_loss(maps, beta=4.0).mean().backward()
    expected = _surrogate_gradient_by_loops(maps.detach().numpy(), 4.0)
    np.testing.assert_allclose(maps.grad.numpy(), expected, rtol=1e-10, atol=1e-14)


def test_uniform_maps_get_no_pull_from_the_exact_loss_at_the_papers_tau_but_do_from_the_surrogate():
    """The review's finding: a uniform map is a stationary point of the exact loss at tau = 0.5/n² (gradient
    ~1e-9 per element at unit amplitude), while the surrogate pushes it towards a peak."""
    maps = (torch.ones(16, 2, 8, 8, dtype=torch.float64) + 1e-3 * torch.rand(16, 2, 8, 8, dtype=torch.float64,
            generator=torch.Generator().manual_seed(3))).requires_grad_(True)  # fmt: skip
    filter_loss(maps, template_matrix(8, 8).double()).mean().backward()
    exact = float(maps.grad.abs().mean())
    maps.grad = None
    surrogate_filter_loss(maps).mean().backward()
    surrogate = float(maps.grad.abs().mean())
    assert exact < 1e-7
    assert surrogate > 1e-4  # 1 / (N·h·w·K) per unit of mask: 4.9e-4 here
    assert surrogate / exact > 1e3


def test_overlap_by_hand():
    maps = torch.zeros(1, 3, 2, 2)
    maps[0, 0, 0, 0] = 1.0  # filters 0 and 1 identical, filter 2 elsewhere: cosines 1, 0, 0 over 3 pairs
    maps[0, 1, 0, 0] = 2.0
    maps[0, 2, 1, 1] = 1.0
    assert float(overlap_loss(maps)) == pytest.approx(1 / 3)
    assert float(overlap_loss(maps[:, :1])) == 0.0


def test_the_surrogate_and_the_overlap_term_train_and_log_their_pulls(plugins, one_thread):
    features = _features().repeat(4, 1, 1, 1)
    logs = {}
    for options in ({"filter_gradient": "surrogate"}, {"overlap_weight": 1.0}, {}):
        explainer = plugins.explainer.create("parts", {"filters": 4, "hidden": 8, "epochs": 2, **options})
        module = explainer.build((5, 6, 6), {"layer": (5, 6, 6)}, seed=0)
        logs[str(options)] = explainer.fit(
            module, features, {"layer": features}, 0, TrainingContext(plugins.registries())
        )
    for log in logs.values():
        last = log["history"][-1]
        assert set(last) >= {"reconstruction_pull", "filter_pull", "overlap_pull", "filter", "overlap"}
        assert last["reconstruction_pull"] > 0
    assert logs["{}"]["history"][-1]["overlap_pull"] == 0.0  # weight 0: no pull
    assert logs["{'overlap_weight': 1.0}"]["history"][-1]["overlap_pull"] > 0


def test_positive_templates_divided_by_tau_are_the_surrogates_masks():
    assert torch.equal(positive_templates(3, 3, 4.0, tau=1.0)[4], positive_templates(3, 3, 4.0, tau=2.0)[4] / 2)
