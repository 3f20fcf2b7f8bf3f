"""The front door: ``repreval.run`` leaves the folder ``repreval run`` leaves, and ``repreval.evaluate`` takes an
``nn.Module`` and images (a tensor, a Dataset, a DataLoader) and gives the numbers a suite over the same model and
images gives, in a folder that ``leaderboard`` and ``publish`` read."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from torch import nn

import repreval
from repreval.cli import main
from repreval.config import Subset
from repreval.data import subset_indices
from repreval.errors import ReprevalError

MODULE = '''
import torch
from torch import nn


class Branchy(nn.Module):
    """A stem, then a block added to a shortcut (the gradient reaches the stem along two paths), then a head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 6, 3, padding=1)
        self.block = nn.Sequential(nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(6 * 4 * 4, 10)

    def forward(self, x):
        a = self.stem(x)
        b = self.block(a) + a
        return self.head(nn.functional.avg_pool2d(b, 2).flatten(1))
'''

SUITE = """
name: front-door
seed: 3
datasets:
  digits: {kind: digits, limit: 12}
models:
  branchy:
    model: torch:branchy:Branchy
    options: {input_size: [1, 8, 8]}
    weights: WEIGHTS
    layers: [stem, block]
variants: [trained, random]
evaluation:
  dataset: digits
  saliency: [gradients, grad_cam]
  channel_aggregators: [abs]
  embedding_aggregators: [mean]
  scores: [noise_score, variance_score]
"""

#: What identifies a number across the two folders
KEY = ("variant", "layer", "saliency", "channel_aggregator", "embedding_aggregator", "score")


@pytest.fixture
def branchy(tmp_path, monkeypatch):
    """The model class importable as ``torch:branchy:Branchy``, trained weights of it (a few steps on digits,
    so trained and random differ) and a suite naming both."""
    (tmp_path / "branchy.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REPREVAL_TRUST", "branchy")  # the user trusts their module (as --trust branchy)
    from branchy import Branchy  # type: ignore[import-not-found]
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().div(16).unsqueeze(1)
    labels = torch.from_numpy(digits.target).long()
    torch.manual_seed(0)
    net = Branchy()
    optimiser = torch.optim.SGD(net.parameters(), lr=0.1)
    for start in range(0, 640, 64):
        loss = nn.functional.cross_entropy(net(images[start : start + 64]), labels[start : start + 64])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    torch.save(net.state_dict(), tmp_path / "branchy.pt")
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.replace("WEIGHTS", str(tmp_path / "branchy.pt")))
    # the 12 digits the suite reads, in the order it reads them
    chosen = images[subset_indices(Subset(limit=12, seed=3), len(images))]  # a subset's seed: the suite's
    return Branchy, net, suite, chosen


def by_key(folder) -> dict[tuple, dict]:
    records = [json.loads(path.read_text()) for path in (folder / "records").glob("*.json")]
    return {tuple(record[k] for k in KEY): record for record in records}


def test_repreval_run_leaves_the_folder_repreval_run_leaves(branchy, tmp_path, capsys):
    _, _, suite, _ = branchy
    result = repreval.run(suite, out=tmp_path / "python")
    assert result.ok and result.computed == 2 * 2 * 2 * 2  # variants × layers × methods × (noise, variance)
    assert main(["run", str(suite), "--out", str(tmp_path / "cli")]) == 0
    capsys.readouterr()
    python, cli = tmp_path / "python", tmp_path / "cli"
    listing = lambda folder: sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert listing(python) == listing(cli)
    assert {"run.json", "leaderboard.json", "report.md", "suite.yaml", "report_facts.json"} <= set(listing(python))
    assert json.loads((python / "run.json").read_text()) == json.loads((cli / "run.json").read_text())
    assert (python / "leaderboard.json").read_text() == (cli / "leaderboard.json").read_text()
    ran, printed = by_key(python), by_key(cli)
    assert ran.keys() == printed.keys() and len(ran) == result.computed
    for key, record in ran.items():
        assert record["values"] == printed[key]["values"], key
    # the result object reads what the folder holds
    assert len(result.records) == len(ran) and result.boards and (python / "report.md") == result.report
    rows = result.rows()
    assert {row["variant"] for row in rows} == {"trained", "random"}
    assert all({"layer:stem", "layer:block"} <= row.keys() for row in rows)
    # a second run into the folder computes nothing; another seed is refused, not mixed in
    assert repreval.run(suite, out=python).computed == 0
    with pytest.raises(ReprevalError, match="seed"):
        repreval.run(suite, out=python, seed=4)


def test_evaluate_gives_the_numbers_of_the_same_suite(branchy, tmp_path, capsys):
    """The same module, weights and images through ``evaluate`` (Python objects) and through a suite (an import
    string, a weights file, a dataset plugin): every per-input value equal."""
    Branchy, net, suite, images = branchy
    assert main(["run", str(suite), "--out", str(tmp_path / "suite")]) == 0
    result = repreval.evaluate(
        net, images, build=Branchy, layers=["stem", "block"], saliency=["gradients", "grad_cam"],
        scores=["noise_score", "variance_score"], seed=3, out=tmp_path / "notebook",
        evaluation={"embedding_aggregators": ["mean"]},
    )  # fmt: skip
    assert result.ok and result.computed == 16
    expected, got = by_key(tmp_path / "suite"), by_key(tmp_path / "notebook")
    assert expected.keys() == got.keys()
    for key, record in expected.items():
        assert got[key]["values"] == record["values"], key
        assert got[key]["reference_values"] == record["reference_values"], key
    trained = result.values(variant="trained", score="noise_score", layer="block", saliency="gradients")
    assert len(trained) == 1 and len(next(iter(trained.values()))) == 12  # per input, in the order given
    # the folder is a results folder like any other
    capsys.readouterr()
    assert main(["leaderboard", str(tmp_path / "notebook"), "--format", "json"]) == 0
    boards = json.loads(capsys.readouterr().out)
    assert {row["variant"] for board in boards for row in board["rows"]} == {"trained", "random"}
    assert json.loads(result.to_json()) == boards  # the result's JSON is the command's
    assert "<table>" in result._repr_html_() and "noise_score" in result._repr_html_()
    assert main(["publish", str(tmp_path / "notebook"), "--out", str(tmp_path / "site")]) == 0
    assert (tmp_path / "site" / "index.html").is_file()
    # the same module and images again: nothing to compute
    again = repreval.evaluate(
        net, images, build=Branchy, layers=["stem", "block"], saliency=["gradients", "grad_cam"],
        scores=["noise_score", "variance_score"], seed=3, out=tmp_path / "notebook",
        evaluation={"embedding_aggregators": ["mean"]},
    )  # fmt: skip
    assert again.computed == 0 and again.skipped == 16


def test_evaluate_reads_datasets_and_loaders_and_scores_downstream(branchy, tmp_path):
    """A Dataset of (image, label) pairs and a DataLoader give the same numbers as the tensor; labels reach the
    downstream scores (fit on the first half, scored on the second); a copy re-drawn by reset_parameters() stands
    for the random network when no build function is given."""
    _, net, _, images = branchy
    labels = torch.arange(len(images)) % 3
    dataset = torch.utils.data.TensorDataset(images, labels)
    options: dict = {"layers": ["stem"], "saliency": ["gradients"], "scores": ["noise_score"]}
    from_tensor = repreval.evaluate(net, images, out=tmp_path / "tensor", **options)
    from_loader = repreval.evaluate(
        net, torch.utils.data.DataLoader(dataset, batch_size=5), out=tmp_path / "loader", **options
    )
    from_dataset = repreval.evaluate(net, dataset, out=tmp_path / "dataset", **options)
    assert from_tensor.values() == from_loader.values() == from_dataset.values()
    assert len(from_tensor.values()) == 2  # trained and random differ in weights: both there
    trained, random = (from_tensor.values(variant=v) for v in ("trained", "random"))
    assert next(iter(trained.values())) != next(iter(random.values()))
    downstream = repreval.evaluate(
        net, dataset, layers=["block"], saliency=["gradients"], scores=["classifier_accuracy"],
        variants=["trained"], out=tmp_path / "downstream",
    )  # fmt: skip
    accuracy = [values for key, values in downstream.values().items() if key.endswith("classifier_accuracy"
                "[dataset=probe_test].top1")]  # fmt: skip
    # the oracle: the module's own predictions on the second half of the inputs
    with torch.no_grad():
        predicted = net(images[6:]).argmax(dim=1)
    assert accuracy == [[pytest.approx(float((predicted == labels[6:]).float().mean()))]]


def test_evaluate_refuses_what_it_cannot_make_or_read(tmp_path):
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.position = nn.Parameter(torch.zeros(1, 1, 8, 8))  # no reset_parameters() re-draws it
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            return self.conv(x + self.position).flatten(1)

    images = torch.rand(4, 1, 8, 8)
    with pytest.raises(ReprevalError, match=r"random copy of Tokens cannot be made: position .*build=") as error:
        repreval.evaluate(Tokens(), images, out=tmp_path / "a")
    assert "\n" not in error.value.one_line()
    result = repreval.evaluate(Tokens(), images, variants=["trained"], layers=["conv"], out=tmp_path / "b")
    assert result.ok and {r.variant for r in result.records} == {"trained"}
    with pytest.raises(ReprevalError, match=r"not in \[0, 1\].*mean=\.\.\., std="):
        repreval.evaluate(Tokens(), images * 2 - 1, variants=["trained"], out=tmp_path / "c")
    with pytest.raises(ReprevalError, match="must be a tensor, a Dataset or a DataLoader"):
        repreval.evaluate(Tokens(), 42, out=tmp_path / "d")
    with pytest.raises(ReprevalError, match="need labelled data"):
        repreval.evaluate(Tokens(), images, variants=["trained"], scores=["linear_probe"], out=tmp_path / "e")


def test_a_python_one_liner_gives_a_board(tmp_path):
    """What the README shows: ``python -c`` with an nn.Module and a tensor, then ``repreval leaderboard``."""
    import subprocess
    import sys

    script = textwrap.dedent(
        """
        import torch, repreval
        from torch import nn
        net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten())
        result = repreval.evaluate(net, torch.rand(6, 1, 8, 8), layers=["0", "2"], out="folder")
        print(len(result.boards), result.folder)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] != "0"
    shown = subprocess.run(
        [sys.executable, "-m", "repreval", "leaderboard", "folder"], cwd=tmp_path, capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    assert "noise_score" in shown.stdout


def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    """The README's ``repreval.evaluate`` example, as written (in a scratch folder)."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## In Python: `repreval.run` and `repreval.evaluate`", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(example, "README.md", "exec"), scope)
    result = scope["result"]
    assert result.ok and result.computed > 0 and scope["rows"] and len(scope["per_input"]) == 1
    assert {"linear_probe[test=probe_test,train=probe_train].top1"} <= {row["score"] for row in scope["rows"]}
    assert (tmp_path / "results" / "my-cnn" / "leaderboard.json").is_file()
