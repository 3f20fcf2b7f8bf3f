"""Forward mode against the reverse sweep, for the cost model of ``strategy: auto`` (repreval/engine/costs.py).

1. The weight: for Grad-CAM alone at one probe, forward mode pushes C channel directions and the reverse sweep
   D component rows through the same tail; (forward seconds / C) / (reverse seconds / D) is what one direction
   costs in rows, ``FORWARD_WEIGHT`` in the cost model.
2. A Grad-CAM-only evaluation over early layers (the requests of such a suite, one engine call per batch as the
   runner makes it): ``auto`` (the cost model) against ``reverse`` alone, maps compared.
3. The same as a suite through ``repreval.run`` (timm resnet50 at 64², random init, ``act1`` and ``layer1``, one
   digit and its two noise sets, noise score): ``--strategy auto`` against ``reverse``, the runs' own computing
   seconds, every record's value compared.

Same process, alternating rounds, best of ``--rounds``; threads as repreval runs (torch's default). Reproduce:
    python benchmarks/forward_mode.py            # ~9 min on 2 idle cores (the ResNet-50 reverse sweeps)
"""

from __future__ import annotations

import argparse
import os
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from repreval.config import ModelConfig
from repreval.engine import MapRequest, compute_maps
from repreval.engine.costs import FORWARD_WEIGHT
from repreval.engine.probe import Probe
from repreval.models import Model
from repreval.plugins import load_plugins

#: (model, input size, images, probes of the weight measurement, early layers of the Grad-CAM suite)
CASES = (
    ("cifar:resnet20", 32, 16, ("conv1", "layer1.2", "layer2.0"), ("conv1",)),
    ("timm:resnet50", 64, 1, ("layer1",), ("act1", "layer1")),
)


def network_of(plugins, spec: str, size: int):
    """An untrained network of ``spec`` at ``size``² inputs, in eval mode."""
    source = spec.split(":", 1)[0]
    options = {"input_size": [3, size, size]} if source == "timm" else {}
    model = Model(ModelConfig(id="bench", spec=spec, options=options), plugins.model_source.create(source))
    network = model.untrained(0)
    network.module.eval()
    return network


def best_times(network, requests, inputs, strategies, rounds):
    """Best seconds per strategy over alternating rounds, and the maps of the last round."""
    best = dict.fromkeys(strategies, float("inf"))
    maps = {}
    for _ in range(rounds):
        for strategy in strategies:
            started = time.perf_counter()
            maps[strategy] = compute_maps(network, requests, inputs, strategy=strategy)
            best[strategy] = min(best[strategy], time.perf_counter() - started)
    return best, maps


def difference(maps, requests):
    """Largest |auto - reverse| over the requests' maps."""
    return max(float((maps["auto"][r] - maps["reverse"][r]).abs().max()) for r in requests)


def main() -> None:
    """Print the weight per probe and the Grad-CAM evaluation's ratio per case."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    plugins = load_plugins()
    grad_cam = plugins.saliency.create("grad_cam")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; cost model FORWARD_WEIGHT {FORWARD_WEIGHT}")
    for spec, size, images, probes, early in CASES:
        network = network_of(plugins, spec, size)
        inputs = torch.rand(images, *network.input_spec.shape, generator=torch.Generator().manual_seed(0))
        dim = network.embed(inputs[:1]).shape[1]
        for layer in probes:
            request = MapRequest(Probe.parse(layer), grad_cam)
            best, _ = best_times(network, [request], inputs, ("forward", "reverse"), args.rounds)
            channels = request.probe.capture(network, inputs[:1])[0].shape[1]
            weight = (best["forward"] / channels) / (best["reverse"] / dim)
            print(
                f"{spec} {layer}: C={channels} D={dim}, {images} inputs: forward {best['forward']:.2f} s, "
                f"reverse {best['reverse']:.2f} s → one direction = {weight:.2f} rows"
            )
        requests = [MapRequest(Probe.parse(layer), grad_cam) for layer in early]
        best, maps = best_times(network, requests, inputs, ("auto", "reverse"), args.rounds)
        print(
            f"{spec} Grad-CAM over {', '.join(early)} ({images} inputs): reverse {best['reverse']:.2f} s, auto "
            f"{best['auto']:.2f} s: {best['reverse'] / best['auto']:.1f}× (max |auto - reverse| = "
            f"{difference(maps, requests):.1e})"
        )
    suite_case(args.rounds)


#: Case 3: a Grad-CAM-only suite over the early layers of a ResNet-50 (C = 64 and 256 against D = 2048)
GRAD_CAM_SUITE = {
    "name": "grad-cam-early",
    "seed": 0,
    "datasets": {"digits": {"kind": "digits", "limit": 1}},
    "models": {"resnet50": {"model": "timm:resnet50", "options": {"input_size": [3, 64, 64]},
                            "layers": ["act1", "layer1"]}},
    "variants": ["random"],
    "evaluation": {"dataset": "digits", "saliency": ["grad_cam"], "embedding_aggregators": ["mean"],
                   "scores": ["noise_score"]},
}  # fmt: skip


def suite_case(rounds: int) -> None:
    """Case 3: the suite with strategy auto and reverse, alternating rounds, best computing time of each."""
    import tempfile

    from repreval.runs import run

    best = {"auto": float("inf"), "reverse": float("inf")}
    values: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(rounds):
            for strategy in best:
                suite = {**GRAD_CAM_SUITE, "evaluation": {**GRAD_CAM_SUITE["evaluation"], "strategy": strategy}}
                result = run(suite, out=f"{scratch}/{strategy}-{round_}", threads=torch.get_num_threads())
                best[strategy] = min(best[strategy], result.seconds)
                values[strategy] = {(r.layer, r.score): r.value for r in result.records}
    gap = max(abs(values["auto"][key] - values["reverse"][key]) for key in values["reverse"])
    print(
        f"suite timm:resnet50 64², Grad-CAM at act1 and layer1, 1 digit (+2 noise): computing reverse "
        f"{best['reverse']:.1f} s, auto {best['auto']:.1f} s: {best['reverse'] / best['auto']:.1f}× "
        f"(max |auto - reverse| over {len(values['reverse'])} records = {gap:.1e})"
    )


if __name__ == "__main__":
    main()
