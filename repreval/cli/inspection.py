"""One model up close: ``repreval layers MODEL`` and ``repreval show MODEL --input IMAGE --layer L``."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from rich.table import Table

from ..errors import ReprevalError
from ..render import plain
from ..trust import TRUST_HELP
from ._common import (
    EXIT_OK,
    Command,
    add_model_options,
    console,
    key_values,
    lazy,
    model_source,
    say,
    short_model_name,
)

inspection = lazy("repreval.inspection")  # builds the model: torch
maps_drawing = lazy("repreval.render.maps")  # matplotlib


def add_layers_arguments(parser: argparse.ArgumentParser) -> None:
    """``layers``'s arguments."""
    parser.add_argument("model", help="SOURCE:NAME, e.g. timm:resnet18 or cifar:resnet20")
    add_model_options(parser)
    parser.add_argument("--all", action="store_true", help="show every module, not only those with 4-D or 2-D outputs")
    parser.add_argument("--trust", action="append", default=[], metavar="MODULE", help=TRUST_HELP)


def handle_layers(args: argparse.Namespace) -> int:
    """``repreval layers MODEL``: the probe layers of the untrained model with their output shapes."""
    plugins, _ = model_source(args)
    network = inspection.build_network(plugins, args.model, options=key_values(args.option), trust=args.trust)
    rows, embedding_size = inspection.probe_layers(network)
    spec = network.input_spec
    size = f"{spec.tokens} tokens" if spec.tokens else f"{spec.channels}×{spec.height}×{spec.width}"
    table = Table(
        title=plain(f"{args.model}: input {size}, embedding D = {embedding_size}", "table.title"),
        title_justify="left",
        header_style="bold",
    )
    for column in ("layer", "type", "output shape", "read as", "map C×h×w", "layout check", "default"):
        table.add_column(column)
    stages = set(network.default_layers)  # shown even when refused: why a stage is not probed matters
    depth = shown_depth(stages)
    shown = [
        row
        for row in rows
        if args.all
        or row.name in stages
        or (row.map_shape and row.verdict == "verified" and row.name.count(".") <= depth and row.kind not in PASS_ON)
    ]
    for row in shown:
        shape = "×".join(map(str, row.shape))
        mapped = "×".join(map(str, row.map_shape)) if row.map_shape else plain(f"refused: {row.unreadable}", "red")
        table.add_row(
            plain(row.name), plain(row.kind), shape, row.layout, mapped, _checked(row), "✓" if row.default else ""
        )
    caption = (
        f"{len(shown)} of {len(rows)} modules on the embedding's path: readable ones down to {depth + 1} levels of "
        "names, without pass-through modules (--all: every one). Layout check: input changes "
        "at known places, read as declared, land where they were made (verified), or the layer is refused; "
        "'never reaches': every gradient map of it is 0; 'flat gradient': its gradient maps are constant. "
        "Probe a layer's input with NAME:input; ✓ = probed when a suite lists no layers. Boards show scores of the "
        "embedding itself (linear_probe, classifier_accuracy) in a column '(embedding)': it is no probe layer"
    )
    if not spec.tokens:  # what every image is turned into before the model sees it
        caption += (
            f". Inputs: resized to {spec.height}×{spec.width}, normalised with mean {_numbers(spec.mean)} and std "
            f"{_numbers(spec.std)} (a torch: model takes --option mean=[...] --option std=[...])"
        )
    table.caption = caption
    console.print(table)
    return EXIT_OK


#: Module types that hand their input on unchanged at evaluation: ``layers`` lists them only with --all
PASS_ON = ("Identity", "Dropout", "DropPath")


def shown_depth(stages: set[str]) -> int:
    """Dots in the longest module name ``layers`` shows by default: as deep as the deepest default layer, at
    least two levels of names (``layer1.0``, ``blocks.3``)."""
    return max([1, *(stage.count(".") for stage in stages)])


def _numbers(values) -> str:
    return ", ".join(f"{value:g}" for value in values)


def _checked(row) -> str:
    """The layout check's verdict and, where it matters, how the layer's positions reach the embedding."""
    if row.map_shape is None:
        return "refused"
    reach = {"none": ", never reaches", "uniform": ", flat gradient"}.get(row.reach, "")
    return row.verdict + reach


def add_show_arguments(parser: argparse.ArgumentParser) -> None:
    """``show``'s arguments."""
    parser.add_argument("model", help="SOURCE:NAME, e.g. cifar:resnet20 or timm:resnet18")
    parser.add_argument("--input", required=True, metavar="IMAGE", help="an image file")
    parser.add_argument("--layer", required=True, help="the probe layer (`repreval layers MODEL` lists them)")
    parser.add_argument("--saliency", default="gradients,activations_x_gradients,grad_cam", help="comma-separated")
    parser.add_argument(
        "--channel-aggregator",
        default="abs",
        metavar="NAME[,NAME...]",
        help="how a map's channels are aggregated (`repreval list aggregators`; default abs); not used by spatial "
        "methods such as grad_cam",
    )
    parser.add_argument(
        "--component-aggregator",
        metavar="NAME[,NAME...]",
        help="how the embedding components' maps are aggregated (default mean)",
    )
    parser.add_argument(
        "--sample-components",
        type=int,
        metavar="K",
        help="aggregate K components drawn at random (with --seed) instead of all D: K backward passes instead of D",
    )
    parser.add_argument(
        "--component", metavar="I[,J...]", help="the maps of these embedding components, each on its own"
    )
    parser.add_argument("--weights", help="a local weights file (default: random initialisation, seeded)")
    parser.add_argument("--weights-match", choices=["name", "position"], default="name")
    add_model_options(parser)
    parser.add_argument("--seed", type=int, default=0, help="random initialisation and --sample-components")
    parser.add_argument("--out", metavar="FILE.png", help="default: show-<model>-<layer>.png")
    parser.add_argument("--trust", action="append", default=[], metavar="MODULE", help=TRUST_HELP)


def handle_show(args: argparse.Namespace) -> int:
    """``repreval show MODEL --input IMAGE --layer L``: the image's maps (by default channels aggregated by abs, then
    the mean over the embedding components), one per saliency method and aggregation, as a PNG beside the image
    and as shaded blocks here."""
    choice = _map_choice(args)
    plugins, _ = model_source(args)
    inspection.show_plugins(plugins, choice)  # an unknown name fails before the model is built
    network = inspection.build_network(
        plugins, args.model, options=key_values(args.option), weights=args.weights,
        weights_match=args.weights_match, layer=args.layer, seed=args.seed, trust=args.trust,
    )  # fmt: skip
    shown = inspection.input_maps(plugins, network, args.input, args.layer, choice)
    default = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"show-{short_model_name(args.model)}-{args.layer}") + ".png"
    out = Path(args.out or default)
    weights = f"weights {Path(args.weights).name}" if args.weights else f"random, seed {args.seed}"
    title = f"{args.model} ({weights}) @ {args.layer}: {shown.described}"
    maps_drawing.draw_one(shown.image.numpy(), {k: v.numpy() for k, v in shown.maps.items()}, title, out)
    say(shown.described)
    for name, values in shown.maps.items():
        say(plain(name, "bold"), f" at {args.layer} ({values.shape[0]}×{values.shape[1]}):")
        say(inspection.terminal_sketch(values))
    say(f"written: {out}")
    return EXIT_OK


def _map_choice(args: argparse.Namespace):
    """``show``'s map options, checked (one line each) before anything is loaded."""
    if args.component and (args.sample_components is not None or args.component_aggregator):
        raise ReprevalError(
            "--component draws each component's own map: --sample-components and --component-aggregator do not apply",
            where="--component",
            fix="drop one of them",
        )
    if args.sample_components is not None and args.sample_components < 1:
        raise ReprevalError(
            f"{args.sample_components} components", where="--sample-components", fix="sample at least 1"
        )
    return inspection.MapChoice(
        methods=_names(args.saliency, "--saliency"),
        channel_aggregators=_names(args.channel_aggregator, "--channel-aggregator"),
        component_aggregators=_names(args.component_aggregator or "mean", "--component-aggregator"),
        components=_indices(args.component) if args.component else (),
        sample=args.sample_components,
        seed=args.seed,
    )


def _names(text: str, option: str) -> tuple[str, ...]:
    """Comma-separated plugin names, each once."""
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not names:
        raise ReprevalError(f"no name in {text!r}", where=option, fix="give one or more, comma-separated")
    return names


def _indices(text: str) -> tuple[int, ...]:
    """``I[,J...]``: component indices, each once, in the order given."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    wrong = [part for part in parts if not part.isdigit()]
    if wrong or not parts:
        raise ReprevalError(
            f"{(wrong or [text])[0]!r} is not a component index", where="--component", fix="give e.g. 3 or 3,17"
        )
    return tuple(dict.fromkeys(int(part) for part in parts))


COMMANDS = [
    Command("layers", "the probe layers a model offers, with output shapes", add_layers_arguments, handle_layers),
    Command(
        "show",
        "one image's attribution maps at one layer: a PNG and a terminal sketch",
        add_show_arguments,
        handle_show,
    ),
]
