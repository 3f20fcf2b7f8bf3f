"""The maps of a few inputs that reports draw: stored per model variant as ``DIR/maps/<model>--<variant>.npz``
(the inputs and, per saliency method and probe layer, each one's map averaged over components)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from ..api import Network
from ..config import PluginChoice
from ..drawings import maps_file, pictured_variants
from ..engine import MapRequest, compute_maps
from ..engine.probe import Probe
from ..plan import Plan, Unit, UnitKind
from .context import derived_seed
from .records import error_text

if TYPE_CHECKING:
    from ..models import Model
    from .context import RunContext
    from .inputs import Inputs

#: Most models a report draws maps of (the first replicate of each group, in suite order)
PICTURE_MODELS = 12
#: Real and noise inputs whose maps the report draws, and most components they are averaged over (a run sampling
#: k components for its estimates: k at most, or pictures would cost more than the numbers)
PICTURE_INPUTS, PICTURE_NOISE, PICTURE_COMPONENTS = 2, 1, 256


def attribution_groups(plan: Plan, model_id: str, variant: PluginChoice) -> list[list[Unit]]:
    """The attribution groups of one model variant on the first evaluation dataset (what pictures draw)."""
    first = plan.suite.evaluation.datasets[0]
    units = [
        u
        for u in plan.units
        if u.model == model_id and u.variant == variant and u.dataset == first and u.kind is UnitKind.ATTRIBUTION
    ]
    return [group for _, group in plan.groups(units)] if units else []


def is_pictured(plan: Plan, model_id: str, variant: PluginChoice) -> bool:
    """Whether the report's pictures show this model variant: a few variants (trained and random first) of the
    first replicate of the first PICTURE_MODELS model groups."""
    firsts = list({config.group or model_id: key for key, config in reversed(plan.suite.models.items())}.values())
    models = sorted(firsts, key=list(plan.suite.models).index)[:PICTURE_MODELS]
    return model_id in models and variant.label in pictured_variants([v.label for v in plan.variants[model_id]])


def lacks_pictures(plan: Plan, model_id: str, variant: PluginChoice) -> bool:
    """Whether a pictured variant has no stored maps yet (its units were all computed before pictures were kept)."""
    return (
        is_pictured(plan, model_id, variant)
        and bool(attribution_groups(plan, model_id, variant))
        and not maps_file(plan.suite.output, model_id, variant.label).is_file()
    )


def pictures_only(run: RunContext, model: Model, variant: PluginChoice, inputs: Inputs, device) -> None:
    """The picture maps of a variant whose units were all computed by an earlier run."""
    plan = run.plan
    try:
        network = plan.variant(variant).network(model, plan.suite.seed)
        network.module.to(device).eval()
        batches = inputs.batch_source(network, plan.suite.evaluation.datasets[0])
        groups = attribution_groups(plan, model.config.id, variant)
        keep_picture_maps(plan, network, batches, variant, model.config.id, groups)
    except Exception as exc:  # any failure: the numbers are what matters
        run.outcome.warnings.append(f"{model.config.id}/{variant.label}: no attribution pictures: {error_text(exc)}")


def keep_picture_maps(
    plan: Plan,
    network: Network,
    batches: dict[str, Tensor],
    variant: PluginChoice,
    model_id: str,
    groups,
    computed: dict[MapRequest, Tensor] | None = None,
) -> None:
    """Store the maps of the first real inputs and a noise input (the suite's first channel aggregator, then the
    mean over components) per saliency method and probe layer; the report draws them. ``computed``: such maps the
    run already has (by request; all D components, or the k it sampled when it covers every request), computed
    again only where missing."""
    if network.input_spec.tokens:
        return  # text: no image to draw a map over
    evaluation = plan.suite.evaluation
    channel = plan.aggregator(evaluation.channel_aggregators[0]) if evaluation.channel_aggregators else None
    layers = list(dict.fromkeys(group[0].layer for group in groups))
    methods = list(dict.fromkeys(group[0].saliency for group in groups if group[0].saliency is not None))
    requests = {
        (method.label, layer): MapRequest(
            Probe.parse(layer), plan.saliency(method), None if plan.saliency(method).spatial else channel
        )
        for method in methods
        for layer in layers
    }
    if not requests:
        return
    inputs = torch.cat([batches["real"][:PICTURE_INPUTS], batches["noise"][:PICTURE_NOISE]])
    with torch.no_grad():
        dim = network.embed(inputs[:1]).shape[1]
    maps = {r: v for r, v in (computed or {}).items() if r in requests.values()}
    used = {v.shape[1] for v in maps.values()}
    if len(maps) == len(requests) and len(used) == 1:  # the run's own maps: all D, or the components it sampled
        averaged = used.pop()
    else:  # all D, or PICTURE_COMPONENTS of them drawn for the pictures (no more than a sampling run's k)
        averaged = min(dim, PICTURE_COMPONENTS, evaluation.sample_components or dim)
        components = None
        if dim > averaged:
            generator = torch.Generator().manual_seed(derived_seed(plan.suite.seed, "picture-components"))
            components = torch.randperm(dim, generator=generator)[:averaged].sort().values
        maps = {r: v for r, v in maps.items() if components is None and v.shape[1] == dim}
        missing = [request for request in requests.values() if request not in maps]
        if missing:
            maps |= compute_maps(
                network, missing, inputs, strategy=evaluation.strategy, components=components,
                memory_budget=evaluation.memory_budget,
            )  # fmt: skip
    arrays: dict[str, Any] = {
        "inputs": inputs.float().cpu().numpy(),
        "components": np.array([dim, averaged]),
    }
    for (method, layer), request in requests.items():
        arrays[f"{method}|{layer}"] = maps[request].float().mean(dim=1).cpu().numpy()  # mean over components
    path = maps_file(plan.suite.output, model_id, variant.label)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
