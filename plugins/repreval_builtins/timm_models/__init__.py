"""Model source ``timm:<name>``: any timm backbone.

Random initialisation by timm's own initialisers; weights from a local file (the host loads it) or,
with ``weights: hub``, from timm's hub when the machine is online. Input size and normalisation come
from timm's data config. Default probe layers: the stages timm reports in ``feature_info``. The
embedding: pooled backbone features (``forward_head(..., pre_logits=True)``).

Options: ``kwargs`` (passed to ``timm.create_model``, e.g. ``{drop_rate: 0}``), ``input_size``
([C, H, W], overrides the data config: smaller inputs make quick runs).
"""

from __future__ import annotations

from repreval.api import InputSpec, Layout, ModelSource, Network, ReprevalError, hookimpl, suggest

_OPTIONS = {"kwargs", "input_size"}


def _check_options(options: dict) -> None:
    unknown = set(options) - _OPTIONS
    if unknown:
        name = sorted(unknown)[0]
        raise ReprevalError(f"unknown timm option {name!r}", fix=suggest(name, _OPTIONS))


def _input_spec(model, options: dict) -> InputSpec:
    import timm.data

    config = timm.data.resolve_data_config({}, model=model)
    channels, height, width = options.get("input_size") or config["input_size"]
    return InputSpec(
        channels=int(channels),
        height=int(height),
        width=int(width),
        mean=tuple(float(m) for m in config["mean"]),
        std=tuple(float(s) for s in config["std"]),
        interpolation=config.get("interpolation", "bilinear"),
        crop_pct=None if options.get("input_size") else config.get("crop_pct"),
    )


def _stage_names(model) -> tuple[str, ...]:
    feature_info = getattr(model, "feature_info", None) or []
    names = [info["module"] for info in feature_info if info.get("module")]
    modules = dict(model.named_modules())
    return tuple(name for name in names if name in modules)


class TimmSource(ModelSource):
    """Any timm backbone (random init, local weights, or the hub when online)."""

    name = "timm"

    # timm is imported on first use: its import is slow, a cost that suites without timm need not pay.
    def model_names(self):
        import timm

        return timm.list_models()

    def build(self, name: str, options: dict, seed: int) -> Network:
        import timm

        _check_options(options)
        if not timm.is_model(name):
            raise ReprevalError(f"timm has no model {name!r}", fix=suggest(name, timm.list_models()))
        model = timm.create_model(name, pretrained=False, **options.get("kwargs", {}))

        def embed(inputs):
            return model.forward_head(model.forward_features(inputs), pre_logits=True)

        return Network(
            module=model,
            input_spec=_input_spec(model, options),
            default_layers=_stage_names(model),
            embed=embed,
            classify=model,
            description=f"timm {name}",
            layout=_layout(model),
        )

    def load_pretrained(self, network: Network, name: str, options: dict) -> None:
        import timm

        try:
            published = timm.create_model(name, pretrained=True, **options.get("kwargs", {}))
        except Exception as exc:
            raise ReprevalError(
                f"cannot fetch published weights for timm model {name!r} ({type(exc).__name__})",
                fix="the machine may be offline: download the weights elsewhere and name the file with 'weights: PATH'",
            ) from None
        network.module.load_state_dict(published.state_dict())


def _layout(model) -> Layout:
    """What timm says about its tensors: ``output_fmt`` NHWC (Swin and kin) is channels-last; a model with
    prefix tokens and a patch grid (ViT, DeiT, BEiT, EVA) lays its blocks out as tokens; else channels-first."""
    if getattr(model, "output_fmt", "NCHW") == "NHWC":
        return Layout("channels_last")
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if hasattr(model, "num_prefix_tokens") and grid is not None:
        return Layout("tokens", prefix_tokens=int(model.num_prefix_tokens), grid=(int(grid[0]), int(grid[1])))
    return Layout()


@hookimpl
def register_model_sources(register):
    """Register the ``timm`` model source."""
    register(TimmSource)
