"""One model up close: ``repreval layers MODEL`` and ``repreval show MODEL --input IMAGE --layer L``."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from rich.table import Table

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
    shown = [row for row in rows if args.all or row.name in stages or (row.map_shape and row.verdict == "verified")]
    for row in shown:
        shape = "×".join(map(str, row.shape))
        mapped = "×".join(map(str, row.map_shape)) if row.map_shape else plain(f"refused: {row.unreadable}", "red")
        table.add_row(
            plain(row.name), plain(row.kind), shape, row.layout, mapped, _checked(row), "✓" if row.default else ""
        )
    table.caption = (
        f"{len(shown)} of {len(rows)} modules on the embedding's path (--all: every one). Layout check: input changes "
        "at known places, read as declared, land where they were made (verified), or the layer is refused; "
        "'never reaches': every gradient map of it is 0; 'flat gradient': its gradient maps are constant. "
        "Probe a layer's input with NAME:input; ✓ = probed when a suite lists no layers"
    )
    console.print(table)
    return EXIT_OK


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
    parser.add_argument("--weights", help="a local weights file (default: random initialisation, seeded)")
    parser.add_argument("--weights-match", choices=["name", "position"], default="name")
    add_model_options(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", metavar="FILE.png", help="default: show-<model>-<layer>.png")
    parser.add_argument("--trust", action="append", default=[], metavar="MODULE", help=TRUST_HELP)


def handle_show(args: argparse.Namespace) -> int:
    """``repreval show MODEL --input IMAGE --layer L``: the image's maps (channels: abs, then the mean over the
    embedding components), one per saliency method, as a PNG beside the image and as shaded blocks here."""
    plugins, _ = model_source(args)
    network = inspection.build_network(
        plugins, args.model, options=key_values(args.option), weights=args.weights,
        weights_match=args.weights_match, layer=args.layer, seed=args.seed, trust=args.trust,
    )  # fmt: skip
    methods = [name.strip() for name in args.saliency.split(",") if name.strip()]
    image, maps = inspection.input_maps(plugins, network, args.input, args.layer, methods)
    default = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"show-{short_model_name(args.model)}-{args.layer}") + ".png"
    out = Path(args.out or default)
    weights = f"weights {Path(args.weights).name}" if args.weights else f"random, seed {args.seed}"
    title = f"{args.model} ({weights}) @ {args.layer}"
    maps_drawing.draw_one(image.numpy(), {k: v.numpy() for k, v in maps.items()}, title, out)
    for name, values in maps.items():
        say(plain(name, "bold"), f" at {args.layer} ({values.shape[0]}×{values.shape[1]}):")
        say(inspection.terminal_sketch(values))
    say(f"written: {out}")
    return EXIT_OK


COMMANDS = [
    Command("layers", "the probe layers a model offers, with output shapes", add_layers_arguments, handle_layers),
    Command(
        "show",
        "one image's attribution maps at one layer: a PNG and a terminal sketch",
        add_show_arguments,
        handle_show,
    ),
]
