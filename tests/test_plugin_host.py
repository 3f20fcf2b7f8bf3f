"""The plugin host (repreval.plugins, repreval.registry): duplicate names, aliases, did-you-mean, hook
validation, provenance, and a real third-party distribution installed into a temporary site folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from conftest import digits_suite, install_offline

import repreval.cli
from repreval.api import Aggregator, AttributionScore, ScoreValues, hookimpl
from repreval.errors import ReprevalError, UnknownNameError, suggest
from repreval.plan import make_plan
from repreval.plugins import load_plugins
from repreval.registry import Registry
from repreval.suite import parse_suite


class Twice(AttributionScore):
    """A score two plugins both call 'twice'."""

    name = "twice"

    def compute(self, maps, embedding_aggregator):
        return ScoreValues(values=maps.real.flatten(1).mean(dim=1))


class FirstPlugin:
    @hookimpl
    def register_scores(register):
        register(Twice)


class SecondPlugin:
    @hookimpl
    def register_scores(register):
        register(Twice)


class AliasClashPlugin:
    @hookimpl
    def register_scores(register):
        register(Twice, name="thrice", aliases=("ns",))  # 'ns' is noise_score's alias


class MeanClashPlugin:
    @hookimpl
    def register_aggregators(register):
        class OtherMean(Aggregator):
            name = "mean"

        register(OtherMean)


class NamelessPlugin:
    @hookimpl
    def register_scores(register):
        register(lambda: None)


class MisspeltHookPlugin:
    @hookimpl
    def register_score(register):  # the hook is register_scores
        register(Twice)


class WrongArgumentPlugin:
    @hookimpl
    def register_scores(reg):  # the hook passes 'register'
        reg(Twice)


class GoodPlugin:
    @hookimpl
    def register_scores(register):
        register(Twice, aliases=("two",), description="counted twice")

    @hookimpl
    def register_aggregators(register):
        class Halved(Aggregator):
            """Half the mean."""

            name = "halved"

            def __call__(self, values, dim):
                return values.mean(dim=dim) / 2

        register(Halved)


# ---------------------------------------------------------------------------------------------
# Registries


def test_duplicate_names_across_plugins_name_both():
    with pytest.raises(ReprevalError) as caught:
        load_plugins(extra_plugins=[FirstPlugin, SecondPlugin])
    message = str(caught.value)
    assert "score 'twice' is registered twice" in message
    assert "'FirstPlugin'" in message and "'SecondPlugin'" in message
    assert "--block" in message  # the fix

    with pytest.raises(
        ReprevalError,
        match=r"score 'ns' is registered twice: .*'scores'.*'AliasClashPlugin'|score 'ns' is registered twice: .*'AliasClashPlugin'.*'scores'",
    ):
        load_plugins(extra_plugins=[AliasClashPlugin])
    with pytest.raises(ReprevalError, match=r"aggregator 'mean' is registered twice.*'aggregators'"):
        load_plugins(extra_plugins=[MeanClashPlugin])
    # Blocking one of the two resolves the clash.
    plugins = load_plugins(block=["SecondPlugin"], extra_plugins=[FirstPlugin, SecondPlugin])
    assert plugins.score.entry("twice").plugin == "FirstPlugin"
    assert plugins.blocked == ("SecondPlugin",)


def test_a_factory_without_a_name_is_rejected():
    with pytest.raises(ReprevalError, match="plugin 'NamelessPlugin' registered a score without a name"):
        load_plugins(extra_plugins=[NamelessPlugin])


def test_aliases_resolve(plugins):
    assert plugins.score.entry("ns").name == "noise_score"
    assert plugins.score.entry("vs").name == "variance_score"
    assert plugins.saliency.entry("vanilla").name == "gradients"
    assert plugins.saliency.entry("grad-cam").name == "grad_cam"
    assert plugins.variant.entry("untrained").name == "random"
    assert type(plugins.saliency.create("gradcam")).__name__ == "GradCAM"
    assert type(plugins.score.create("vs", {"binarize": True})).__name__ == "VarianceScore"
    assert "ns" in plugins.score and "noise" not in plugins.score
    assert "ns" not in plugins.score.names()  # names() lists each entry once, by its name
    entry = next(e for e in plugins.score if e.name == "noise_score")
    assert entry.aliases == ("ns",) and entry.plugin == "scores"


def test_aliases_in_a_suite_are_accepted(plugins):
    suite = parse_suite(_suite(scores=["ns", {"vs": {"binarize": True}}], saliency=["vanilla"]), plugins)
    plan = make_plan(suite, plugins)
    assert len(plan.units) == 2


def test_an_alias_and_its_name_give_the_same_units(plugins):
    by_name = make_plan(parse_suite(_suite(scores=["noise_score"]), plugins), plugins)
    by_alias = make_plan(parse_suite(_suite(scores=["ns"]), plugins), plugins)
    assert [u.id for u in by_alias.units] == [u.id for u in by_name.units]


def test_unknown_names_suggest_close_matches(plugins):
    with pytest.raises(UnknownNameError) as caught:
        plugins.score.entry("noise")
    assert str(caught.value) == "unknown score 'noise'; did you mean 'noise_score' or 'ns'?"
    with pytest.raises(UnknownNameError, match=r"unknown saliency 'gradient'; did you mean 'gradients'"):
        plugins.saliency.create("gradient")
    with pytest.raises(UnknownNameError, match=r"unknown aggregator 'topk'; did you mean 'topk_mean'"):
        plugins.aggregator.entry("topk")
    # Nothing close: the known names are listed instead.
    with pytest.raises(
        UnknownNameError,
        match=r"unknown variant 'xyzzy'; known: cascade, cascading_randomization, independent_randomization, random, random_init, randomize_layer, trained, untrained",
    ):
        plugins.variant.entry("xyzzy")
    with pytest.raises(ReprevalError, match=r"unknown plugin kind 'scores'; did you mean 'score'"):
        plugins.registry("scores")
    assert suggest("anything", []) == "none are registered"
    with pytest.raises(UnknownNameError, match="none are registered"):
        Registry("score", AttributionScore).entry("noise_score")


def test_bad_options_become_a_reprevalerror(plugins):
    with pytest.raises(ReprevalError, match=r"bad options for aggregator 'topk_mean': .*'kk'"):
        plugins.aggregator.create("topk_mean", {"kk": 3})
    with pytest.raises(ReprevalError, match=r"bad options for aggregator 'topk_mean': k must be a positive integer"):
        plugins.aggregator.create("topk_mean", {"k": 0})
    assert plugins.aggregator.create("topk_mean", {"k": 2}).k == 2


# ---------------------------------------------------------------------------------------------
# Hook validation


def test_a_misspelt_hook_name_makes_loading_fail():
    with pytest.raises(ReprevalError, match="unknown hook 'register_score'"):
        load_plugins(extra_plugins=[MisspeltHookPlugin])
    with pytest.raises(ReprevalError, match=r"'reg'"):
        load_plugins(extra_plugins=[WrongArgumentPlugin])
    # Blocked, the broken plugin is never registered.
    load_plugins(block=["MisspeltHookPlugin"], extra_plugins=[MisspeltHookPlugin])


def test_cli_reports_a_broken_plugin_in_one_line(capsys):
    code = repreval.cli.main(["list", "scores"], extra_plugins=[MisspeltHookPlugin])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "register_score" in err


# ---------------------------------------------------------------------------------------------
# Provenance


def test_plugin_info_records_distribution_version_and_registrations():
    plugins = load_plugins(block=["timm"], extra_plugins=[GoodPlugin])
    assert "timm" not in plugins.info and plugins.blocked == ("timm",)
    assert "timm" not in plugins.model_source
    release = version("repreval")
    builtins = {name: info for name, info in plugins.info.items() if info.distribution == "repreval"}
    assert set(builtins) == {
        "saliency",
        "aggregators",
        "scores",
        "variants",
        "datasets",
        "cifar_resnets",
        "autoencoders",
        "torch_factory",
        "hf_text",
        "small_cnns",
        "explainers",
        "executors",
    }
    assert all(info.version == release for info in builtins.values())
    assert plugins.info["scores"].registered == {
        "score": ["noise_score", "variance_score", "linear_probe", "classifier_accuracy"]
    }
    assert plugins.info["executors"].registered == {"executor": ["local", "ray"]}
    assert plugins.info["datasets"].registered == {
        "dataset": ["digits", "mnist", "image_folder", "image_files", "noise", "text_lines"]
    }

    good = plugins.info["GoodPlugin"]
    assert (good.name, good.distribution, good.version) == ("GoodPlugin", "(in-process)", "")
    assert good.registered == {"score": ["twice"], "aggregator": ["halved"]}
    # Registries know who provided each entry, and its description.
    assert plugins.score.entry("two").plugin == "GoodPlugin"
    assert plugins.score.entry("twice").description == "counted twice"
    assert plugins.aggregator.entry("halved").description == "Half the mean."
    assert plugins.aggregator.entry("mean").plugin == "aggregators"
    assert sorted(plugins.score.names()) == [
        "classifier_accuracy",
        "linear_probe",
        "noise_score",
        "twice",
        "variance_score",
    ]


def test_environment_blocking_adds_to_the_argument(monkeypatch):
    monkeypatch.setenv("REPREVAL_BLOCK_PLUGINS", " timm , variants")
    plugins = load_plugins(block=["scores", "timm"])
    assert plugins.blocked == ("timm", "variants", "scores")
    assert plugins.variant.names() == [] and plugins.score.names() == []
    assert {"timm", "variants", "scores"}.isdisjoint(plugins.info)


# ---------------------------------------------------------------------------------------------
# A third-party distribution, installed for real


def _suite(scores, saliency=("gradients",), embedding_aggregators=("mean",)) -> dict:
    data = digits_suite() | {"name": "third-party", "variants": ["random"]}
    data["evaluation"] = {
        "dataset": "held",
        "saliency": list(saliency),
        "embedding_aggregators": list(embedding_aggregators),
        "scores": list(scores),
    }
    return data


def readme_block(caption: str) -> str:
    """The fenced code block that follows the line ```caption``` in README.md (the plugin example)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    match = re.search(rf"^`{re.escape(caption)}`\n```[a-z]*\n(.*?)^```", readme, re.M | re.S)
    assert match, f"README.md has no code block captioned {caption}"
    return match.group(1)


@pytest.mark.slow
def test_the_readme_plugin_distribution_plugs_in(tmp_path):
    """The complete third-party plugin of README.md, built and installed as its own distribution."""
    dist = tmp_path / "repreval-median"
    dist.mkdir()
    (dist / "pyproject.toml").write_text(readme_block("pyproject.toml"))
    (dist / "median_repreval.py").write_text(readme_block("median_repreval.py"))
    site = tmp_path / "site"
    install_offline(site, str(dist))
    assert (site / "median_repreval.py").is_file()

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "REPREVAL_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    env.pop("REPREVAL_BLOCK_PLUGINS", None)

    def repreval(*argv, extra_env=None):
        return subprocess.run(
            [sys.executable, "-m", "repreval", *map(str, argv)],
            capture_output=True,
            text=True,
            env={**env, **(extra_env or {})},
            cwd=tmp_path,
            timeout=300,
        )

    listed = repreval("plugins", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    plugins = {item["name"]: item for item in json.loads(listed.stdout) if "name" in item}
    assert plugins["median"] == {
        "name": "median",
        "distribution": "repreval-median",
        "version": "0.1.0",
        "registered": {"aggregator": ["median"], "score": ["peak_fraction"]},
    }
    assert plugins["scores"]["distribution"] == "repreval"  # the built-ins are still there

    import yaml

    suite = _suite(scores=["noise_score", "peak_fraction"], embedding_aggregators=["mean", "median"])
    suite["variants"] = ["trained", "random"]
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(suite))
    ran = repreval("--block", "timm", "run", "demo.yaml", "--out", "out")  # timm: slow to import, unused
    assert ran.returncode == 0, ran.stderr
    assert "8 computed, 0 already done, 0 failed" in ran.stdout

    boards = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    metrics = {(b["score"], b["embedding_aggregator"]): b for b in boards}
    assert set(metrics) == {
        (score, aggregator) for score in ("noise_score", "peak_fraction") for aggregator in ("mean", "median")
    }
    for aggregator in ("mean", "median"):
        board = metrics[("peak_fraction", aggregator)]
        assert board["higher_is_better"] is False
        rows = board["rows"]
        assert [row["rank"] for row in rows] == [1, 2] and {row["variant"] for row in rows} == {"trained", "random"}
        assert rows[0]["average"] <= rows[1]["average"]  # lower is better: the smallest first
        assert all(0.0 < row["average"] < 1.0 for row in rows)
    assert (
        "peak_fraction · gradients · channels=abs · components=median" in (tmp_path / "out" / "report.md").read_text()
    )

    # Blocking its entry-point name removes it: by option, and by environment.
    blocked = repreval("--block", "timm", "--block", "median", "validate", "demo.yaml")
    assert blocked.returncode == 2
    assert blocked.stderr.strip().splitlines() == [
        "error: demo.yaml: evaluation.embedding_aggregators[1]: unknown aggregator 'median'; "
        "did you mean 'mean' or 'topk_mean'?"
    ]
    listed = repreval("--block", "timm", "plugins", "--format", "json", extra_env={"REPREVAL_BLOCK_PLUGINS": "median"})
    assert listed.returncode == 0, listed.stderr
    items = json.loads(listed.stdout)
    assert "median" not in {item.get("name") for item in items}
    assert items[-1] == {"blocked": ["median", "timm"]}


def test_an_installed_plugin_that_fails_is_named_in_one_line_and_the_others_keep_working(tmp_path):
    """A distribution whose entry point raises at import (a missing dependency) or in its register hook."""
    site = tmp_path / "site"
    for dist, module, body in (
        ("missingdep-plugin", "needs_missing", "import surely_not_installed_module\n"),
        ("raising-plugin", "raises_in_hook", "from repreval.api import hookimpl\n\n\n@hookimpl\n"
         "def register_scores(register):\n    raise RuntimeError('cannot register today')\n"),
    ):  # fmt: skip
        info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[repreval]\n{module} = {module}\n")
        (site / f"{module}.py").write_text(body)
    env = {**os.environ, "PYTHONPATH": str(site)}
    for command in (["plugins"], ["list", "scores"]):
        result = subprocess.run(
            [sys.executable, "-m", "repreval", *command], capture_output=True, text=True, env=env, timeout=120
        )
        assert result.returncode == 0, result.stderr
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 2, result.stderr
        assert any("'needs_missing' (distribution missingdep-plugin 0.1)" in w and "ModuleNotFoundError" in w
                   and "--block needs_missing" in w for w in warnings)  # fmt: skip
        assert any("'raises_in_hook'" in w and "RuntimeError: cannot register today" in w for w in warnings)
        assert "Traceback" not in result.stderr
    assert "noise_score" in result.stdout  # the built-ins still work
    quiet = subprocess.run(
        [sys.executable, "-m", "repreval", "--block", "needs_missing", "--block", "raises_in_hook", "list", "scores"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert quiet.returncode == 0 and "warning" not in quiet.stderr
