"""Suite validation (repreval.suite) and planning (repreval.plan): includes, variables, one-line errors
naming file and key with did-you-mean hints, unit counts and stable unit ids."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
import yaml
from conftest import SHARED, digits_suite, needs_shared

from repreval.errors import ReprevalError
from repreval.plan import make_plan
from repreval.suite import Suite, load_suite, parse_suite

CIFAR_WEIGHTS = SHARED / "cifar10-resnets" / "resnet20-12fca82f.th"


def write(path: Path, data: dict | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------------
# Valid suites


def test_minimal_yaml_suite_parses_with_defaults(plugins, tmp_path):
    path = write(
        tmp_path / "minimal.yaml",
        """\
name: minimal
datasets:
  train: {kind: digits, limit: 300}
  held: {kind: digits, skip: 300, limit: 8}
models:
  ae:
    model: ae:classifier
    train: {dataset: train, epochs: 2}
evaluation:
  dataset: held
  saliency: gradients
  scores: [noise_score, {variance_score: {binarize: true}}]
""",
    )
    suite = load_suite(path, plugins)
    assert isinstance(suite, Suite)
    assert suite.name == "minimal" and suite.seed == 0 and suite.device == "cpu"
    assert suite.output == Path("results/minimal")
    assert set(suite.datasets) == {"train", "held"}
    held = suite.datasets["held"]
    assert (held.kind, held.subset.skip, held.subset.limit, held.subset.seed) == ("digits", 300, 8, 0)
    model = suite.models["ae"]
    assert model.spec == "ae:classifier" and model.weights is None
    assert model.train.dataset == "train" and model.train.options == {"epochs": 2}
    assert [v.label for v in suite.variants] == ["trained", "random"]  # the default
    evaluation = suite.evaluation
    assert [c.label for c in evaluation.saliency] == ["gradients"]  # a single name is a list of one
    assert [c.label for c in evaluation.channel_aggregators] == ["abs"]
    assert [c.label for c in evaluation.embedding_aggregators] == ["mean"]
    assert [c.label for c in evaluation.scores] == ["noise_score", "variance_score[binarize=True]"]
    assert (evaluation.batch_size, evaluation.chunk_size, evaluation.strategy) == (16, None, "auto")
    assert evaluation.memory_budget == 2 * 1024**3
    # No layers listed: the plan probes the source's default layers.
    plan = make_plan(suite, plugins)
    assert plan.layers["ae"] == ("encoder.block1", "encoder.block2")


def test_cli_output_override(plugins, tmp_path):
    path = write(tmp_path / "s.yaml", digits_suite())
    assert load_suite(path, plugins, output=str(tmp_path / "elsewhere")).output == tmp_path / "elsewhere"


@needs_shared
def test_cifar_resnet20_with_published_weights_validates_and_plans(plugins, tmp_path):
    data = digits_suite()
    data["models"] = {"r20": {"model": "cifar:resnet20", "weights": str(CIFAR_WEIGHTS)}}
    path = write(tmp_path / "cifar.yaml", data)
    suite = load_suite(path, plugins)
    assert suite.models["r20"].weights == str(CIFAR_WEIGHTS)
    plan = make_plan(suite, plugins)  # loads the checkpoint into the architecture: it must fit
    assert plan.layers["r20"] == ("layer1", "layer2", "layer3")
    # 2 variants × 3 layers × (gradients + grad_cam) × (noise_score + variance_score)
    assert len(plan.units) == 2 * 3 * 2 * 2


# ---------------------------------------------------------------------------------------------
# include: and ${VAR:-default}


def test_include_merges_relative_to_the_including_file_and_the_includer_wins(plugins, tmp_path, monkeypatch):
    base = digits_suite()
    base["name"] = "from-base"
    base["evaluation"]["scores"] = ["noise_score", "variance_score"]
    base["evaluation"]["batch_size"] = 4
    del base["seed"]
    base["include"] = "common.yaml"  # relative to sub/, not to the top file or the working directory
    write(tmp_path / "suites" / "sub" / "base.yaml", base)
    write(tmp_path / "suites" / "sub" / "common.yaml", {"seed": 7, "description": "from common"})
    # Decoys: a common.yaml beside the top file and in the working directory must not be read.
    write(tmp_path / "suites" / "common.yaml", {"seed": 99, "description": "wrong common"})
    monkeypatch.chdir(tmp_path / "suites")
    top = write(
        tmp_path / "suites" / "main.yaml",
        {
            "include": ["sub/base.yaml"],
            "name": "from-main",
            "evaluation": {"scores": ["variance_score"]},  # lists replace, mappings merge
        },
    )
    suite = load_suite(top, plugins)
    assert suite.name == "from-main"  # the including file wins
    assert suite.seed == 7 and suite.description == "from common"  # nested include, relative to sub/
    assert [c.label for c in suite.evaluation.scores] == ["variance_score"]
    assert [c.label for c in suite.evaluation.saliency] == ["gradients", "grad_cam"]  # kept from base
    assert suite.evaluation.batch_size == 4
    assert set(suite.models) == {"ae"}
    assert "include" not in suite.raw


def test_include_cycle_is_an_error(plugins, tmp_path):
    write(tmp_path / "a.yaml", {"include": "b.yaml", "name": "a"})
    write(tmp_path / "b.yaml", {"include": ["a.yaml"], "seed": 1})
    with pytest.raises(ReprevalError) as caught:
        load_suite(tmp_path / "a.yaml", plugins)
    message = str(caught.value)
    assert "include cycle" in message and "a.yaml -> b.yaml -> a.yaml" in message
    assert "\n" not in message

    write(tmp_path / "self.yaml", {"include": "self.yaml", "name": "self"})
    with pytest.raises(ReprevalError, match="include cycle: self.yaml -> self.yaml"):
        load_suite(tmp_path / "self.yaml", plugins)


def test_missing_include_names_file_and_key(plugins, tmp_path):
    path = write(tmp_path / "s.yaml", {**digits_suite(), "include": "nowhere.yaml"})
    with pytest.raises(ReprevalError) as caught:
        load_suite(path, plugins)
    assert f"{path}: include:" in str(caught.value) and "'nowhere.yaml'" in str(caught.value)


def test_variables_expand_from_the_environment_with_defaults(plugins, tmp_path, monkeypatch):
    monkeypatch.delenv("REPREVAL_TEST_NAME", raising=False)
    monkeypatch.delenv("REPREVAL_TEST_OUT", raising=False)
    monkeypatch.delenv("REPREVAL_TEST_UNSET", raising=False)
    data = digits_suite()
    data["name"] = "${REPREVAL_TEST_UNSET}${REPREVAL_TEST_NAME:-fallback}"  # unset, no default: empty
    data["output"] = "${REPREVAL_TEST_OUT:-runs}/${REPREVAL_TEST_NAME:-fallback}"
    data["description"] = "[${REPREVAL_TEST_UNSET}]"
    path = write(tmp_path / "vars.yaml", data)

    suite = load_suite(path, plugins)
    assert suite.name == "fallback"
    assert suite.output == Path("runs/fallback")
    assert suite.description == "[${REPREVAL_TEST_UNSET}]"  # prose is published: never expanded

    monkeypatch.setenv("REPREVAL_TEST_NAME", "from-env")
    monkeypatch.setenv("REPREVAL_TEST_OUT", "out")
    suite = load_suite(path, plugins)
    assert suite.name == "from-env"
    assert suite.output == Path("out/from-env")
    monkeypatch.setenv("REPREVAL_TEST_OUT", str(tmp_path / "out"))  # a suite file writes below the cwd only
    with pytest.raises(ReprevalError, match="leaves the working directory.*--out"):
        load_suite(path, plugins)


def test_variables_in_included_files_expand_too(plugins, tmp_path, monkeypatch):
    monkeypatch.setenv("REPREVAL_TEST_SCORE", "variance_score")
    base = digits_suite()
    base["evaluation"]["scores"] = ["${REPREVAL_TEST_SCORE:-noise_score}"]
    write(tmp_path / "base.yaml", base)
    path = write(tmp_path / "top.yaml", {"include": "base.yaml"})
    assert [c.label for c in load_suite(path, plugins).evaluation.scores] == ["variance_score"]
    monkeypatch.delenv("REPREVAL_TEST_SCORE")
    assert [c.label for c in load_suite(path, plugins).evaluation.scores] == ["noise_score"]


def test_empty_variable_takes_the_default(plugins, monkeypatch):
    monkeypatch.setenv("REPREVAL_TEST_EMPTY", "")
    data = digits_suite()
    data["name"] = "${REPREVAL_TEST_EMPTY:-fallback}"
    assert parse_suite(data, plugins).name == "fallback"


def test_variable_can_give_an_integer(plugins, monkeypatch):
    monkeypatch.delenv("REPREVAL_TEST_SEED", raising=False)
    data = digits_suite()
    data["seed"] = "${REPREVAL_TEST_SEED:-3}"
    assert parse_suite(data, plugins).seed == 3


# ---------------------------------------------------------------------------------------------
# Errors: one line, FILE: KEY: problem (fix)


def _set(path: str, value):
    """A mutation setting ``a.b.c`` of the suite mapping."""

    def mutate(data, tmp_path):
        *parents, last = path.split(".")
        target = data
        for key in parents:
            target = target[key]
        target[last] = value(tmp_path) if callable(value) else value

    return mutate


def _corrupt_weights(tmp_path: Path) -> str:
    path = tmp_path / "corrupt.th"
    path.write_bytes(b"\x00garbage, not a checkpoint\xff" * 20)
    return str(path)


def _cifar(layers=None, weights=None):
    def model(tmp_path):
        spec = {"model": "cifar:resnet20"}
        if layers:
            spec["layers"] = layers
        if weights:
            spec["weights"] = weights(tmp_path) if callable(weights) else weights
        return spec

    return model


ERRORS = [
    # id, mutation, needs make_plan, key path ("" = the file itself), fragments of the message
    (
        "unknown-top-level-key",
        _set("evalution", {"dataset": "held"}),
        False,
        "",
        ["unknown key 'evalution'", "did you mean 'evaluation'"],
    ),
    ("missing-name", lambda d, t: d.pop("name"), False, "", ["missing required key 'name'"]),
    ("missing-models", lambda d, t: d.pop("models"), False, "", ["missing required key 'models'"]),
    (
        "unknown-dataset-kind",
        _set("datasets.held.kind", "digitz"),
        False,
        "datasets.held.kind",
        ["unknown dataset 'digitz'", "did you mean 'digits'"],
    ),
    (
        "unknown-saliency",
        _set("evaluation.saliency", ["grad_cam", "gradient"]),
        False,
        "evaluation.saliency[1]",
        ["unknown saliency 'gradient'", "did you mean 'gradients'"],
    ),
    (
        "unknown-embedding-aggregator",
        _set("evaluation.embedding_aggregators", ["meen"]),
        False,
        "evaluation.embedding_aggregators[0]",
        ["unknown aggregator 'meen'", "did you mean 'mean'"],
    ),
    (
        "unknown-channel-aggregator",
        _set("evaluation.channel_aggregators", ["abs", "maks"]),
        False,
        "evaluation.channel_aggregators[1]",
        ["unknown aggregator 'maks'", "'max'"],
    ),
    (
        "unknown-score",
        _set("evaluation.scores", ["noise_score", "varience_score"]),
        False,
        "evaluation.scores[1]",
        ["unknown score 'varience_score'", "did you mean 'variance_score'"],
    ),
    (
        "bad-score-option-value",
        _set("evaluation.scores", [{"variance_score": {"binarize": 3}}]),
        False,
        "evaluation.scores[0]",
        ["bad options for score 'variance_score'", "binarize", "3"],
    ),
    (
        "unknown-score-option",
        _set("evaluation.scores", [{"variance_score": {"binarise": True}}]),
        False,
        "evaluation.scores[0]",
        ["bad options for score 'variance_score'", "binarise"],
    ),
    (
        "unknown-variant",
        _set("variants", ["trained", "randmo"]),
        False,
        "variants[1]",
        ["unknown variant 'randmo'", "'random'"],
    ),
    (
        "unknown-model-source",
        _set("models.ae.model", "aee:classifier"),
        False,
        "models.ae.model",
        ["unknown model source 'aee'", "did you mean 'ae'"],
    ),
    (
        "model-without-source",
        _set("models.ae.model", "classifier"),
        False,
        "models.ae.model",
        ["'classifier' is not of the form SOURCE:NAME"],
    ),
    (
        "unknown-model-key",
        _set("models.ae.layer", ["encoder.block1"]),
        False,
        "models.ae",
        ["unknown key 'layer'", "did you mean 'layers'"],
    ),
    (
        "unknown-timm-model",
        _set("models.ae", {"model": "timm:resnet_18", "options": {"input_size": [3, 32, 32]}}),
        True,
        "models.ae.model",
        ["timm has no model 'resnet_18'", "did you mean 'resnet18'"],
    ),
    (
        "unknown-ae-option",
        _set("models.ae.options", {"bottlenek": 3}),
        True,
        "models.ae.model",
        ["unknown option 'bottlenek'", "did you mean 'bottleneck'"],
    ),
    (
        "unknown-probe-layer",
        _set("models.ae", _cifar(layers=["layer1", "layer_1"])),
        True,
        "models.ae.layers[1]",
        ["no layer 'layer_1'", "did you mean 'layer1'"],
    ),
    (
        "missing-weights-file",
        _set("models.ae", _cifar(weights=lambda t: str(t / "nope.th"))),
        False,
        "models.ae.weights",
        ["weights file", "nope.th", "does not exist"],
    ),
    (
        "corrupt-weights-file",
        _set("models.ae", _cifar(weights=_corrupt_weights)),
        True,
        "models.ae.weights",
        ["is not a readable checkpoint", "corrupt.th"],
    ),
    (
        "weights-and-train",
        _set("models.ae.weights", "whatever.th"),
        False,
        "models.ae",
        ["either 'weights' or 'train', not both"],
    ),
    (
        "training-dataset-not-declared",
        _set("models.ae.train.dataset", "trian"),
        False,
        "models.ae.train.dataset",
        ["unknown dataset 'trian'", "did you mean 'train'"],
    ),
    (
        "evaluation-dataset-not-declared",
        _set("evaluation.dataset", "heldout"),
        False,
        "evaluation.dataset",
        ["unknown dataset 'heldout'", "did you mean 'held'"],
    ),
    ("negative-skip", _set("datasets.held.skip", -1), False, "datasets.held.skip", ["skip must not be negative"]),
    ("zero-limit", _set("datasets.held.limit", 0), False, "datasets.held.limit", ["limit must be at least 1"]),
    ("wrong-type", _set("seed", "zero"), False, "seed", ["expected int", "'zero'"]),
    ("unknown-device", _set("device", "tpu"), False, "device", ["unknown device 'tpu'"]),
    (
        "unknown-smoothing-key",
        _set("evaluation.smoothing", {"sampels": 4}),
        False,
        "evaluation.smoothing",
        ["unknown key 'sampels'", "did you mean 'samples'"],
    ),
    (
        "empty-saliency-list",
        _set("evaluation.saliency", []),
        True,
        "evaluation.saliency",
        ["expected a non-empty list of names"],
    ),
]


@pytest.mark.parametrize(
    "mutate, plan, key, fragments", [case[1:] for case in ERRORS], ids=[case[0] for case in ERRORS]
)
def test_errors_are_one_line_naming_file_and_key(plugins, tmp_path, mutate, plan, key, fragments):
    data = digits_suite()
    mutate(data, tmp_path)
    path = write(tmp_path / "broken.yaml", data)
    with pytest.raises(ReprevalError) as caught:
        suite = load_suite(path, plugins)
        if not plan:
            pytest.fail("load_suite accepted the suite")
        make_plan(suite, plugins)
    message = str(caught.value)
    assert message == caught.value.one_line()
    assert "\n" not in message
    assert message.startswith(f"{path}: {key}: " if key else f"{path}: ")
    for fragment in fragments:
        assert fragment in message


def test_plan_errors_without_a_file_name_the_suite(plugins):
    data = digits_suite()
    data["models"]["ae"]["layers"] = ["encoder.blok2"]
    with pytest.raises(
        ReprevalError, match=r"^suite: models\.ae\.layers\[0\]: no layer 'encoder\.blok2'.*'encoder\.block2'"
    ):
        make_plan(parse_suite(data, plugins), plugins)


def test_a_checkpoint_of_another_architecture_is_caught_by_the_plan(plugins, tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3, 3)}, path)
    data = digits_suite()
    data["models"]["ae"] = {"model": "cifar:resnet20", "weights": str(path)}
    suite = parse_suite(data, plugins, path=tmp_path / "s.yaml")
    with pytest.raises(ReprevalError, match=r"models\.ae\.weights: checkpoint does not fit the model: missing"):
        make_plan(suite, plugins)


def test_malformed_yaml_reports_the_line(plugins, tmp_path):
    path = write(tmp_path / "bad.yaml", "name: bad\nseed: 0\ndatasets: @nope\nmodels: {}\n")
    with pytest.raises(ReprevalError) as caught:
        load_suite(path, plugins)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "at line 3, column 11" in message
    assert "\n" not in message

    unclosed = write(tmp_path / "unclosed.yaml", "name: bad\ndatasets:\n  held: {kind: digits\n  other: 3\n")
    with pytest.raises(ReprevalError, match=r"unclosed\.yaml: .* at line \d+, column \d+"):
        load_suite(unclosed, plugins)


def test_a_suite_must_be_a_mapping_and_exist(plugins, tmp_path):
    path = write(tmp_path / "list.yaml", "- name: x\n")
    with pytest.raises(ReprevalError, match=re.escape(f"{path}: a suite must be a YAML mapping")):
        load_suite(path, plugins)
    with pytest.raises(ReprevalError, match="does not exist"):
        load_suite(tmp_path / "missing.yaml", plugins)


def test_unknown_training_option_is_caught_before_the_run(plugins):
    data = digits_suite()
    data["models"]["ae"]["train"]["epochz"] = 2
    with pytest.raises(ReprevalError, match="epochz"):
        make_plan(parse_suite(data, plugins), plugins)


def test_trained_variant_without_weights_is_caught_before_the_run(plugins):
    data = digits_suite()
    data["models"]["ae"] = {"model": "cifar:resnet20", "layers": ["layer1"]}
    with pytest.raises(ReprevalError, match="weights"):
        make_plan(parse_suite(data, plugins), plugins)


# ---------------------------------------------------------------------------------------------
# Plans: unit counts and stable ids


def counting_suite() -> dict:
    data = digits_suite()
    data["models"]["ae"]["layers"] = ["encoder.block2", "encoder.block1"]  # not in depth order
    data["evaluation"].update(
        saliency=["gradients", "activations_x_gradients", "grad_cam"],
        channel_aggregators=["abs"],
        embedding_aggregators=["mean", "var"],
        scores=["noise_score", "variance_score"],
    )
    return data


def test_plan_unit_counts(plugins):
    plan = make_plan(parse_suite(counting_suite(), plugins), plugins)
    # 1 model × 2 variants × 2 layers × (2 non-spatial methods × 1 channel agg + grad_cam)
    #   × (noise_score × 2 embedding aggs + variance_score)
    assert len(plan.units) == 1 * 2 * 2 * 3 * 3 == 36
    assert plan.layers["ae"] == ("encoder.block1", "encoder.block2")  # sorted by depth
    grad_cam = [u for u in plan.units if u.saliency.name == "grad_cam"]
    assert len(grad_cam) == 2 * 2 * 3 and {u.channel_aggregator for u in grad_cam} == {None}
    variance = [u for u in plan.units if u.score.name == "variance_score"]
    assert len(variance) == 2 * 2 * 3 and {u.embedding_aggregator for u in variance} == {None}
    noise = [u for u in plan.units if u.score.name == "noise_score"]
    assert {u.embedding_aggregator for u in noise} == {"mean", "var"}
    assert all(u.higher_is_better for u in plan.units)
    groups = plan.groups()
    assert len(groups) == 2 * 2 * 3  # (variant, layer, saliency, channel aggregator)
    assert sum(len(units) for _, units in groups) == 36
    assert all(len({u.group for u in units}) == 1 for _, units in groups)

    data = counting_suite()
    data["evaluation"]["channel_aggregators"] = ["abs", "mean"]
    data["evaluation"]["scores"].append({"variance_score": {"binarize": True}})
    more = make_plan(parse_suite(data, plugins), plugins)
    assert len(more.units) == 2 * 2 * (2 * 2 + 1) * (2 + 1 + 1) == 80


def _ids(data, plugins) -> list[str]:
    return [unit.id for unit in make_plan(parse_suite(copy.deepcopy(data), plugins), plugins).units]


def test_unit_ids_are_stable_and_change_with_the_data(plugins, tmp_path):
    data = counting_suite()
    ids = _ids(data, plugins)
    assert len(set(ids)) == len(ids) == 36
    assert _ids(data, plugins) == ids  # a second parse
    path = write(tmp_path / "s.yaml", data)
    assert [u.id for u in make_plan(load_suite(path, plugins), plugins).units] == ids  # from a file, too

    # What does not change values leaves the ids alone: output, description.
    same = copy.deepcopy(data)
    same.update(output=str(tmp_path / "other"), description="another description")
    assert _ids(same, plugins) == ids

    # Another evaluation subset, training subset or seed changes every id.
    for change in (
        lambda d: d["datasets"]["held"].update(limit=9),
        lambda d: d["datasets"]["held"].update(skip=301),
        lambda d: d["datasets"]["train"].update(limit=299),
        lambda d: d["models"]["ae"]["train"].update(epochs=3),
        lambda d: d.update(seed=1),
    ):
        changed = copy.deepcopy(data)
        change(changed)
        assert not set(_ids(changed, plugins)) & set(ids)


@needs_shared
def test_the_readme_suite_example_is_valid(plugins, monkeypatch):
    """The full example in README.md ("Suite format") parses and plans, from the project root."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Suite format", 1)[1]
    example = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    suite = parse_suite(yaml.safe_load(example), plugins)
    plan = make_plan(suite, plugins)
    assert set(suite.models) == {"resnet20", "autoencoder", "torchvision-resnet18"}
    assert plan.layers["resnet20"] == ("layer1", "layer2.0.conv1:input", "layer2", "layer3")
    assert len(plan.units) > 0


@pytest.mark.parametrize(
    ("written", "expected"),
    [("4GiB", 4 * 1024**3), ("512 MiB", 512 * 1024**2), (1000, 1000), ("1.5G", int(1.5 * 1024**3))],
)
def test_memory_budget_accepts_sizes(plugins, written, expected):
    data = digits_suite()
    data["evaluation"]["memory_budget"] = written
    assert parse_suite(data, plugins).evaluation.memory_budget == expected


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("memory_budget", "lots", "cannot read 'lots' as a size"),
        ("strategy", "sideways", "unknown strategy 'sideways'"),
    ],
)
def test_bad_engine_options_are_rejected(plugins, key, value, message):
    data = digits_suite()
    data["evaluation"][key] = value
    with pytest.raises(ReprevalError, match=message):
        parse_suite(data, plugins)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1: x\n", "keys must be strings, not int 1"),
        ("name: a\nname: b\n", "key 'name' appears twice"),
        ("x-r: &r [*r]\n", "alias *r refers to a node that contains it"),
        ("x: " + "[" * 500 + "]" * 500 + "\n", "nesting deeper than 64 levels"),
        (
            "".join(f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 9 if i else ["lol"] * 9) + "]\n" for i in range(9)),
            "the document expands to more than 100,000 values",
        ),
        ("name: s\nseed: 100000000000000000000\n", "does not fit in 64 bits"),
        ("name: s\nseed: .nan\n", "expected int, got float nan"),
    ],
)
def test_yaml_that_suites_must_not_hold_is_refused_in_one_line(tmp_path, plugins, text, message):
    from repreval.suite import read_yaml

    path = tmp_path / "suite.yaml"
    path.write_text(text)
    with pytest.raises(ReprevalError, match=re.escape(message)):
        parse_suite(read_yaml(path), plugins, path=path)


def test_merge_keys_may_override_what_they_merge(tmp_path):
    from repreval.suite import load_yaml

    assert load_yaml("a: &a {x: 1, y: 2}\nb: {<<: *a, y: 3}\n")["b"] == {"x": 1, "y": 3}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("output", "/tmp/elsewhere", "leaves the working directory"),
        ("output", "../../up", "leaves the working directory"),
        ("name", "../..", "is not a plain name"),
    ],
)
def test_a_suite_file_cannot_write_outside_the_working_directory(plugins, tmp_path, key, value, message):
    data = digits_suite()
    data[key] = value
    with pytest.raises(ReprevalError, match=message):
        load_suite(write(tmp_path / "s.yaml", data), plugins)


def test_includes_stay_inside_the_suite_folder_and_never_echo_other_files(plugins, tmp_path, monkeypatch):
    secret = tmp_path / "secret.yaml"
    secret.write_text("the-secret-first-line: 1\n")
    folder = tmp_path / "suites"
    folder.mkdir()
    monkeypatch.chdir(folder)
    data = {**digits_suite(), "include": "../secret.yaml"}
    with pytest.raises(ReprevalError) as caught:
        load_suite(write(folder / "s.yaml", data), plugins)
    assert "outside the suite's folder" in str(caught.value)
    assert "the-secret-first-line" not in str(caught.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lower": None}, "lower must name a variant"),
        ({"higher": "traned"}, "claim compares variant 'traned', which the suite does not run"),
        ({"foo": 1}, "unknown key 'foo'"),
    ],
)
def test_report_claims_are_checked_like_the_rest_of_the_suite(plugins, tmp_path, change, message):
    data = digits_suite()
    greater = {"metric": {"score": "noise_score"}, "higher": "trained", "lower": "random", **change}
    data["report"] = {"claims": [{"claim": "x", "greater": greater}]}
    with pytest.raises(ReprevalError, match=re.escape(message)):
        load_suite(write(tmp_path / "s.yaml", data), plugins)


def test_report_metrics_name_scores_the_suite_computes(plugins, tmp_path):
    data = digits_suite()
    data["report"] = {"curves": [{"score": "nois_score"}]}
    with pytest.raises(ReprevalError, match="reads score 'nois_score', which the suite does not compute.*noise_score"):
        load_suite(write(tmp_path / "s.yaml", data), plugins)


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("evaluation", "memory_budget", "1.2.3GiB", "cannot read '1.2.3GiB' as a size"),
        ("evaluation", "smoothing", {"samples": 2, "sigma": float("nan")}, "expected a finite number, got nan"),
        ("held", "drift", float("nan"), "expected a finite number, got nan"),
        ("evaluation", "scores", [], "expected a non-empty list"),
        ("evaluation", "saliency", [], "expected a non-empty list"),
    ],
)
def test_values_that_would_run_and_give_nan_or_nothing_are_refused(plugins, tmp_path, section, key, value, message):
    data = digits_suite()
    target = data["datasets"]["held"] if section == "held" else data[section]
    target[key] = value
    with pytest.raises(ReprevalError, match=re.escape(message)):
        load_suite(write(tmp_path / "s.yaml", data), plugins)
