"""One model variant: built once, then its units computed kind by kind (failures isolated per group)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..api import Network
from ..config import PluginChoice
from ..models import Model
from ..plan import Unit, UnitKind
from .attribution import run_groups as run_attribution_groups
from .context import RunContext
from .embedding import run_groups as run_embedding_groups
from .explainers import run_groups as run_explainer_groups
from .inputs import Inputs
from .records import non_finite

#: How each kind of unit is computed, in the order a variant computes them: ``run_groups(built, groups)``
UNIT_RUNNERS: dict[UnitKind, Callable[[BuiltVariant, list[list[Unit]]], None]] = {
    UnitKind.EMBEDDING: run_embedding_groups,
    UnitKind.EXPLAINER: run_explainer_groups,
    UnitKind.ATTRIBUTION: run_attribution_groups,
}

#: Inputs and random directions of an embedding signature
SIGNATURE_INPUTS, SIGNATURE_DIRECTIONS = 4, 8


@dataclass
class BuiltVariant:
    """A model variant ready to compute: its network on the device, the run's inputs, and the fields every
    record of the variant carries (``shared``: extras such as the thread count, the embedding signature)."""

    run: RunContext
    model: Model
    variant: PluginChoice
    network: Network
    inputs: Inputs
    device: torch.device
    shared: dict[str, Any]
    #: maps the runner already computed for the report's pictures (first inputs of the first batch), by request
    picture_maps: dict[Any, Tensor] = field(default_factory=dict)


def run_variant(
    run: RunContext, model: Model, variant: PluginChoice, units: list[Unit], inputs: Inputs, device
) -> None:
    """Build the variant's network once, then compute every group of its units."""
    plan = run.plan
    try:
        network = plan.variant(variant).network(model, plan.suite.seed)
        network.module.to(device).eval()
        if not all(bool(torch.isfinite(parameter).all()) for parameter in network.module.parameters()):
            raise non_finite(network)
    except Exception as exc:
        run.fail(units, exc)
        return
    first = inputs.batch_source(network, plan.suite.evaluation.datasets[0])  # data the model cannot read: exit 2
    try:
        signature = embedding_signature(network, first)
    except Exception as exc:
        run.fail(units, exc)
        return
    built = BuiltVariant(run, model, variant, network, inputs, device, _shared_fields(model, variant, run, signature))
    groups = [group for _, group in plan.groups(units)]
    for kind, run_groups in UNIT_RUNNERS.items():
        of_kind = [group for group in groups if group[0].kind is kind]
        if of_kind:
            run_groups(built, of_kind)


def _shared_fields(model: Model, variant: PluginChoice, run: RunContext, signature: list[float]) -> dict[str, Any]:
    """Fields of every record of this variant: threads, the training time of a trained model, the signature."""
    extras: dict[str, float] = {"threads": torch.get_num_threads()}
    if model.config.train is not None and run.plan.variant(variant).needs_weights and model.training_log is not None:
        extras["train_seconds"] = round(model.training_log["seconds"], 3)
    return {"extras": extras, "embedding_signature": signature}


def embedding_signature(network: Network, batches: dict[str, Tensor]) -> list[float]:
    """A fingerprint of what the network embeds: its embedding of the first few evaluation inputs, projected on
    fixed random directions. Two variants with equal signatures embed alike (e.g. one whose classifier layer
    was re-initialised is the trained network as far as any attribution score can tell); reports leave such
    variants out of correlations."""
    with torch.no_grad():
        embedding = network.embed(batches["real"][:SIGNATURE_INPUTS]).double().flatten().cpu()
    generator = torch.Generator().manual_seed(0)
    directions = torch.randn(SIGNATURE_DIRECTIONS, embedding.numel(), generator=generator, dtype=torch.float64)
    return [float(v) for v in directions @ embedding / embedding.numel() ** 0.5]
