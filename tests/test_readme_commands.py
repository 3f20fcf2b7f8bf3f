"""Every ``repreval ...`` command in README.md's shell blocks works on a clean checkout.

Each command is parsed by the real command line (a misspelt flag fails here even for commands not run). Each
that needs no internet and no cluster, and that no other test already runs, is run here in a fresh working
folder (``benchmarks_yaml`` and ``../shared`` linked in, nothing else of the checkout), as written or, where the
written one takes minutes, with smaller arguments appended (argparse: the last value wins) or a smaller suite.
``WAYS`` says, for every command, how it runs and why (a test named as running it must exist); a README command
missing from it fails the test, so a new one gets decided, not forgotten. Runs in-process
(``repreval.cli.main``): the imports are paid once.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, SHARED

from repreval.cli import main, parser

README = ROOT / "README.md"
IMAGES = "image_files:../shared/data/foolbox-samples/imagenet_*.jpg"
#: A smaller eval: one input, one method, the noise score (appended to an ``eval`` command)
ONE_CELL = "--limit 1 --saliency gradients --scores noise_score"
#: ... and for timm's resnet18 (512 components) 64² inputs and 16 sampled components
SMALL_RESNET = f"{ONE_CELL} --layers layer3 --option input_size=[3,64,64] --sample-components 16"
SMALL_QUICKSTART = "quickstart-small.yaml"


@dataclass(frozen=True)
class Way:
    """How one README command runs in this test: ``skip`` (why it does not run here), else as written with
    ``append``ed arguments and ``replace``d words, once its ``needs`` are met (``shared`` data, ``quickstart``
    results, ``weights``: a resnet18 state dict and an image folder made here); ``why`` it is smaller."""

    append: str = ""
    replace: dict[str, str] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    skip: str = ""
    why: str = ""


WAYS = {
    "repreval run benchmarks_yaml/quickstart.yaml": Way(
        replace={"benchmarks_yaml/quickstart.yaml": SMALL_QUICKSTART},
        why="~40 s: the same suite with 2 random networks, 16 digits, 2 epochs (results/quickstart all the same)",
    ),
    "repreval layers timm:resnet18": Way(
        append="--option input_size=[3,64,64]", why="checking every layer's layout at 224² costs ~20 s more"
    ),
    f"repreval eval timm:resnet18 --data {IMAGES} --limit 3": Way(
        append=SMALL_RESNET, needs=("shared",), why="about 70 s as written (the README says so)"
    ),
    "repreval eval timm:resnet18 --weights resnet18.pth --data image_folder:path/to/images --limit 16": Way(
        append=SMALL_RESNET, needs=("weights",), why="16 images at 224², twice; the file and the folder are made here"
    ),
    f"repreval eval timm:tf_efficientnet_lite0 --weights $W --weights-match position --data {IMAGES} --limit 2 "
    "--layers blocks.1,blocks.5 --saliency gradients": Way(
        skip="too long (1,280 components: about a minute for one image); "
        "tests/test_paper_suites.py::test_paper_suite_validates loads this file by position (the 4.2 ImageNet suite)"
    ),
    "repreval eval timm:resnet18 --weights hub --data image_folder:path/to/images": Way(
        skip="needs internet (timm's hub)"
    ),
    "repreval layers timm:vit_tiny_patch16_224 --option input_size=[3,64,64]": Way(
        skip="run as written by tests/test_cli.py::test_layers_of_a_vit_and_a_swin_show_how_they_are_read"
    ),
    "repreval eval timm:vit_tiny_patch16_224 --option input_size=[3,64,64] --layers blocks.3,blocks.9 "
    f"--data {IMAGES} --limit 4": Way(
        skip="run smaller (one input, blocks.3 and blocks.11) by tests/test_timm_coverage.py::test_timm_family"
    ),
    "repreval eval timm:swin_tiny_patch4_window7_224 --option input_size=[3,112,112] --layers layers.1,layers.2 "
    f"--data {IMAGES} --limit 2 --saliency gradients": Way(
        skip="run smaller (one input at 112², layers.1 and layers.3) by tests/test_timm_coverage.py::test_timm_family"
    ),
    "repreval layers hf:$M": Way(
        skip="run as written by tests/test_text_encoders.py::test_layers_lists_the_encoder_blocks_as_token_sequences"
    ),
    "repreval eval hf:$M --weights hub --data text_lines:benchmarks_yaml/text/sentences.txt --limit 16 "
    "--layers encoder.layer.1,encoder.layer.4": Way(
        skip="run smaller (3 sentences of 12 tokens) by tests/test_text_encoders.py::test_eval_runs_a_text_encoder_end_to_end"
    ),
    "repreval run SUITE --executor ray": Way(
        skip="a Ray runtime takes tens of seconds to start: "
        "tests/test_ray.py::test_the_quickstart_on_ray_equals_it_run_here runs the quickstart on Ray"
    ),
    "repreval run SUITE --executor ray --address HOST:6379": Way(skip="needs a running Ray cluster"),
    "repreval validate SUITE --calibrate": Way(
        replace={"SUITE": SMALL_QUICKSTART}, why="SUITE: a placeholder"
    ),  # the small quickstart
    "repreval publish results/quickstart --out site": Way(needs=("quickstart",)),
}


def readme_commands() -> list[str]:
    """Every ``repreval`` command of README.md's bash blocks (continuation lines joined, comments and the
    commands before ``&&`` left out), as the words the shell passes it (quotes gone) joined by single spaces."""
    blocks = re.findall(r"^```bash\n(.*?)^```", README.read_text(), re.M | re.S)
    commands = []
    for line in "\n".join(blocks).replace("\\\n", " ").splitlines():
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if words[:1] == ["repreval"]:
                commands.append(" ".join(words))
    return list(dict.fromkeys(commands))


def test_every_readme_command_is_decided_and_parses():
    commands = readme_commands()
    assert set(commands) == set(WAYS), (
        f"README commands without a way: {sorted(set(commands) - set(WAYS))}; "
        f"ways without a README command: {sorted(set(WAYS) - set(commands))}"
    )
    for command in commands:  # the real parser: subcommands and flags as the README spells them
        parser().parse_args(command.split()[1:])
    for way in WAYS.values():  # a test named as running a command instead exists
        for file, name in re.findall(r"(tests/\w+\.py)::(\w+)", way.skip):
            assert f"def {name}(" in (ROOT / file).read_text(), f"{file}::{name} is gone: {way.skip}"


def _small_quickstart(work: Path) -> None:
    suite = yaml.safe_load((ROOT / "benchmarks_yaml" / "quickstart.yaml").read_text())
    suite["variants"] = ["trained", {"random": {"seeds": 2}}]
    suite["datasets"]["digits-train"]["limit"] = 300
    suite["datasets"]["digits-heldout"]["limit"] = 16
    suite["models"]["autoencoder"]["train"]["epochs"] = 2
    (work / SMALL_QUICKSTART).write_text(yaml.safe_dump(suite, sort_keys=False))


def _weights_and_images(work: Path) -> None:
    """``resnet18.pth`` (a seeded timm resnet18's state dict) and ``path/to/images`` (one class, 2 images)."""
    import timm
    from PIL import Image

    torch.manual_seed(0)
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), work / "resnet18.pth")
    images = work / "path" / "to" / "images" / "things"
    images.mkdir(parents=True)
    for i in range(2):
        Image.fromarray((torch.rand(96, 96, 3) * 255).byte().numpy()).save(images / f"{i}.png")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A working folder with ``benchmarks_yaml`` and ``../shared`` as the README assumes, and the small suite."""
    root = tmp_path_factory.mktemp("readme")
    (root / "work").mkdir()
    (root / "work" / "benchmarks_yaml").symlink_to(ROOT / "benchmarks_yaml")
    (root / "shared").symlink_to(SHARED.parent)
    _small_quickstart(root / "work")
    return root / "work"


@pytest.fixture
def torch_threads():
    """The commands choose torch's threads (the cores left idle): restored after each."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _prepare(need: str, work: Path) -> None:
    """Meet one need of a command, or skip the command."""
    if need == "shared" and not SHARED.is_dir():
        pytest.skip(f"real data not found at {SHARED}")
    if need == "weights" and not (work / "resnet18.pth").exists():
        _weights_and_images(work)
    if need == "quickstart" and not (work / "results" / "quickstart" / "leaderboard.json").exists():
        assert main(["run", SMALL_QUICKSTART]) == 0


@pytest.mark.parametrize("command", [c for c, way in WAYS.items() if not way.skip], ids=lambda c: c[:60])
def test_readme_command_runs(command, work, monkeypatch, torch_threads):
    way = WAYS[command]
    monkeypatch.chdir(work)
    for need in way.needs:
        _prepare(need, work)
    words = [*command.split()[1:], *way.append.split()]
    for old, new in way.replace.items():
        words = [word.replace(old, new) for word in words]
    assert main(words) == 0, shlex.join(words)
