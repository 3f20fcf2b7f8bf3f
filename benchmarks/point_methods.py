"""What the saliency methods that take gradients at points of their own cost against plain gradients: the same
``component_maps`` call (same network, layer, inputs, channel aggregator, reverse sweep) with only the method
changed, in alternating rounds, the best round of each reported as seconds and as a ratio to ``gradients``.

    python benchmarks/point_methods.py [--rounds 3] [--inputs 8]

Measured on an idle 2-core CPU (best of 3, 8 inputs, 16 points each): ResNet20 ``layer2`` 9.5-10.2x, ViT-Ti
``blocks.4`` at 64² 10.9-11.7x; below 16x because the rows of the points share each batched backward pass.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from repreval.api import component_maps
from repreval.config import ModelConfig
from repreval.models import Model
from repreval.plugins import load_plugins

#: (model, its options, probe layer, input side) compared
CASES = [
    ("cifar:resnet20", {}, "layer2", 32),
    ("timm:vit_tiny_patch16_224", {"input_size": [3, 64, 64]}, "blocks.4", 64),
]
#: The methods compared, each with 16 points (gradients: the baseline of the ratios)
METHODS = {
    "gradients": {},
    "integrated_gradients": {"steps": 16},
    "smoothgrad": {"samples": 16},
    "expected_gradients": {"samples": 16},
}


def main() -> None:
    """Time every method of METHODS on every case of CASES and print the ratios to gradients."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inputs", type=int, default=8)
    args = parser.parse_args()
    plugins = load_plugins()
    aggregator = plugins.aggregator.create("abs")
    for spec, options, layer, side in CASES:
        config = ModelConfig(id="m", spec=spec, options=options)
        network = Model(config, plugins.model_source.create(spec.split(":")[0])).untrained(0)
        inputs = torch.randn(args.inputs, 3, side, side, generator=torch.Generator().manual_seed(0))
        times: dict[str, list[float]] = {name: [] for name in METHODS}
        for _ in range(args.rounds):
            for name, method_options in METHODS.items():
                method = plugins.saliency.create(name, method_options)
                started = time.perf_counter()
                component_maps(network, layer, inputs, method, aggregator, strategy="reverse")
                times[name].append(time.perf_counter() - started)
        base = min(times["gradients"])
        shown = ", ".join(f"{name} {min(found):.2f} s ({min(found) / base:.1f}x)" for name, found in times.items())
        print(f"{spec} {layer}, {args.inputs} inputs, {torch.get_num_threads()} threads: {shown}")


if __name__ == "__main__":
    main()
