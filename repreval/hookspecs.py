"""Every hook a repreval plugin can implement.

Each hook receives a ``register`` callback. Call it once per thing the plugin provides::

    register(factory)                       # name taken from factory.name
    register(factory, name="median")        # explicit name
    register(factory, aliases=("med",))     # extra names

``factory`` is called with the keyword options a suite gives (``{name: {options}}``) and returns
the object the host uses. A class is the usual factory. The host keeps control of names, rejects
duplicates and records which plugin registered what (``repreval plugins``).

Built-in plugins (``plugins/repreval_builtins``) use these hooks exactly as third-party ones do.
"""

from __future__ import annotations

import pluggy

PROJECT = "repreval"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_saliency_methods(register):
    """Register saliency methods (:class:`repreval.api.SaliencyMethod` factories).

    A saliency method turns the activation of a probe layer and the gradients of embedding
    components with respect to it into per-component attributions.
    """


@hookspec
def register_aggregators(register):
    """Register aggregators (:class:`repreval.api.Aggregator` factories).

    An aggregator reduces one dimension of a tensor (channels, or embedding components).
    """


@hookspec
def register_scores(register):
    """Register scores: :class:`repreval.api.AttributionScore` factories (attribution maps -> one value
    per input) or :class:`repreval.api.EmbeddingScore` factories (the network on whole datasets -> metrics,
    e.g. linear-probe accuracy). Each declares whether higher is better.
    """


@hookspec
def register_model_sources(register):
    """Register model sources (:class:`repreval.api.ModelSource` factories).

    A model source owns a prefix (``timm`` in ``timm:resnet18``) and builds :class:`Network` objects.
    """


@hookspec
def register_datasets(register):
    """Register datasets (:class:`repreval.api.DatasetSource` factories).

    A dataset loads images as float tensors in [0, 1]; the host fits them to each model's input.
    """


@hookspec
def register_variants(register):
    """Register model variants (:class:`repreval.api.Variant` factories).

    A variant derives the network to evaluate from a model: trained weights, random
    initialisation, layer randomisation, ...
    """


@hookspec
def register_explainers(register):
    """Register explainers (:class:`repreval.api.Explainer` factories).

    An explainer learns to re-express a frozen performer's feature map at one layer (object-part features and
    a reconstruction of the same or higher layers); suites name them under ``evaluation.explainers``.
    """


@hookspec
def register_executors(register):
    """Register executors (:class:`repreval.api.Executor` factories).

    An executor computes a run's pending units: here, or as tasks elsewhere (a cluster) whose results the host
    writes; suites name one under ``executor:``.
    """


#: Hook name -> registry kind, in the order ``repreval plugins`` shows them.
HOOK_KINDS = {
    "register_saliency_methods": "saliency",
    "register_aggregators": "aggregator",
    "register_scores": "score",
    "register_model_sources": "model_source",
    "register_datasets": "dataset",
    "register_variants": "variant",
    "register_explainers": "explainer",
    "register_executors": "executor",
}
