"""``repreval bench``: the engine against per-component loops, measured in one run on one machine.

For each saliency method and probe layer it times, per image: (a) a loop that re-runs the forward for
every component (how per-target attribution libraries are called), (b) a loop that reuses one forward,
(c) the engine; it reports the peak memory of each above the starting point, the ratios a/c and b/c,
and max |c - b|. ``quick`` times the loops on a sample of components and scales to all D (said so in
the output); the engine always computes all D. ``precision`` (bfloat16, float16) also times (d) the
engine at that precision and reports its deviation from (c), the float32 maps.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .api import normalize_maps
from .config import DEFAULT_MEMORY_BUDGET, ModelConfig
from .engine import MapRequest, auto_strategy, compute_maps
from .engine.core import PRECISIONS
from .engine.probe import Probe, as_feature_map, probe_layout
from .engine.reference import component_maps_loop
from .models import Model
from .store import ResultStore
from .suite import split_model_spec


@dataclass
class BenchRow:
    """One probe layer × saliency method: seconds per image and peak MB of (a) the re-running loop,
    (b) the forward-reusing loop, (c) the engine, and optionally (d) the engine at a lower precision."""

    layer: str
    method: str
    strategy: str
    components: int  # D
    loop_components: int  # components the loops were timed on (scaled to D when fewer)
    rerun_seconds: float  # (a) per image, all D
    reuse_seconds: float  # (b)
    engine_seconds: float  # (c)
    rerun_peak_mb: float
    reuse_peak_mb: float
    engine_peak_mb: float
    max_abs_difference: float  # |c - b| over the components both computed
    precision: str = "float32"
    precision_seconds: float | None = None  # (d) the engine at `precision`, per image
    precision_peak_mb: float | None = None
    precision_max_relative: float | None = None  # max |d - c| / max |c|
    precision_relative_l2: float | None = None  # ||d - c|| / ||c||
    precision_mean_map_difference: float | None = None  # max |N(mean_d d) - N(mean_d c)|

    @property
    def rerun_ratio(self) -> float:
        """(a) / (c): the re-running loop's time over the engine's."""
        return self.rerun_seconds / self.engine_seconds

    @property
    def reuse_ratio(self) -> float:
        """(b) / (c): the forward-reusing loop's time over the engine's."""
        return self.reuse_seconds / self.engine_seconds


class PeakMemory:
    """Peak resident memory (CPU: RSS sampled every 2 ms; CUDA: the allocator's peak) above the start, in MB."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            return self
        self.start = self.peak = resident_bytes()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, resident_bytes())
            time.sleep(0.002)

    def __exit__(self, *_):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self.start) / 2**20
        else:
            self.running = False
            self.thread.join()
            self.mb = max(0, max(self.peak, resident_bytes()) - self.start) / 2**20


def resident_bytes() -> int:
    """The process's resident memory now, in bytes (Linux)."""
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed(device, function, *args, **kwargs):
    """``function(*args, **kwargs)`` with its wall time and peak memory."""
    with PeakMemory(device) as memory:
        started = time.perf_counter()
        result = function(*args, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
    return result, seconds, memory.mb


class _FirstComponents:
    """The network with its embedding cut to the first k components (what the sampled loops time)."""

    def __init__(self, network, count):
        self.__dict__.update(vars(network))
        self.embed = lambda inputs: network.embed(inputs)[:, :count]


def run_bench(
    plugins,
    *,
    model: str = "timm:resnet18",
    size: int = 224,
    layers: list[str] | None = None,
    methods: tuple[str, ...] = ("gradients", "activations_x_gradients", "grad_cam"),
    channel_aggregator: str = "abs",
    images: int = 1,
    loop_components: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    precision: str = "float32",
    on_row=None,
) -> list[BenchRow]:
    """Time the loops and the engine for each probe layer (default: the network's) × saliency method on
    ``images`` random inputs to an untrained ``model``; one :class:`BenchRow` each, also passed to ``on_row``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    target = torch.device(device)
    source, _ = split_model_spec(model)
    options = {"input_size": [3, size, size]} if source == "timm" else {}
    handle = Model(ModelConfig(id="bench", spec=model, options=options), plugins.model_source.create(source))
    network = handle.untrained(seed)
    network.module.to(target).eval()
    spec = network.input_spec
    inputs = torch.rand((images, *spec.shape), generator=torch.Generator().manual_seed(seed)).to(target)
    aggregator = plugins.aggregator.create(channel_aggregator)
    rows = []
    for layer in layers or network.default_layers:
        probe = Probe.parse(layer)
        for name in methods:
            method = plugins.saliency.create(name)
            request = MapRequest(probe, method, None if method.spatial else aggregator)
            maps, engine_s, engine_mb = timed(target, compute_maps, network, [request], inputs)
            engine = maps[request]
            dim = engine.shape[1]
            count = min(dim, loop_components or dim)
            sampled = network if count == dim else _FirstComponents(network, count)
            reuse, reuse_s, reuse_mb = timed(target, component_maps_loop, sampled, probe, inputs, method, aggregator)
            _, rerun_s, rerun_mb = timed(
                target, component_maps_loop, sampled, probe, inputs, method, aggregator, rerun_forward=True
            )
            layout = probe_layout(network, probe)
            feature = as_feature_map(probe.capture(network, inputs)[0], probe.spec, layout)  # for the report only
            scale = dim / count / images
            row = BenchRow(
                layer=layer,
                method=name,
                strategy=auto_strategy(method, feature.shape, dim, dim, DEFAULT_MEMORY_BUDGET, layout.kind),
                components=dim,
                loop_components=count,
                rerun_seconds=rerun_s * scale,
                reuse_seconds=reuse_s * scale,
                engine_seconds=engine_s / images,
                rerun_peak_mb=rerun_mb,
                reuse_peak_mb=reuse_mb,
                engine_peak_mb=engine_mb,
                max_abs_difference=(engine[:, :count] - reuse).abs().max().item(),
            )
            if precision != "float32":
                low, low_s, low_mb = timed(target, compute_maps, network, [request], inputs, precision=precision)
                deviation = map_deviation(engine, low[request])
                row.precision, row.precision_seconds, row.precision_peak_mb = precision, low_s / images, low_mb
                row.precision_max_relative = deviation["max_relative_difference"]
                row.precision_relative_l2 = deviation["relative_l2_difference"]
                row.precision_mean_map_difference = deviation["mean_map_difference"]
            rows.append(row)
            if on_row:
                on_row(row)
    return rows


def map_deviation(reference: torch.Tensor, maps: torch.Tensor) -> dict[str, float]:
    """Deviation of ``maps`` [B, D, h, w] from ``reference`` (float32 maps of the same inputs).

    ``max_abs_difference``: max |P - F|; ``max_relative_difference``: that over max |F|;
    ``relative_l2_difference``: ||P - F|| / ||F||; ``mean_map_difference``: max |N(mean_d P) - N(mean_d F)|,
    N the per-map min-max normalisation, i.e. what a noise score with mean aggregation reads.

    Measured on CPU (abs channel aggregation). Trained CIFAR-10 ResNet20, 3 test images: at layer3 bfloat16
    deviates by 1% of the largest map and float16 by 0.1%; at layer1/layer2 by 9-13% and 7-8%, where ReLU
    units near zero switch on or off and reroute gradient paths. Random-init timm resnet18 at 112²: the
    max deviation reaches 100% (a component whose pooled ReLU sits at 0 vanishes or appears), while the
    relative L2 deviation is ~6% (bfloat16) and ~2% (float16). Check a model before trusting low precision.
    """
    reference, maps = reference.detach().float(), maps.detach().float()
    difference = maps - reference
    scale = reference.abs().max().item()
    norm = reference.norm().item()
    max_abs = difference.abs().max().item()
    mean_map = (normalize_maps(maps.mean(dim=1)) - normalize_maps(reference.mean(dim=1))).abs().max().item()
    return {
        "max_abs_difference": max_abs,
        "max_relative_difference": _ratio(max_abs, scale),
        "relative_l2_difference": _ratio(difference.norm().item(), norm),
        "mean_map_difference": mean_map,
    }


def _ratio(difference: float, scale: float) -> float:
    if scale > 0:
        return difference / scale
    return 0.0 if difference == 0 else float("inf")


def summary(rows: list[BenchRow]) -> dict:
    """Whole-curve figures: all layers and methods for one image."""
    rerun = sum(r.rerun_seconds for r in rows)
    reuse = sum(r.reuse_seconds for r in rows)
    engine = sum(r.engine_seconds for r in rows)
    return {
        "curve_rerun_seconds": rerun,
        "curve_reuse_seconds": reuse,
        "curve_engine_seconds": engine,
        "curve_rerun_ratio": rerun / engine,
        "curve_reuse_ratio": reuse / engine,
        "max_abs_difference": max(r.max_abs_difference for r in rows),
    }


def as_dicts(rows: list[BenchRow]) -> list[dict]:
    """Rows as dicts; the ``precision*`` keys only when a lower precision was timed."""

    def fields(row: BenchRow) -> dict:
        values = asdict(row)
        if row.precision == "float32":
            values = {k: v for k, v in values.items() if not k.startswith("precision")}
        return values

    return [fields(r) | {"rerun_ratio": r.rerun_ratio, "reuse_ratio": r.reuse_ratio} for r in rows]


# ---------------------------------------------------------------------------------------------
# Constrained training: the cost of scores in the loss (paper 4.5: 11x to 130x slower)

CONSTRAINT_SETTINGS = {
    "none": {},
    "noise_score": {"noise_score": 0.1},
    "variance_score": {"variance_score": 0.1},
    "both": {"noise_score": 0.1, "variance_score": 0.1},
}


@dataclass
class TrainingRow:
    """One constrained-training run: its training time, the ratio to the unconstrained run at the same
    bottleneck, and its train accuracy."""

    bottleneck: int
    constraints: str  # a key of CONSTRAINT_SETTINGS
    seconds: float  # training time (the training loop only)
    ratio: float  # seconds / the unconstrained run's at the same bottleneck
    train_accuracy: float


def run_training_bench(
    plugins,
    *,
    model: str = "ae:classifier",
    dataset: str = "digits",
    bottlenecks: tuple[int, ...] = (1, 2, 3, 5, 10),
    images: int = 1797,
    epochs: int = 2,
    every: int = 20,
    device: str = "cpu",
    seed: int = 0,
    on_row=None,
) -> list[TrainingRow]:
    """Train ``model`` (a source that trains with ``constraints`` and a ``bottleneck`` option, e.g. the paper's
    ae:classifier) on ``dataset`` without and with score constraints; the same batches, epochs and seed each time."""
    from .api import TrainingContext
    from .data import fit_to_input, normalize
    from .models import seeded

    source_name, model_name = split_model_spec(model)
    source = plugins.model_source.create(source_name)
    images_source = plugins.dataset.create(dataset, {})
    context = TrainingContext(plugins.registries(), device)

    def prepared(bottleneck: int, count: int):
        with seeded(seed):
            network = source.build(model_name, {"bottleneck": bottleneck}, seed)
        network.module.to(device)
        data = images_source.load(list(range(min(count, images_source.size(network.input_spec)))), network.input_spec)
        return network, data, normalize(fit_to_input(data.images, network.input_spec), network.input_spec).to(device)

    # One-time costs (plugin discovery, first vmap/double-backward calls) are paid before any timing.
    network, data, inputs = prepared(bottlenecks[0], 64)
    warm_up = {"epochs": 1, "constraints": CONSTRAINT_SETTINGS["both"], "constraint_every": 1}
    source.train(network, data, inputs, warm_up, seed, context)
    rows: list[TrainingRow] = []
    for bottleneck in bottlenecks:
        baseline = None
        for name, constraints in CONSTRAINT_SETTINGS.items():
            network, data, inputs = prepared(bottleneck, images)
            options = {"epochs": epochs, "constraints": constraints, "constraint_every": every}
            with seeded(seed):
                log = source.train(network, data, inputs, options, seed, context)
            baseline = baseline or log["seconds"]
            row = TrainingRow(bottleneck, name, log["seconds"], log["seconds"] / baseline, log["train_accuracy"])
            rows.append(row)
            if on_row:
                on_row(row)
    return rows


# ---------------------------------------------------------------------------------------------
# The suite scenario: a whole suite as users run it, against a hand-written loop computing the same cells

#: The suite scenario's layers, methods and variants: exactly the cells :func:`plain_loop` computes (trained and
#: random ResNet20, six layers, three methods, noise score with channels abs and components mean), pinned here as
#: data (not read from the paper's 4.1 suite, whose variants and methods change with the findings it checks)
SUITE_LAYERS = ("conv1", "layer1.1", "layer2.0", "layer2.2", "layer3.0", "layer3.1")
SUITE_METHODS = ("gradients", "activations_x_gradients", "grad_cam")
SUITE_VARIANTS = ("trained", "random")
RESNET20_WEIGHTS = "cifar10-resnets/resnet20-12fca82f.th"


def bench_suite(images: int, data_dir: Path) -> dict:
    """The suite scenario on the first ``images`` CIFAR-10 test images of ``data_dir``, as a suite mapping."""
    return {
        "name": "bench-suite",
        "seed": 0,
        "datasets": {
            "cifar": {"kind": "image_folder", "options": {"path": str(data_dir / "cifar10-test")}, "limit": images}
        },  # fmt: skip
        "models": {
            "resnet20": {
                "model": "cifar:resnet20",
                "weights": str(data_dir / RESNET20_WEIGHTS),
                "layers": list(SUITE_LAYERS),
            }
        },
        "variants": list(SUITE_VARIANTS),
        "evaluation": {
            "dataset": "cifar",
            "batch_size": 16,
            "saliency": list(SUITE_METHODS),
            "channel_aggregators": ["abs"],
            "embedding_aggregators": ["mean"],
            "scores": ["noise_score"],
        },
    }


@dataclass
class SuiteBench:
    """One run of the suite scenario: wall times, the cells compared and their largest difference.

    Both sides run as fresh processes, as users run them (imports, loading and exit included);
    ``loop_compute_seconds`` is the loop's own timing of its computation alone, ``repreval_compute_seconds``
    repreval's (its units: loading the model and data, the maps, the scores), ``repreval_plan_seconds`` and
    ``repreval_report_seconds`` its planning and its report (leaderboard, report, pictures); the rest of the
    process (start-up, imports, exit) is ``repreval_startup_seconds``."""

    images: int
    repreval_seconds: float
    repreval_compute_seconds: float
    repreval_plan_seconds: float
    repreval_report_seconds: float
    loop_seconds: float
    loop_compute_seconds: float
    loop_threads: int
    cells: int
    max_difference: float

    @property
    def ratio(self) -> float:
        """loop / repreval (both whole processes): above 1, repreval is faster."""
        return self.loop_seconds / self.repreval_seconds

    @property
    def compute_ratio(self) -> float:
        """loop / repreval, computing alone (each side's own timing from loading the model to the values)."""
        return self.loop_compute_seconds / self.repreval_compute_seconds

    @property
    def repreval_startup_seconds(self) -> float:
        """repreval's process time outside planning, computing and the report (start-up, imports, exit)."""
        parts = self.repreval_compute_seconds + self.repreval_plan_seconds + self.repreval_report_seconds
        return self.repreval_seconds - parts


def run_suite_bench(images: int = 16, loop_threads: int = 1, data_dir: Path | None = None) -> SuiteBench:
    """The suite scenario (:func:`bench_suite`: trained ResNet20 and its random twin, six layers, three methods, noise
    score with real and two noise sets) through ``repreval run`` in a fresh process, then :func:`plain_loop` in another:
    per input set and batch one forward with the six layer outputs captured and one ``torch.autograd.grad``
    per component that returns the gradients at all six layers, all methods derived from them. It shares no
    attribution code with repreval (only the model, the images and the noise inputs); its values are checked
    against the records."""
    data_dir = data_dir or Path(os.environ.get("REPREVAL_DATA") or Path.cwd().parent / "shared" / "data")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "results"
        repreval_seconds, phases = run_repreval(images, out, data_dir, env)
        records = ResultStore(out).records()
        loop_file = Path(scratch) / "loop.json"
        script = (
            "import json, sys; from pathlib import Path; from repreval.bench import plain_loop; "
            f"seconds, values = plain_loop({images}, {loop_threads}, Path({str(data_dir)!r})); "
            f"Path({str(loop_file)!r}).write_text(json.dumps([seconds, [[*k, v] for k, v in values.items()]]))"
        )
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", script], check=True, env=env)
        loop_seconds = time.perf_counter() - started
        loop_compute_seconds, rows = json.loads(loop_file.read_text())
    values = {tuple(row[:3]): row[3] for row in rows}
    ours = {(r.variant, r.layer, r.saliency): r.value for r in records}
    difference = max(abs(ours[key] - value) for key, value in values.items())
    return SuiteBench(
        images, repreval_seconds, *phases, loop_seconds, loop_compute_seconds, loop_threads, len(values), difference
    )


#: The last line of ``repreval run``: computing, planning and report seconds
_RUN_LINE = re.compile(r"in ([\d.]+) s \(planning ([\d.]+) s, report ([\d.]+) s\)")


def run_repreval(images: int, out: Path, data_dir: Path, env: dict) -> tuple[float, tuple[float, float, float]]:
    """Wall time of ``repreval run`` on the suite scenario cut to ``images`` images (a fresh process, as users run
    it), and its own computing, planning and report seconds (from its last line)."""
    import yaml

    suite = out.parent / "suite.yaml"
    suite.write_text(yaml.safe_dump(bench_suite(images, data_dir), sort_keys=False))
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "repreval", "run", str(suite), "--out", str(out)],
        check=True, capture_output=True, text=True, env=env,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    found = _RUN_LINE.search(done.stdout)
    assert found is not None, done.stdout[-500:]  # the run's own last line
    compute, plan, report = (float(value) for value in found.groups())
    return seconds, (compute, plan, report)


def plain_loop(images: int, threads: int, data_dir: Path) -> tuple[float, dict[tuple[str, str, str], float]]:
    """Noise scores per (variant, layer, method), computed by hand; and the seconds from loading the model on
    (run in its own process by :func:`run_suite_bench`, with glibc's default allocator, as a script would)."""
    from .api import ImageSet
    from .config import Subset
    from .data import fit_to_input, noise_inputs, normalize, subset_indices
    from .plugins import load_plugins
    from .runner.context import derived_seed

    plugins = load_plugins()
    torch.set_num_threads(threads)
    started = time.perf_counter()
    data = data_dir
    weights = data / RESNET20_WEIGHTS
    layers = list(SUITE_LAYERS)
    model = Model(
        ModelConfig(id="r20", spec="cifar:resnet20", weights=str(weights)), plugins.model_source.create("cifar")
    )
    folder = plugins.dataset.create("image_folder", {"path": str(data / "cifar10-test")})
    values: dict[tuple[str, str, str], float] = {}
    for variant in SUITE_VARIANTS:
        network = model.trained() if variant == "trained" else model.untrained(0)
        spec = network.input_spec
        chosen = subset_indices(Subset(limit=images, seed=0), folder.size(spec))
        loaded = folder.load(chosen, spec)
        assert isinstance(loaded, ImageSet)
        real = normalize(fit_to_input(loaded.images, spec), spec)
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
