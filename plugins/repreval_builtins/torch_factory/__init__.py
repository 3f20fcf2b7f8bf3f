"""Any importable ``nn.Module`` factory as a model: ``torch:<module>:<callable>``.

``torch:torchvision.models:resnet18`` imports ``torchvision.models`` and calls ``resnet18(**kwargs)``. A suite
may name ``torchvision.models``, ``torch.nn`` and the modules the user trusts (``--trust MODULE``; see
:mod:`repreval.trust`), nothing else, and only an nn.Module class or a function annotated to return one.
Options: ``kwargs`` (dict, default {}), ``input_size`` ([C, H, W], default [3, 224, 224]), ``mean`` and
``std`` (default ImageNet's for 3 channels, else 0 and 1), ``interpolation`` (default bilinear) and
``crop_pct`` (resize to size/crop_pct then centre-crop, e.g. 0.875 for torchvision's ImageNet transform).

The embedding is the module's forward output, flattened. For torchvision classifiers that is the logits;
set ``embedding: avgpool`` in the suite to use the pooled features instead. Published weights come through
``kwargs`` (``{"weights": "IMAGENET1K_V1"}`` for torchvision) or a local ``weights:`` file.

Default probe layers: top-level ``layer1``, ``layer2``, ... where the module has them (torchvision's
ResNet family); otherwise one module per resolution stage, found by one forward pass on zeros (see
:func:`stage_layers`; 1×1 maps are skipped, so models without feature maps get none). Set ``layers:`` in
the suite to choose others.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from repreval.api import (
    InputSpec,
    ModelSource,
    Network,
    ReprevalError,
    hookimpl,
    import_trusted,
    stage_layers,
    suggest,
    trial_forward,
)

if TYPE_CHECKING:  # torch is imported where a model is built: registering the source needs none
    from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPTIONS = ("kwargs", "input_size", "mean", "std", "interpolation", "crop_pct")
EXAMPLE = "e.g. torch:torchvision.models:resnet18"
RETURNS_MODULE = "name a class or function that returns an nn.Module"
#: What ``repreval list models`` says of the source: the defaults a user's model may not have been trained with
DESCRIPTION = (
    f"Any importable nn.Module factory, torch:MODULE:CALLABLE ({EXAMPLE}). Inputs 3×224×224 normalised with "
    f"ImageNet's mean {list(IMAGENET_MEAN)} and std {list(IMAGENET_STD)} (other channel counts: 0 and 1) unless "
    "options input_size, mean, std say otherwise."
)


def make_module(name: str, kwargs: dict) -> nn.Module:
    """Import ``module:callable`` from ``name`` and call it with ``kwargs``.

    Two gates, both before anything of the suite's choosing runs: the module must be trusted
    (:mod:`repreval.trust`: torchvision.models, torch.nn, or a module the user named; checked on the name,
    before any import), and the callable must be an nn.Module class or a function annotated to return one."""
    from torch import nn

    module_path, sep, attribute = name.partition(":")
    if not sep or not module_path or not attribute:
        raise ReprevalError(f"model torch:{name} is not of the form torch:MODULE:CALLABLE", fix=EXAMPLE)
    try:
        imported = import_trusted(module_path, attribute)  # refused before any import unless the user trusts it
    except ImportError as exc:
        raise ReprevalError(
            f"cannot import {module_path!r}: {exc}",
            fix="check the module path, or install the package that provides it",
        ) from None
    factory = getattr(imported, attribute, None)
    if factory is None:
        public = [n for n in dir(imported) if not n.startswith("_")]
        raise ReprevalError(f"module {module_path!r} has no attribute {attribute!r}", fix=suggest(attribute, public))
    if not callable(factory):
        raise ReprevalError(f"{module_path}:{attribute} is not callable", fix=RETURNS_MODULE)
    if not _builds_a_module(factory):  # a suite may name only what is known to build a model: nothing else runs
        raise ReprevalError(
            f"{module_path}:{attribute} is not known to build a model: it is neither an nn.Module class nor a "
            "function annotated to return one",
            fix="name an nn.Module class, or annotate the factory: def build(...) -> nn.Module",
        )
    if not isinstance(kwargs, dict):
        raise ReprevalError(f"option kwargs must be a mapping, got {kwargs!r}", fix='e.g. kwargs: {"weights": null}')
    try:
        result = factory(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ReprevalError(f"calling {module_path}:{attribute} failed: {exc}", fix="check the option kwargs") from None
    if not isinstance(result, nn.Module):
        raise ReprevalError(
            f"{module_path}:{attribute} returned a {type(result).__name__}, not an nn.Module", fix=RETURNS_MODULE
        )
    return result


def _builds_a_module(factory) -> bool:
    """An nn.Module class, or a function whose return annotation is one (torchvision's builders are)."""
    import inspect
    import typing

    from torch import nn

    if isinstance(factory, type):
        return issubclass(factory, nn.Module)
    for candidate in (factory, inspect.unwrap(factory)):
        if not inspect.isfunction(candidate):
            continue
        try:
            returned = typing.get_type_hints(candidate).get("return")
        except Exception:  # an annotation that does not resolve says nothing
            continue
        if isinstance(returned, type) and issubclass(returned, nn.Module):
            return True
    return False


def per_channel(options: dict, key: str, default: tuple[float, ...], channels: int) -> tuple[float, ...]:
    """A number or a list of 1 or ``channels`` numbers, as a tuple."""
    value = options.get(key, default)
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and _finite(v) for v in values)
    if len(values) not in (1, channels) or not numbers:
        raise ReprevalError(f"{key} must be a finite number or a list of {channels} of them, got {value!r}"[:300])
    return tuple(float(v) for v in values)


def _finite(number: int | float) -> bool:
    """Whether ``number`` is a float other than NaN and ±inf (a 400-digit integer is not)."""
    try:
        return math.isfinite(float(number))
    except OverflowError:
        return False


def input_spec(options: dict) -> InputSpec:
    """The input spec from the options ``input_size`` ([3, 224, 224]), ``mean``/``std`` (ImageNet's for 3
    channels, else 0 and 1), ``interpolation`` and ``crop_pct``; ReprevalError for bad values."""
    size = options.get("input_size", [3, 224, 224])
    if not (isinstance(size, (list, tuple)) and len(size) == 3 and all(isinstance(s, int) and s > 0 for s in size)):
        raise ReprevalError(
            f"input_size must be [C, H, W] (positive integers), got {size!r}", fix="e.g. input_size: [3, 224, 224]"
        )
    channels, height, width = size
    imagenet = channels == 3
    mean = per_channel(options, "mean", IMAGENET_MEAN if imagenet else (0.0,), channels)
    std = per_channel(options, "std", IMAGENET_STD if imagenet else (1.0,), channels)
    if any(s <= 0 for s in std):
        raise ReprevalError(f"std must be positive, got {list(std)}")
    return InputSpec(
        channels,
        height,
        width,
        mean=mean,
        std=std,
        interpolation=options.get("interpolation", "bilinear"),
        crop_pct=options.get("crop_pct"),
    )


class TorchFactory(ModelSource):
    """Any importable nn.Module factory, torch:MODULE:CALLABLE (e.g. torch:torchvision.models:resnet18)."""

    name = "torch"

    def build(self, name: str, options: dict, seed: int) -> Network:
        from torch import Tensor

        unknown = [key for key in options if key not in OPTIONS]
        if unknown:
            raise ReprevalError(f"unknown option {unknown[0]!r} for torch:{name}", fix=suggest(unknown[0], OPTIONS))
        spec = input_spec(options)
        module = make_module(name, options.get("kwargs", {}))
        output, calls = trial_forward(module, spec)

        def embed(x: Tensor) -> Tensor:
            result = module(x)
            if not isinstance(result, Tensor):
                raise ReprevalError(
                    f"torch:{name} returns a {type(result).__name__}, not a tensor",
                    fix="set 'embedding: MODULE' to take the embedding from a named module",
                )
            return result.flatten(1)

        return Network(
            module=module,
            input_spec=spec,
            default_layers=stage_layers(module, calls),
            embed=embed,
            classify=module if isinstance(output, Tensor) and output.dim() == 2 else None,  # [B, K]: logits
            description=f"{name}({', '.join(f'{k}={v!r}' for k, v in options.get('kwargs', {}).items())})",
        )


@hookimpl
def register_model_sources(register):
    """Register the ``torch`` model source."""
    register(TorchFactory, description=DESCRIPTION)
