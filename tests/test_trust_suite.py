"""Issue 22, "the suite is data": environment values are used but never stored or published (items 7), every
YAML path is strict (item 8), claims are checked at validate (item 10), and every number a suite gives is
bounded before anything is allocated (item 9)."""

from __future__ import annotations

import copy
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from conftest import digits_suite

from repreval.cli import main
from repreval.errors import ReprevalError
from repreval.sizes import parse_bytes
from repreval.suite import load_suite, load_yaml, parse_suite

SECRET = "s3cr3t-XyZ-4711"
OTHER_SECRET = "s3cr3t-QwE-0815"


def one_line_error(plugins, data: dict, *fragments: str) -> str:
    """The one-line error ``data`` is refused with at validate, checked to hold ``fragments``."""
    with pytest.raises(ReprevalError) as caught:
        parse_suite(data, plugins)
    message = caught.value.one_line()
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# ---------------------------------------------------------------------------------------------
# Item 7: secrets


def _images(folder: Path) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    for i in range(4):
        pixels = (torch.rand(28, 28, generator=generator) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"digit_{i}.png")


def _files_holding(folder: Path, text: str) -> list[str]:
    """Files below ``folder`` (and the members of zips there) whose bytes hold ``text``."""
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and text.encode() in path.read_bytes():
            found.append(str(path))
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                found += [f"{path}:{n}" for n in archive.namelist() if text.encode() in archive.read(n)]
    return found


def test_environment_values_are_used_but_never_stored_or_published(capsys, tmp_path, monkeypatch, one_thread):
    """``${SECRET_TOKEN}`` in the description and in a dataset option: the run reads the images the value
    names, yet no file of the results folder, its export or its site holds the value; another value is a run
    configured otherwise."""
    for secret in (SECRET, OTHER_SECRET):
        _images(tmp_path / secret)
    suite = digits_suite()
    suite["description"] = "token ${SECRET_TOKEN} here"
    suite["datasets"]["held"] = {"kind": "image_files", "options": {"paths": f"{tmp_path}/${{SECRET_TOKEN}}/*.png"}}
    suite["evaluation"]["saliency"] = ["gradients"]
    suite["evaluation"]["scores"] = ["noise_score"]
    suite["variants"] = ["trained"]
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    out = tmp_path / "out"
    monkeypatch.setenv("SECRET_TOKEN", SECRET)
    assert main(["run", str(path), "--out", str(out)]) == 0, capsys.readouterr().err
    assert len(list((out / "records").glob("*.json"))) == 1
    stored = yaml.safe_load((out / "suite.yaml").read_text())
    assert stored["description"] == "token ${SECRET_TOKEN} here"  # as written
    assert stored["datasets"]["held"]["options"]["paths"].endswith("${SECRET_TOKEN}/*.png")
    assert main(["export", str(out), "--out", str(out / "r.zip")]) == 0, capsys.readouterr().err
    assert main(["publish", str(out), "--out", str(out / "site")]) == 0, capsys.readouterr().err
    printed = capsys.readouterr()
    assert _files_holding(out, SECRET) == []
    assert SECRET not in printed.out + printed.err

    monkeypatch.setenv("SECRET_TOKEN", OTHER_SECRET)  # the same suite, another value: other numbers
    assert main(["run", str(path), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "environment" in error and "--force-new" in error, error
    assert SECRET not in error and OTHER_SECRET not in error


def test_variables_expand_for_the_computation_and_stay_as_written_in_raw(plugins, monkeypatch):
    monkeypatch.setenv("REPREVAL_TEST_SEED", "7")
    data = digits_suite() | {"seed": "${REPREVAL_TEST_SEED}", "description": "${REPREVAL_TEST_SEED:-none}"}
    suite = parse_suite(copy.deepcopy(data), plugins)
    assert suite.seed == 7 and suite.raw["seed"] == "${REPREVAL_TEST_SEED}"
    assert suite.description == "${REPREVAL_TEST_SEED:-none}"  # published text is never expanded
    first = suite.environment
    monkeypatch.setenv("REPREVAL_TEST_SEED", "8")
    assert parse_suite(copy.deepcopy(data), plugins).environment not in ("", first)
    assert parse_suite(digits_suite(), plugins).environment == ""  # no variable: nothing added


# ---------------------------------------------------------------------------------------------
# Item 8: strict YAML everywhere


def _laughs(levels: int) -> str:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines)


@pytest.mark.parametrize(
    "default, problem",
    [
        (_laughs(9), "expands to more than"),  # 9**9 values
        ("[" * 3000 + "]" * 3000, "nesting deeper than"),
        ("1: 2", "keys must be strings"),
    ],
    ids=["billion-laughs", "deep", "int-key"],
)
def test_environment_defaults_are_read_strictly(plugins, default, problem):
    data = digits_suite() | {"seed": "${REPREVAL_UNSET_VARIABLE:-" + default + "}"}
    one_line_error(plugins, data, "seed", "REPREVAL_UNSET_VARIABLE", problem)


def test_chained_anchors_are_bounded_by_the_expanded_depth(tmp_path, plugins):
    """25 anchors, each 60 levels deep around the one before: every node is shallow as written, 1,500 deep
    once the aliases are expanded."""
    lines = ["x-0: &a0 " + "[" * 60 + "1" + "]" * 60]
    lines += [f"x-{i}: &a{i} " + "[" * 60 + f"*a{i - 1}" + "]" * 60 for i in range(1, 25)]
    path = tmp_path / "chain.yaml"
    path.write_text(yaml.safe_dump(digits_suite()) + "\n".join(lines) + "\n")
    with pytest.raises(ReprevalError, match="nesting deeper than 64 levels"):
        load_suite(path, plugins)


def test_merge_keys_go_through_the_string_key_check(tmp_path, plugins):
    with pytest.raises(yaml.YAMLError, match="keys must be strings"):
        load_yaml("a: {<<: {1: 2}, b: 3}")
    path = tmp_path / "merge.yaml"
    path.write_text(yaml.safe_dump(digits_suite()) + "x-m: {<<: {1: 2}, b: 3}\n")
    with pytest.raises(ReprevalError, match="keys must be strings"):
        load_suite(path, plugins)
    assert load_yaml("base: &b {x: 1}\nc: {<<: *b, x: 2, y: 3}")["c"] == {"x": 2, "y": 3}  # merging still works


def test_deep_in_memory_suites_are_refused_not_recursed(plugins):
    nested: dict = {}
    deep = nested
    for _ in range(3000):
        deep["x"] = {}
        deep = deep["x"]
    one_line_error(plugins, digits_suite() | {"x-deep": nested}, "nesting deeper than")


@pytest.mark.parametrize("number", ["1" * 5000, "1" + ":0" * 3000, "0x" + "f" * 5000, "-" + "9" * 30])
def test_integers_past_64_bits_are_refused_as_the_file_is_read(tmp_path, plugins, number):
    """Python refuses to print integers past 4,300 digits: they must not get as far as an error message."""
    for text in (f"seed: {number}", f"layers: [{number}]", f"report: {{title: {number}}}"):
        with pytest.raises(yaml.YAMLError, match="does not fit in 64 bits"):
            load_yaml(text)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(digits_suite()) + f"x-n: {number}\n")
    with pytest.raises(ReprevalError, match="does not fit in 64 bits"):
        load_suite(path, plugins)


def test_includes_outside_never_quote_the_file(tmp_path, plugins):
    (tmp_path / "passwd").symlink_to("/etc/passwd")
    for include in ("/etc/passwd", "passwd"):
        path = tmp_path / "s.yaml"
        path.write_text(yaml.safe_dump(digits_suite() | {"include": include}))
        with pytest.raises(ReprevalError, match="outside the suite's folder") as caught:
            load_suite(path, plugins)
        assert ":0:0:" not in caught.value.one_line() and "/bin/" not in caught.value.one_line()


# ---------------------------------------------------------------------------------------------
# Item 10: claims


def _with_claim(check: dict, suite: dict | None = None) -> dict:
    data = suite or digits_suite()
    data["report"] = {"claims": [{"claim": "c", **check}]}
    return data


@pytest.mark.parametrize("threshold", [float("nan"), float("inf"), True, "0.5"])
@pytest.mark.parametrize("kind", ["above", "below"])
def test_claim_thresholds_are_finite_numbers(plugins, kind, threshold):
    metric = {"score": "noise_score", "saliency": "gradients"}
    one_line_error(plugins, _with_claim({kind: {"metric": metric, "threshold": threshold}}), "threshold")


@pytest.mark.parametrize("within", [float("nan"), float("-inf"), False])
def test_replicates_within_is_a_finite_number(plugins, within):
    data = _with_claim({"replicates": {"within": within}})
    data["report"]["replicates"] = {"metric": {"score": "noise_score", "saliency": "gradients"}}
    one_line_error(plugins, data, "within")


def test_correlation_index_is_not_a_bool(plugins):
    data = _with_claim({"correlation": {"index": True, "sign": "positive"}})
    metric = {"score": "noise_score", "saliency": "gradients"}
    data["report"]["correlations"] = [{"x": metric, "y": metric}, {"x": metric, "y": metric}]
    one_line_error(plugins, data, "index")


def test_a_metric_matching_two_scores_is_refused_at_validate_with_the_right_fix(plugins):
    suite = digits_suite()
    suite["evaluation"]["saliency"] = ["gradients"]
    suite["evaluation"]["scores"] = [
        {"variance_score": {"binarize": True}},
        {"variance_score": {"sparsity_aware": True}},
    ]
    message = one_line_error(plugins, _with_claim({"above": {"metric": "variance_score", "threshold": 0}}, suite))
    assert "variance_score[binarize=True]" in message and "variance_score[sparsity_aware=True]" in message
    assert "score: 'variance_score[binarize=True]'" in message  # the fix names what tells them apart
    saliencies = one_line_error(plugins, _with_claim({"above": {"metric": "noise_score", "threshold": 0}}))
    assert "gradients" in saliencies and "grad_cam" in saliencies and "saliency: 'grad_cam'" in saliencies
    exact = _with_claim({"above": {"metric": {"score": "noise_score", "saliency": "grad_cam"}, "threshold": 0}})
    assert parse_suite(exact, plugins).report.claims[0].threshold == 0.0


# ---------------------------------------------------------------------------------------------
# Item 9: every number a suite gives, bounded

HUGE = 10**400
HOSTILE = [HUGE, -(10**400), -1, float("nan"), float("inf"), True, "many", [1], {"a": 1}]


def _set(data: dict, dotted: str, value) -> dict:
    *parents, key = dotted.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[key] = value
    return data


@pytest.mark.parametrize(
    "key",
    [
        "seed",
        "datasets.held.limit",
        "datasets.held.skip",
        "datasets.held.seed",
        "datasets.held.drift",
        "models.ae.seed",
        "models.ae.seeds",
        "evaluation.batch_size",
        "evaluation.chunk_size",
        "evaluation.memory_budget",
        "evaluation.sample_components",
        "evaluation.smoothing.samples",
        "evaluation.smoothing.sigma",
    ],
)
def test_hostile_numbers_get_one_line(plugins, key):
    values = [*HOSTILE, *([[HUGE], [-1], [True], []] if key.endswith("seeds") else [])]
    values = [value for value in values if not (key.endswith("seeds") and value == [1])]
    if key.endswith("memory_budget"):
        values += ["1" * 400, "1" * 400 + "GiB", "9" * 30 + ".5"]
    if key.endswith(("drift", "sigma")):
        values.remove(-1)
        values.append(-0.5)
    for value in values:
        data = digits_suite()
        data["evaluation"].setdefault("smoothing", {})
        if key.startswith("models.ae.seed"):
            data["models"]["ae"].pop("seed", None)
        message = one_line_error(plugins, _set(data, key, value))
        assert key.rsplit(".", 1)[-1] in message, (key, value, message)


def test_huge_but_valid_counts_are_refused_before_allocation(plugins):
    data = digits_suite()
    data["evaluation"]["smoothing"] = {"samples": 10**12}
    one_line_error(plugins, data, "samples")
    assert parse_suite(digits_suite() | {"seed": 2**32 + 1}, plugins).seed == 2**32 + 1


@pytest.mark.parametrize("value", ["1" * 400, "1" * 400 + "GiB", "1e9999", "nan", True, -1, 0, "0.0001"])
def test_parse_bytes_gives_one_line(value):
    with pytest.raises(ReprevalError):
        parse_bytes(value, "memory_budget")


def test_parse_bytes_still_reads_sizes():
    assert parse_bytes("4GiB") == 4 * 1024**3 and parse_bytes("1.5 KiB") == 1536 and parse_bytes(123) == 123
