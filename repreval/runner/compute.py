"""Computing units in this process: model by model and variant by variant (each variant built once)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from ..api import ImageSet, InputSpec, TextSet, TrainingContext
from ..models import Model
from ..plan import Plan, Unit, set_fields
from ..plugins import Plugins
from ..store import ResultStore
from .context import Progress, RunContext, Shard, resolve_device
from .inputs import Inputs
from .pictures import lacks_pictures, pictures_only
from .records import RunOutcome, Sink
from .variants import run_variant


@dataclass
class Shipped:
    """What a task computes from instead of files: preprocessed inputs by (dataset, input spec) and trained
    weights (state dict, training log) by model id, loaded by the driver and sent through the object store."""

    inputs: dict[tuple[str, InputSpec], ImageSet | TextSet] = field(default_factory=dict)
    weights: dict[str, tuple[dict[str, Tensor], dict | None]] = field(default_factory=dict)


def model_of(plan: Plan, plugins: Plugins, model_id: str, inputs: Inputs, device) -> Model:
    """The suite's model ``model_id``, ready to build, train (once, cached) and derive variants from."""
    suite, config = plan.suite, plan.suite.models[model_id]
    return Model(
        config,
        plugins.model_source.create(config.source_name),
        training_data=inputs.training_data(config.train.dataset) if config.train else None,
        training_data_key=repr(set_fields(suite.datasets[config.train.dataset])) if config.train else "",
        where=f"{suite.where}: models.{model_id}",
        training_context=TrainingContext(plugins.registries(), device),
    )


def compute(
    plan: Plan,
    plugins: Plugins,
    units: list[Unit],
    sink: Sink | ResultStore,
    outcome: RunOutcome,
    on_progress: Progress | None = None,
    shipped: Shipped | None = None,
    shard: Shard | None = None,
) -> None:
    """Compute ``units`` here, model by model and variant by variant (each variant built once), writing each
    record to ``sink``; also keep the pictures of variants whose units an earlier run computed. ``shipped``: a
    task's inputs and trained weights, loaded by the driver (no file is read, no picture of other variants);
    ``shard``: the batches of a task's share of its variant's attribution units."""
    suite = plan.suite
    device = resolve_device(suite.device)
    inputs = Inputs(suite, plugins, device, shipped.inputs if shipped else None)
    run = RunContext(plan, sink, outcome, on_progress, shard)
    for model_id in suite.models:
        model_units = [unit for unit in units if unit.model == model_id]
        unpictured = [variant for variant in plan.variants[model_id] if lacks_pictures(plan, model_id, variant)]
        if not model_units and (shipped or not unpictured):
            continue
        model = model_of(plan, plugins, model_id, inputs, device)
        if shipped and model_id in shipped.weights:
            model.use_weights(*shipped.weights[model_id])
        for variant in plan.variants[model_id]:
            variant_units = [unit for unit in model_units if unit.variant == variant]
            if variant_units:
                run_variant(run, model, variant, variant_units, inputs, device)
            elif variant in unpictured and not shipped:  # every unit done before pictures were kept: draw them
                pictures_only(run, model, variant, inputs, device)
