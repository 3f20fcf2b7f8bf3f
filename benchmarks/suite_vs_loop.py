"""A whole suite through ``repreval run`` against a plain loop computing the same cells, in one run.

The suite is the paper's 4.1 CIFAR suite cut to 16 images (trained CIFAR ResNet20 and its random twin, six
probe layers, gradients / activations×gradients / Grad-CAM, noise score with abs over channels and mean over
components, real + two noise sets). The plain loop is what a careful user writes by hand: per input set and
batch, one forward with the six layer outputs captured, then one ``torch.autograd.grad`` per embedding
component that returns the gradients at all six layers at once, and all three methods derived from them. It
shares no attribution code with repreval (only the model, the images and the noise inputs), and its numbers
are checked against repreval's records.

    python benchmarks/suite_vs_loop.py [--images 16] [--loop-threads 1]

Needs ../shared/data (the CIFAR-10 test images and the ResNet20 checkpoint). Prints both wall times, their
ratio and the largest difference between the two implementations' cell values.
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

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks_yaml" / "paper" / "4.1-parameter-dependence-cifar.yaml"


def run_repreval(images: int, out: Path) -> float:
    """Wall time of ``repreval run`` on the suite cut to ``images`` images (a fresh process, as users run it)."""
    suite = out.parent / "suite.yaml"
    text = SUITE.read_text().replace("limit: 32", f"limit: {images}")
    suite.write_text(text)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "repreval", "run", str(suite), "--out", str(out)],
        check=True, cwd=ROOT, stdout=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    return time.perf_counter() - started


def plain_loop(images: int, threads: int) -> tuple[float, dict[tuple[str, str, str], float]]:
    """Noise scores per (variant, layer, method), computed by hand; and the wall time."""
    import torch

    from repreval.config import ModelConfig, Subset
    from repreval.data import fit_to_input, noise_inputs, normalize, subset_indices
    from repreval.models import Model
    from repreval.plugins import load_plugins
    from repreval.runner import derived_seed

    torch.set_num_threads(threads)
    started = time.perf_counter()
    plugins = load_plugins()
    data = ROOT.parent / "shared" / "data"
    weights = data / "cifar10-resnets" / "resnet20-12fca82f.th"
    layers = ["conv1", "layer1.1", "layer2.0", "layer2.2", "layer3.0", "layer3.1"]
    model = Model(
        ModelConfig(id="r20", spec="cifar:resnet20", weights=str(weights)), plugins.model_source.create("cifar")
    )
    folder = plugins.dataset.create("image_folder", {"path": str(data / "cifar10-test")})
    values: dict[tuple[str, str, str], float] = {}
    for variant in ("trained", "random"):
        network = model.trained() if variant == "trained" else model.untrained(0)
        spec = network.input_spec
        chosen = subset_indices(Subset(limit=images, seed=0), folder.size(spec))
        real = normalize(fit_to_input(folder.load(chosen, spec).images, spec), spec)
        sets = {
            "real": real,
            "noise": normalize(noise_inputs(len(real), spec, derived_seed(0, "noise-a")), spec),
            "noise_b": normalize(noise_inputs(len(real), spec, derived_seed(0, "noise-b")), spec),
        }
        modules = dict(network.module.named_modules())
        maps: dict[str, dict[tuple[str, str], list]] = {name: {} for name in sets}
        for name, inputs in sets.items():
            for start in range(0, len(inputs), 16):
                captured: list = []
                # layers run in depth order: captured[i] is layers[i]
                hook = lambda _m, _i, out, keep=captured.append: keep(out)
                handles = [modules[layer].register_forward_hook(hook) for layer in layers]
                with torch.enable_grad():
                    embedding = network.embed(inputs[start : start + 16].clone().requires_grad_(True))
                for handle in handles:
                    handle.remove()
                per_component = []
                for d in range(embedding.shape[1]):
                    per_component.append(torch.autograd.grad(embedding[:, d].sum(), captured, retain_graph=True))
                for i, layer in enumerate(layers):
                    a = captured[i].detach()
                    g = torch.stack([grads[i] for grads in per_component], dim=1)  # [B, D, C, h, w]
                    methods = {
                        "gradients": g.abs().mean(dim=2).mean(dim=1),
                        "activations_x_gradients": (a[:, None] * g).abs().mean(dim=2).mean(dim=1),
                        "grad_cam": (g.mean(dim=(-2, -1), keepdim=True) * a[:, None]).sum(dim=2).relu().mean(dim=1),
                    }
                    for method, value in methods.items():
                        maps[name].setdefault((layer, method), []).append(value)
        for key in maps["real"]:
            real_map, noise_map, chance_map = (torch.cat(maps[name][key]) for name in ("real", "noise", "noise_b"))
            values[(variant, *key)] = float(((_norm(real_map) - _norm(noise_map)).abs().flatten(1).mean(dim=1)).mean())
    return time.perf_counter() - started, values


def _norm(maps):
    flat = maps.flatten(-2)
    low, high = flat.amin(dim=-1, keepdim=True), flat.amax(dim=-1, keepdim=True)
    return ((flat - low) / (high - low + 1e-12)).reshape(maps.shape)


def main() -> None:
    """Time both, check they agree, print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--loop-threads", type=int, default=1, help="torch threads of the plain loop (default 1)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "results"
        repreval_seconds = run_repreval(args.images, out)
        records = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    loop_seconds, values = plain_loop(args.images, args.loop_threads)
    ours = {(r["variant"], r["layer"], r["saliency"]): r["value"] for r in records}
    difference = max(abs(ours[key] - value) for key, value in values.items())
    print(f"cells: {len(values)} (repreval records: {len(records)}); max |repreval - loop| = {difference:.1e}")
    print(f"repreval run:  {repreval_seconds:7.1f} s (threads: repreval run chooses them)")
    print(f"plain loop:    {loop_seconds:7.1f} s ({args.loop_threads} thread(s))")
    print(f"loop / repreval = {loop_seconds / repreval_seconds:.2f}")
    print(f"reproduce: python benchmarks/suite_vs_loop.py --images {args.images} --loop-threads {args.loop_threads}")


if __name__ == "__main__":
    main()
