"""Hostile fuzzing of the trust model (issue 22): a stranger's suites, result folders, zips and data files.

Each case runs ``repreval`` commands in a forked child (its own session, cwd = a fresh case folder holding a
few "user files", stdin a pipe nobody writes to, a memory limit) with a timeout, and is checked for:

- no traceback; exit codes 0/2 (1 too for ``run``); an exit 2 printed as ``error:`` lines only (one for every
  command but ``leaderboard``, which names each damaged record);
- no hang (the timeout, default 20 s: the child's whole process group is killed);
- nothing created, modified or deleted outside the case folder: the sentinel tree (a fake $HOME, $TORCH_HOME,
  $HF_HOME and $XDG_CACHE_HOME, a folder beside the case, a "passwd" file) is compared before and after; code
  a suite smuggles in writes a marker there;
- the user files in the case folder untouched, ``$FUZZ_SECRET``'s value in no file, and no output quoting a
  file outside (the sentinel "passwd" line, or its hex).

Reproduce from the repository root, with the project's environment active::

    python benchmarks/fuzz_hostile.py                        # 1,500 suites + 300 folders/zips/data files
    python benchmarks/fuzz_hostile.py --suites 100 --folders 30 --seed 1
    python benchmarks/fuzz_hostile.py --only code_exec       # one attack class
    python benchmarks/fuzz_hostile.py --case folders:17      # one case again; its folder is kept and printed

It prints the count of cases and failures per attack class, then every failure with its reproducer.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import random
import resource
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SECRET = "fuzz-secret-Zq8wK"  # $FUZZ_SECRET: its value must never be written to a file
PASSWD = "root:x:0:0:sentinel-passwd-line:/root:/bin/sh\n"  # a file outside: never quoted
PASSWD_HEX = PASSWD[:4].encode().hex()  # "root" as a bad magic number: 726f6f74
USER_FILES = {".env.local": "TOKEN=mine\n", ".pre-commit-config.yaml": "repos: []\n", "notes.txt": "mine\n"}
HOSTILE_TEXT = [
    "[/x]",
    "[bold]b",
    "a[b]",
    ":x:",
    ":smile:",
    "\x1b[31mred",
    "\u202egnp.exe",
    "a\nb",
    "\\",
    "${FUZZ_SECRET}",
]
ODD_NUMBERS = [10**400, -(10**12), 10**12, 2**63, -1, 0, float("nan"), float("inf"), 1e-300, "9" * 400, "1e999"]

BASE: dict = yaml.safe_load((Path(__file__).parent / "fuzz_base.yaml").read_text())  # the suite both fuzzers mutate

#: the smallest suite ``run`` computes in about a second (one untrained model, one unit)
RUN_BASE: dict = {
    "name": "fuzzrun",
    "seed": 0,
    "datasets": {"held": {"kind": "digits", "limit": 2}},
    "models": {"ae": {"model": "ae:classifier", "options": {"bottleneck": 4}, "layers": ["encoder.block2"]}},
    "variants": ["random"],
    "evaluation": {
        "dataset": "held",
        "batch_size": 2,
        "saliency": ["gradients"],
        "channel_aggregators": ["abs"],
        "embedding_aggregators": ["mean"],
        "scores": ["noise_score"],
    },
}


@dataclass
class Case:
    """Commands run one after another in one child, with cwd = the case folder."""

    attack: str
    commands: list[list[str]]
    files: dict[str, str | bytes] = field(default_factory=dict)  # written into the case folder first
    setup: Callable[[Path, Path], None] | None = None  # (case folder, sentinel root): links, FIFOs, modes
    as_nobody: bool = False  # run as an unprivileged user (read-only folders mean nothing to root)
    note: str = ""


@dataclass
class Outcome:
    """A case's result: the problems found (none when it held)."""

    case: Case
    label: str
    problems: list[str]
    seconds: float


# -- the sentinel tree -------------------------------------------------------------------------------------


def make_root(base: Path | None = None) -> Path:
    """A fresh sentinel tree; the environment points every cache and $HOME into it."""
    root = Path(tempfile.mkdtemp(prefix="fuzz-sentinel-", dir=base)).resolve()
    for name in ("home/.cache", "torch_home", "hf_home", "xdg_cache", "outside", "logs", "cache"):
        (root / name).mkdir(parents=True, exist_ok=True)
    (root / "passwd").write_text(PASSWD)
    (root / "outside" / "keep.txt").write_text("outside\n")
    (root / "home" / ".bashrc").write_text("# mine\n")
    os.chmod(root, 0o755)
    return root


def _environment(root: Path) -> dict[str, str]:
    return {
        "HOME": str(root / "home"),
        "TORCH_HOME": str(root / "torch_home"),
        "HF_HOME": str(root / "hf_home"),
        "XDG_CACHE_HOME": str(root / "xdg_cache"),
        "REPREVAL_CACHE": str(root / "cache"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "FUZZ_SECRET": SECRET,
        "OMP_NUM_THREADS": "1",
        "RAY_ADDRESS": "",
    }


SKIPPED = {"case", "logs", "cache"}  # the case's own folder, the harness's logs, the trained-model cache


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every entry below ``root`` (links not followed) but the case folder, logs and cache: kind, size, mtime."""
    seen: dict[str, tuple] = {}
    for directory, folders, files in os.walk(root):
        if Path(directory) == root:
            folders[:] = [f for f in folders if f not in SKIPPED]
        for name in folders + files:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            size = 0 if _stat_is_dir(info.st_mode) else info.st_size
            seen[os.path.relpath(path, root)] = (info.st_mode, size, info.st_mtime_ns)
    return seen


def _stat_is_dir(mode: int) -> bool:
    import stat

    return stat.S_ISDIR(mode)


def _keep_baseline(root: Path) -> None:
    """Copy the sentinel tree as it is now: :func:`restore_root` returns to it after a failed case."""
    baseline = root.with_name(root.name + "-baseline")
    shutil.rmtree(baseline, ignore_errors=True)
    shutil.copytree(root, baseline, symlinks=True, ignore=lambda folder, names: SKIPPED if folder == str(root) else ())


def _restore_root(root: Path) -> None:
    """Undo what a failed case did outside its folder: the tree as :func:`keep_baseline` saw it."""
    for name in os.listdir(root):
        path = root / name
        if name in SKIPPED:
            continue
        if path.is_dir() and not path.is_symlink():
            _chmod_all(path)
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    shutil.copytree(root.with_name(root.name + "-baseline"), root, symlinks=True, dirs_exist_ok=True)


def remove_root(root: Path) -> None:
    """The sentinel tree and its baseline, gone."""
    _chmod_all(root)
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(root.with_name(root.name + "-baseline"), ignore_errors=True)


def _chmod_all(path: Path) -> None:
    """Make every folder below ``path`` writable again (read-only cases), links left alone."""
    for directory, folders, _ in os.walk(path):
        for name in folders:
            folder = os.path.join(directory, name)
            if not os.path.islink(folder):
                os.chmod(folder, 0o755)


# -- running one case --------------------------------------------------------------------------------------

NOBODY = 65534
MARK = "\x1e"  # starts the child's lines that name each command and its exit code


def _prepare(case: Case, root: Path) -> Path:
    work = root / "case"
    if work.exists():
        _chmod_all(work)
        shutil.rmtree(work)
    work.mkdir()
    for name, text in USER_FILES.items():
        (work / name).write_text(text)
    for name, content in case.files.items():
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    if case.setup:
        case.setup(work, root)
    if case.as_nobody:
        for directory, folders, files in os.walk(work):
            for name in [".", *folders, *files]:
                os.chown(os.path.join(directory, name), NOBODY, NOBODY, follow_symlinks=False)
    return work


def _child(case: Case, work: Path, out: int, err: int, memory: int) -> None:  # pragma: no cover - forked
    code = 99
    try:
        os.setsid()
        read_end, _write_end = os.pipe()  # stdin nobody writes: a prompt blocks (a hang), never reads EOF
        os.dup2(read_end, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - not pytest's capture objects
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        os.chdir(work)
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        if case.as_nobody:
            _import_all()  # the interpreter's own files are closed to that user here (it lives under /root)
            os.environ["REPREVAL_CACHE"] = str(work / ".cache-nobody")
            os.setgid(NOBODY)
            os.setuid(NOBODY)
        from repreval.cli import main

        codes = []
        for argv in case.commands:
            if argv[0] == "run" and "--threads" not in argv:
                argv = [*argv, "--threads", "1"]  # a forked child: no OpenMP pool of its own
            print(f"{MARK}{' '.join(argv)}", flush=True)
            print(f"{MARK}{' '.join(argv)}", file=sys.stderr, flush=True)
            try:
                codes.append(main(argv))
            except SystemExit as exc:
                codes.append(exc.code if isinstance(exc.code, int) else 2)
            sys.stdout.flush()
            print(f"{MARK}exit {codes[-1]}", file=sys.stderr, flush=True)
        code = max(codes, key=lambda c: (c not in (0, 1, 2), c))
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _import_all() -> None:
    """Import what any command may import lazily, while still root."""
    import importlib

    for name in ["shlex", "encodings.unicode_escape", "encodings.idna", "encodings.cp437", "encodings.latin_1",
                 "encodings.utf_16", "encodings.ascii", "zipfile", "gzip", "csv", "matplotlib.pyplot", "jinja2",
                 "repreval.render.site", "repreval.render.report", "repreval.render.plots", "repreval.folders",
                 "repreval.runs", "repreval.runner", "repreval.plan", "repreval.leaderboard"]:  # fmt: skip
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def run_case(
    case: Case, root: Path, label: str, *, timeout: float = 20.0, memory_gib: float = 4.0, restore: bool = True
) -> Outcome:
    """Run ``case`` in a forked child and check it; the sentinel tree is restored after a failure."""
    work = _prepare(case, root)
    before = _snapshot(root)
    logs = root / "logs"
    out_path, err_path = logs / "stdout", logs / "stderr"
    out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    if case.as_nobody:
        os.fchown(out, NOBODY, NOBODY)
        os.fchown(err, NOBODY, NOBODY)
    memory = _virtual_memory() + int(memory_gib * 2**30)
    sys.stdout.flush()
    sys.stderr.flush()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        _child(case, work, out, err, memory)
    os.close(out)
    os.close(err)
    status, hung = _wait(pid, timeout)
    seconds = time.monotonic() - started
    problems = []
    if hung:
        problems.append(f"hang: still running after {timeout:.0f} s")
    stdout = out_path.read_text(errors="replace")
    stderr = err_path.read_text(errors="replace")
    if not hung:
        problems += _check_output(case, status, stdout, stderr)
    problems += _check_files(root, work, before)
    if problems and restore:
        _restore_root(root)
    return Outcome(case, label, problems, seconds)


def _virtual_memory() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _wait(pid: int, timeout: float) -> tuple[int, bool]:
    """The child's wait status, or kill its process group after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            _kill_group(pid)  # what it left running (a shell, a server)
            return status, False
        time.sleep(0.01)
    _kill_group(pid)
    _, status = os.waitpid(pid, 0)
    return status, True


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _check_output(case: Case, status: int, stdout: str, stderr: str) -> list[str]:
    problems = []
    if os.WIFSIGNALED(status):
        return [f"crash: killed by signal {os.WTERMSIG(status)}: {stderr[-300:]!r}"]
    code = os.WEXITSTATUS(status)
    if "Traceback" in stdout + stderr or code == 99:
        problems.append("traceback: " + _last_lines(stderr, 3))
    sections = stderr.split(MARK)[1:]
    if not sections:
        problems.append(f"harness: the child printed no command marker: {_last_lines(stderr, 3)}")
    for command, text, ending in zip(case.commands, sections[::2], sections[1::2], strict=False):
        code = int(ending.split()[1]) if ending.startswith("exit ") else 99
        if code not in ({0, 1, 2} if command[0] == "run" else {0, 2}):
            problems.append(f"exit: {command[0]} exited {code}: {_last_lines(text, 2)}")
        lines = [line for line in text.splitlines()[1:] if line.strip()]
        errors = [line for line in lines if line.startswith("error: ")]
        several = len(errors) != len(lines) or len(errors) > 1  # leaderboard: one per damaged record, and info
        if code == 2 and (not errors or (several and command[0] != "leaderboard")):
            problems.append(f"lines: {command[0]} exited 2 printing {len(lines)} lines: {lines[:4]!r}"[:500])
    if "sentinel-passwd" in stdout + stderr or PASSWD_HEX in stdout + stderr:
        problems.append("quote: output quotes a file outside the working directory")
    return problems


def _last_lines(text: str, count: int) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-count:])[-400:]


def _check_files(root: Path, work: Path, before: dict) -> list[str]:
    problems = []
    after = _snapshot(root)
    created = sorted(set(after) - set(before))
    deleted = sorted(set(before) - set(after))
    changed = sorted(p for p in set(after) & set(before) if after[p] != before[p] and not Path(root, p).is_dir())
    if created or deleted or changed:
        problems.append(f"outside: created {created[:4]}, deleted {deleted[:4]}, changed {changed[:4]}")
    for name, text in USER_FILES.items():
        path = work / name
        if not path.is_file() or path.read_text() != text:
            problems.append(f"user file: {name} deleted or changed in the working directory")
    leaked = [str(p.relative_to(work)) for p in _regular_files(work) if SECRET.encode() in _read_head(p)]
    if leaked:
        problems.append(f"secret: $FUZZ_SECRET's value written to {leaked[:3]}")
    return problems


def _regular_files(folder: Path) -> Iterator[Path]:
    import stat

    for directory, _, files in os.walk(folder):
        for name in files:
            path = Path(directory, name)
            try:
                if stat.S_ISREG(path.lstat().st_mode):
                    yield path
            except OSError:
                continue


def _read_head(path: Path, size: int = 4 * 2**20) -> bytes:
    try:
        with open(path, "rb") as file:
            data = file.read(size)
    except OSError:
        return b""
    if path.suffix == ".zip":
        try:
            with zipfile.ZipFile(path) as archive:
                data += b"".join(archive.read(i)[:size] for i in archive.infolist() if i.file_size < size)
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError):
            pass
    return data


# -- suites ------------------------------------------------------------------------------------------------


def _dump(data) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


def _copy(data):
    return json.loads(json.dumps(data))


def _paths_of(data, prefix=()) -> Iterator[tuple]:
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths_of(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _paths_of(value, (*prefix, index))


def _set_at(data, path: tuple, value) -> None:
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value


def _odd_value(rng: random.Random):
    return rng.choice(
        [
            None,
            True,
            rng.choice(ODD_NUMBERS),
            rng.randint(-(2**80), 2**80),
            rng.choice(HOSTILE_TEXT),
            rng.choice(["../../..", "/etc/passwd", "1.2.3GiB", "", "torch:os:system", "timm:nope", "-1", "/**/*"]),
            [rng.randint(-5, 5) for _ in range(rng.randint(0, 3))],
            {rng.choice(HOSTILE_TEXT): 1},
        ]
    )


def _validate(text: str, files: dict | None = None, folder: str = "") -> tuple[list[list[str]], dict]:
    suite = f"{folder}suite.yaml"
    return [["validate", suite]], {suite: text, **(files or {})}


def _mutation(rng: random.Random, root: Path) -> Case:
    data = _copy(BASE)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice([p for p in _paths_of(data) if p])
        action = rng.choice(["replace", "replace", "delete", "add"])
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        if action == "delete":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[rng.choice(HOSTILE_TEXT + ["unknown"])] = _odd_value(rng)
        else:
            parent[path[-1]] = _odd_value(rng)
    commands, files = _validate(_dump(data))
    return Case("mutation", commands, files)


def _payload_python(root: Path, tag: str) -> str:
    return f"import pathlib\npathlib.Path({str(root / 'outside')!r}, 'PWNED-{tag}').write_text('x')\n"


def _payload_shell(root: Path, tag: str) -> str:
    return f"touch {root / 'outside'}/PWNED-{tag}"


CODE_EXEC_NAMES = [
    "torch.fx.graph_module:reduce_graph_module",
    "tqdm.__main__:main",
    "typer.__main__:main",
    "numpy.f2py.__main__:main",
    "torch.utils.model_dump.__main__:main",
    "os:system",
    "subprocess:getoutput",
    "builtins:exec",
    "code:interact",
    "pdb:run",
    "runpy:run_path",
    "importlib:import_module",
    "torch.hub:load",
    "torch:load",
    "pickle:loads",
    "torch.utils.cpp_extension:load_inline",
    "stranger_module:Net",
    "torchvision.models:get_model",
    "torch.nn:Module",
    "torch.nn.modules.module:Module",
]
SHADOWED = ["torchvision", "timm", "transformers", "sklearn", "PIL", "matplotlib", "jinja2", "scipy", "safetensors"]


def _code_exec(rng: random.Random, root: Path) -> Case:
    tag = f"{rng.randrange(10**9)}"
    python, shell = _payload_python(root, tag), _payload_shell(root, tag)
    stranger = {f"stranger/{name}.py": python for name in SHADOWED}
    stranger["stranger/stranger_module.py"] = python + "import torch\nclass Net(torch.nn.Linear):\n    pass\n"
    kind = rng.choice(["torch", "torch", "torch", "shadow", "hf"])
    data = _copy(BASE)
    model = data["models"]["ae"]
    if kind == "torch":
        name = rng.choice(CODE_EXEC_NAMES)
        kwargs = rng.choice(
            [
                {"import_block": python, "body": {}},
                {"command": shell},
                {"cmd": shell},
                {"source": python},
                {"path_name": str(root / "outside" / "x.py")},
                {"name": "stranger_module"},
                {"repo_or_dir": str(root / "outside"), "model": "x", "source": "local"},
                {"weights": "DEFAULT"},
                {},
            ]
        )
        model.update(model=f"torch:{name}", options={"kwargs": kwargs, "input_size": [1, 28, 28]})
        model.pop("layers") if rng.random() < 0.5 else None
    elif kind == "hf":
        config = {"model_type": "fuzzcustom", "auto_map": {"AutoConfig": "modeling.C", "AutoModel": "modeling.M"}}
        stranger["stranger/model/config.json"] = json.dumps(config)
        stranger["stranger/model/modeling.py"] = python
        stranger["stranger/model/tokenizer_config.json"] = json.dumps(
            {"auto_map": {"AutoTokenizer": ["modeling.T", None]}}
        )
        model.update(model="hf:./model", options={})
        model.pop("train")
        data["datasets"]["held"] = {"kind": "text_lines", "options": {"path": "texts.txt"}}
        stranger["stranger/texts.txt"] = "a\nb\n"
        data["variants"] = ["random"]
        data.pop("report")
    commands, files = _validate(_dump(data), stranger, folder="stranger/")
    if rng.random() < 0.2:
        commands = [["run", "stranger/suite.yaml", "--out", "out"]]
    return Case("code_exec", commands, files, note=kind)


def _billion_laughs(levels: int = 9, width: int = 9) -> str:
    lines = ['a0: &a0 ["lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "{" + ", ".join(lines) + "}"


def _env_default(rng: random.Random, root: Path) -> Case:
    depth = rng.choice([50, 300, 3000, 20000])
    default = rng.choice(
        [
            _billion_laughs(rng.randint(4, 10), rng.randint(2, 10)),
            "[" * depth + "]" * depth,
            "{a: " * depth + "1" + "}" * depth,
            "{<<: {1: 2}, b: 3}",
            "!!python/object/apply:os.system ['" + _payload_shell(root, "env") + "']",
            "${UNSET_B:-${UNSET_C:-${FUZZ_SECRET}}}",
            "&a [*a]",
            "x" * 100000,
            "}{][",
        ]
    )
    data = _copy(BASE)
    target = rng.choice([("description",), ("models", "ae", "options", "bottleneck"), ("datasets", "held", "limit"),
                         ("evaluation", "memory_budget"), ("name",), ("models", "ae", "layers", 0)])  # fmt: skip
    _set_at(data, target, "ENV_HERE")
    text = _dump(data).replace("ENV_HERE", "'${UNSET_FUZZ:-" + default.replace("'", "''") + "}'")
    commands, files = _validate(text)
    return Case("env_default", commands, files, note=f"{target} {default[:40]!r}")


def _anchors(rng: random.Random, root: Path) -> Case:
    chain, depth, width = rng.randint(5, 40), rng.randint(10, 80), rng.randint(1, 4)
    lines = []
    for i in range(chain):
        inner = "[" * depth + (f"*c{i - 1}" if i else "1") + "]" * depth
        lines.append(f"x-c{i}: &c{i} [" + ", ".join([inner] * width) + "]\n")
    text = _dump(BASE)
    if rng.random() < 0.5:
        text += "".join(lines)
    else:
        text = "".join(lines) + text.replace("description: a fuzzed suite", f"description: *c{chain - 1}")
    commands, files = _validate(text)
    return Case("anchors", commands, files, note=f"chain {chain} depth {depth} width {width}")


MERGES = [
    "x: {<<: {1: 2}, b: 3}\n",
    "x: &m {a: 1}\ny: {<<: [*m, 5]}\n",
    "x: {<<: 5}\n",
    "x: {<<: [1, 2]}\n",
    "x: &m {evaluation: 1}\n<<: *m\n",
    "x: &m {name: other, name2: [1]}\n<<: *m\n",
    "x: {<<: {<<: {<<: {null: 1}}}}\n",
    "<<: {1.5: x}\n",
    "x: &m {seed: .nan}\n<<: [*m, *m]\n",
]


def _merge_keys(rng: random.Random, root: Path) -> Case:
    commands, files = _validate(_dump(BASE) + rng.choice(MERGES))
    return Case("merge_keys", commands, files)


def _markup(rng: random.Random, root: Path) -> Case:
    data = _copy(BASE)
    text = "".join(rng.choice(HOSTILE_TEXT) for _ in range(rng.randint(1, 3)))
    where = rng.choice(["description", "model_id", "layer", "dataset", "claim", "key", "variant", "score"])
    if where == "description":
        data["description"] = text
    elif where == "model_id":
        data["models"] = {f"ae{text}": data["models"]["ae"]}
    elif where == "layer":
        data["models"]["ae"]["layers"] = [f"encoder.block2{text}"]
    elif where == "dataset":
        data["datasets"][f"held{text}"] = data["datasets"]["held"]
    elif where == "claim":
        data["report"]["claims"][0]["claim"] = text
        data["report"]["claims"][0]["greater"]["higher"] = text
    elif where == "key":
        data["evaluation"][text] = 1
    elif where == "variant":
        data["variants"] = ["trained", text]
    else:
        data["evaluation"]["scores"] = [text]
    commands, files = _validate(_dump(data))
    if rng.random() < 0.1:
        run = _copy(RUN_BASE)
        run["description"] = text
        run["models"] = {f"ae{text}": run["models"]["ae"]}
        commands, files = (
            [["run", "suite.yaml", "--out", "out"], ["leaderboard", "out", "--boards"]],
            {"suite.yaml": _dump(run)},
        )
    return Case("markup", commands, files, note=f"{where} {text!r}")


SIZE_FIELDS = [
    ("evaluation", "memory_budget"),
    ("evaluation", "batch_size"),
    ("evaluation", "smoothing", "samples"),
    ("evaluation", "smoothing", "sigma"),
    ("datasets", "held", "limit"),
    ("datasets", "held", "skip"),
    ("models", "ae", "options", "bottleneck"),
    ("models", "ae", "train", "epochs"),
    ("seed",),
]


def _sizes(rng: random.Random, root: Path) -> Case:
    data = _copy(BASE)
    kind = rng.choice(["field", "field", "noise", "crop", "input_size"])
    value = rng.choice(ODD_NUMBERS + [[1], "x", {"a": 1}, "1e12GiB", "-5MiB", 1.5])
    if kind == "field":
        _set_at(data, rng.choice(SIZE_FIELDS), value)
    elif kind == "noise":
        data["datasets"]["held"] = {"kind": "noise", "options": {"count": value}}
    elif kind == "crop":
        options = {"kwargs": {"num_classes": 10}, "input_size": [3, 32, 32]}
        options[rng.choice(["crop_pct", "interpolation", "mean", "std"])] = rng.choice([value, 1e-9, -1, "x", [1, 2]])
        data["models"]["ae"] = {"model": "torch:torchvision.models:resnet18", "options": options, "layers": ["layer1"]}
    else:
        data["models"]["ae"]["options"]["input_size"] = [1, value, value]
    commands, files = _validate(_dump(data))
    run = rng.random() < 0.15 and kind in ("noise", "crop")
    if run:
        data.update(variants=["random"], report={})
        data["models"]["ae"].pop("train", None)
        commands, files = [["run", "suite.yaml", "--out", "out"]], {"suite.yaml": _dump(data)}
    return Case("sizes", commands, files, note=f"{kind} {value!r}"[:80])


def _include(rng: random.Random, root: Path) -> Case:
    data = _copy(BASE)
    choice = rng.choice(["passwd", "absolute", "link", "fifo", "self", "folder", "deep", "loop"])
    target = {
        "passwd": "../passwd",
        "absolute": str(root / "passwd"),
        "link": "linked.yaml",
        "fifo": "fifo.yaml",
        "self": "suite.yaml",
        "folder": "sub",
        "deep": "../" * 40 + "etc/passwd",
        "loop": "a.yaml",
    }[choice]

    def setup(work: Path, root: Path) -> None:
        (work / "linked.yaml").symlink_to(root / "passwd")
        os.mkfifo(work / "fifo.yaml")
        (work / "sub").mkdir()
        (work / "a.yaml").write_text("include: b.yaml\n")
        (work / "b.yaml").write_text("include: a.yaml\n")

    text = f"include: {json.dumps(target)}\n" + _dump(data)
    commands, files = _validate(text)
    return Case("include", commands, files, setup=setup, note=choice)


def _output(rng: random.Random, root: Path) -> Case:
    data = _copy(RUN_BASE)
    where = rng.choice(
        [".", "./", "..", "../outside", str(root / "outside"), "link", "link/x", "records/..", "", "sub/../.."]
    )
    data["output"] = where
    if rng.random() < 0.3:
        data["name"] = rng.choice(["..", ".", "a/../..", "x"])

    def setup(work: Path, root: Path) -> None:
        (work / "link").symlink_to(root / "outside")
        (work / "records").mkdir()
        (work / "records" / ".mine").write_text("mine\n")
        (work / "report.md").write_text("mine\n")

    command = ["run", "suite.yaml"] + (
        ["--out", "."] if rng.random() < 0.2 else []
    )  # --out elsewhere: the user's choice
    return Case("output", [command], {"suite.yaml": _dump(data)}, setup=setup, note=f"output {where!r}")


def _executor(rng: random.Random, root: Path) -> Case:
    data = _copy(RUN_BASE)
    data["executor"] = {
        "kind": "ray",
        "address": rng.choice(["10.255.255.1:6379", "127.0.0.1:1", "ray://10.255.255.1:10001"]),
    }
    return Case("executor", [["run", "suite.yaml", "--out", "out"]], {"suite.yaml": _dump(data)})


def _secrets(rng: random.Random, root: Path) -> Case:
    data = _copy(RUN_BASE)
    where = rng.choice(["description", "option", "dataset", "claim"])
    if where == "description":
        data["description"] = "token ${FUZZ_SECRET} here"
    elif where == "option":
        data["models"]["ae"]["description"] = "${FUZZ_SECRET}"
    elif where == "dataset":
        data["datasets"]["held"]["options"] = {"seed": "${FUZZ_SECRET}"}
    else:
        data["report"] = {"claims": [{"claim": "${FUZZ_SECRET}", "greater": {"metric": {"score": "noise_score"},
                          "higher": "random", "lower": "random", "layers": "every"}}]}  # fmt: skip
    commands = [
        ["run", "suite.yaml", "--out", "out"],
        ["publish", "out", "--out", "site"],
        ["export", "out", "--out", "x.zip"],
    ]
    return Case("secrets", commands, {"suite.yaml": _dump(data)}, note=where)


def _downloads(rng: random.Random, root: Path) -> Case:
    data = _copy(BASE)
    model = rng.choice(
        [
            {
                "model": "torch:torchvision.models:get_model",
                "options": {"kwargs": {"name": "resnet18", "weights": "DEFAULT"}},
            },
            {"model": "torch:torchvision.models:resnet18", "options": {"kwargs": {"weights": "IMAGENET1K_V1"}}},
            {"model": "timm:resnet18", "options": {"pretrained": True}},
            {"model": "hf:bert-base-uncased", "options": {}},
        ]
    )
    data["models"]["ae"] = {**model, "layers": ["layer1"]}
    commands, files = _validate(_dump(data))
    return Case("downloads", commands, files, note=model["model"])


SUITE_ATTACKS: dict[str, tuple[int, Callable[[random.Random, Path], Case]]] = {
    "mutation": (40, _mutation),
    "code_exec": (12, _code_exec),
    "env_default": (8, _env_default),
    "anchors": (6, _anchors),
    "merge_keys": (5, _merge_keys),
    "markup": (8, _markup),
    "sizes": (10, _sizes),
    "include": (5, _include),
    "output": (2, _output),
    "executor": (1, _executor),
    "secrets": (1, _secrets),
    "downloads": (2, _downloads),
}


# -- folders, zips and data files --------------------------------------------------------------------------


def _png(width: int, height: int, data: bytes = b"\0" * 10) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b"")


def _good_png() -> bytes:
    rows = b"".join(b"\0" + bytes(range(8)) for _ in range(8))
    return _png(8, 8, rows)


def _idx(dims: list[int], dtype: int = 0x08, body: bytes = b"") -> bytes:
    return bytes([0, 0, dtype, len(dims) % 256]) + b"".join(struct.pack(">I", d % 2**32) for d in dims) + body


_BOMBS: dict[str, bytes] = {}


def _gzip_bomb(size: int = 2_200_000_000) -> bytes:
    """About 2 MB of gzip that inflates to ``size`` bytes of an IDX image file (built once)."""
    if "gzip" not in _BOMBS:
        buffer = io.BytesIO()
        with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9) as file:
            file.write(_idx([size // 784, 28, 28]))
            zeros = b"\0" * 2**24
            for _ in range(size // len(zeros)):
                file.write(zeros)
        _BOMBS["gzip"] = buffer.getvalue()
    return _BOMBS["gzip"]


def _data_files(  # noqa: C901 - one branch per kind of damage
    rng: random.Random, root: Path
) -> Case:
    data = _copy(RUN_BASE)
    files: dict[str, str | bytes] = {}
    kind = rng.choice(["png", "png", "idx", "idx", "glob", "fifo", "loop", "landmarks", "text", "outside"])
    setup = None
    if kind == "png":
        width, height = rng.choice([(20000, 20000), (10000, 10000), (2**31 - 1, 1), (0, 0), (8, 8)])
        files["img/a.png"] = rng.choice(
            [_png(width, height), _good_png()[: rng.randint(0, 60)], b"", b"GIF89a" + b"\0" * 20]
        )
        data["datasets"]["held"] = {"kind": "image_files", "options": {"paths": "img/*.png"}}
        note = f"png {width}x{height}"
    elif kind == "idx":
        dims = rng.choice(
            [[2**32 - 1, 2**32 - 1], [0, 28, 28], [2, 28, 28], [2**16, 2**16, 2**16], [1] * 255, [3, 2**31, 2]]
        )
        body = rng.choice([b"", b"\0" * 64])
        content = _idx(dims, rng.choice([0x08, 0x0D, 0x42]), body) if rng.random() < 0.9 else PASSWD.encode()
        name = "images-idx3-ubyte"
        if rng.random() < 0.05:
            content, name = _gzip_bomb(), "images-idx3-ubyte.gz"
        files[f"mnist/{name}"] = content
        data["datasets"]["held"] = {"kind": "mnist", "options": {"images": f"mnist/{name}"}}
        note = f"idx {dims[:4]} {name}"
    elif kind == "glob":
        pattern = rng.choice(["/**/*.png", "../**/*.png", "**/**/**/*.png", "/proc/*/fd/*", str(root / "**")])
        data["datasets"]["held"] = {"kind": "image_files", "options": {"paths": pattern}}
        note = f"glob {pattern}"
    elif kind == "fifo":

        def setup(work: Path, root: Path) -> None:
            (work / "img").mkdir()
            os.mkfifo(work / "img" / "a.png")

        data["datasets"]["held"] = {"kind": "image_files", "options": {"paths": "img/*.png"}}
        note = "fifo"
    elif kind == "loop":

        def setup(work: Path, root: Path) -> None:
            (work / "imgs" / "cls").mkdir(parents=True)
            (work / "imgs" / "cls" / "a.png").write_bytes(_good_png())
            (work / "imgs" / "cls" / "loop").symlink_to(work / "imgs")

        folder = {"kind": "image_folder", "options": {"path": "imgs"}}
        data["datasets"]["held"] = rng.choice([folder, {"kind": "image_files", "options": {"paths": "imgs/**/*.png"}}])
        note = "symlink loop"
    elif kind == "landmarks":
        files["img/a.png"] = _good_png()
        data["datasets"]["held"] = {"kind": "image_files", "options": {"paths": "img/*.png"}, "landmarks": "marks.json"}
        files["marks.json"] = rng.choice(
            [
                "[" * 100000 + "]" * 100000,
                json.dumps([{"image": "a.png", "name": "²", "x": 1, "y": 1}]),
                json.dumps([{"image": "9" * 5000, "name": "a", "x": 1, "y": 1}]),
                '[{"image": 0, "name": "a", "x": 1e999, "y": NaN}]',
                "image,name,x,y\n²,a,1,1\n" + "a.png,b," + "9" * 5000 + ",1\n",
            ]
        )
        data["evaluation"]["scores"] = [rng.choice(["noise_score", "landmark_spread"])]
        note = "landmarks"
    elif kind == "text":
        files["t.txt"] = rng.choice([b"\xff\xfe" * 100, b"a" * 3_000_000, b"\n" * 100000, b"${FUZZ_SECRET}\n"])
        data["datasets"]["held"] = {"kind": "text_lines", "options": {"path": "t.txt"}}
        note = "text"
    else:
        target = rng.choice([str(root / "passwd"), "../passwd", "/proc/self/environ", "/dev/zero", "/dev/stdin"])
        option = rng.choice([("mnist", "images"), ("text_lines", "path"), ("image_files", "paths")])
        data["datasets"]["held"] = {"kind": option[0], "options": {option[1]: target}}
        note = f"outside {option} {target}"
    files["suite.yaml"] = _dump(data)
    return Case("data_files", [["run", "suite.yaml", "--out", "out"]], files, setup=setup, note=note)


def make_template(root: Path) -> Path:
    """One real results folder, made once and copied into each folder case. Its run also fills the libraries'
    caches in the fake $HOME (matplotlib's font cache and config folder): the sentinel tree's baseline."""
    folder = root / "results-template"
    case = Case("template", [["run", "suite.yaml", "--out", "out"]], {"suite.yaml": _dump(RUN_BASE)})
    outcome = run_case(case, root, "template", timeout=300, restore=False)
    problems = [problem for problem in outcome.problems if not problem.startswith("outside:")]
    if problems or not (root / "case" / "out" / "records").is_dir():
        raise SystemExit(f"could not make the template results folder: {outcome.problems}")
    shutil.copytree(root / "case" / "out", folder, symlinks=True)
    _keep_baseline(root)
    return folder


def _copy_results(template: Path) -> Callable[[Path, Path], None]:
    def setup(work: Path, root: Path) -> None:
        shutil.copytree(template, work / "res", symlinks=True)

    return setup


def _folder_edit(  # noqa: C901 - one branch per kind of damage
    rng: random.Random, root: Path, template: Path
) -> Case:
    copy_in = _copy_results(template)
    edit = rng.choice(["bytes", "field", "layer_index", "fifo", "loop", "link_out", "dotfile", "run_json",
                       "suite_yaml", "facts", "deep", "plot_link", "big"])  # fmt: skip
    value = _odd_value(rng)
    field_name = rng.choice(["value", "values", "layer", "model", "variant", "schema", "unit_id", "status", "error",
                             "layer_index", "reference", rng.choice(HOSTILE_TEXT)])  # fmt: skip

    def setup(work: Path, root: Path) -> None:  # noqa: C901 - one branch per kind of damage
        copy_in(work, root)
        res = work / "res"
        records = sorted((res / "records").glob("*.json"))
        target = records[0]
        if edit == "bytes":
            target.write_bytes(rng.randbytes(rng.randint(0, 40)))
        elif edit == "field":
            record = json.loads(target.read_text())
            record[field_name] = value
            target.write_text(json.dumps(record))
        elif edit == "layer_index":
            record = json.loads(target.read_text())
            record["layer_index"] = rng.choice([9_999_999, 2**62, -1])
            target.write_text(json.dumps(record))
        elif edit == "fifo":
            os.mkfifo(res / "records" / "zz.json")
        elif edit == "loop":
            (res / "records" / "loop.json").symlink_to(res / "records" / "loop.json")
        elif edit == "link_out":
            (res / "records" / "out.json").symlink_to(root / "passwd")
        elif edit == "dotfile":
            (res / "records" / ".x.json").write_text("{")
        elif edit == "run_json":
            (res / "run.json").write_text(
                rng.choice(["{", "[]", json.dumps({"seed": "x"}), '{"torch": ' + "[" * 5000 + "]" * 5000 + "}"])
            )
        elif edit == "suite_yaml":
            (res / "suite.yaml").write_text(rng.choice(["{", "a: &a [*a]", _billion_laughs(), "name: [/x]\n", "- 1\n"]))
        elif edit == "facts":
            (res / "report_facts.json").write_text(rng.choice(["{", "[1]", json.dumps({"claims": [{"x": 1}]})]))
        elif edit == "deep":
            target.write_text("[" * 200000 + "]" * 200000)
        elif edit == "plot_link":
            (res / "maps").mkdir(exist_ok=True)
            (res / "maps" / "x.png").symlink_to(root / "passwd")
        else:
            target.write_text(json.dumps({"pad": "x" * 30_000_000}))

    command = rng.choice(
        [
            [["leaderboard", "res"]],
            [["leaderboard", "res", "--boards"]],
            [["leaderboard", "res", "--format", "markdown"]],
            [["leaderboard", "res", "--format", "json"]],
            [["publish", "res", "--out", "site"]],
            [["export", "res", "--out", "x.zip"], ["import", "x.zip", "--out", "back"]],
        ]
    )
    return Case("folders", command, setup=setup, note=f"{edit} {field_name!r}={value!r}"[:80])


def _readonly(rng: random.Random, root: Path, template: Path) -> Case:
    copy_in = _copy_results(template)
    which = rng.choice(["res", "res/records", "."])
    command = rng.choice(
        [
            [["leaderboard", "res", "--format", "markdown"]],
            [["publish", "res", "--out", "res/site" if which != "." else "site"]],
            [["export", "res", "--out", "res/x.zip" if which != "." else "x.zip"]],
            [["run", "res/suite.yaml", "--out", "res"]],
            [["import", "x.zip", "--out", "res/in"]],
        ]
    )

    def setup(work: Path, root: Path) -> None:
        copy_in(work, root)
        shutil.copy(work / "res" / "suite.yaml", work / "suite.yaml")
        with zipfile.ZipFile(work / "x.zip", "w") as archive:
            for path in _regular_files(work / "res"):
                archive.write(path, path.relative_to(work / "res").as_posix())

    def lock(work: Path, root: Path) -> None:
        setup(work, root)
        os.chmod(work / which, 0o555)

    return Case("readonly", command, setup=lock, as_nobody=True, note=f"{which} read-only")


ZIP_KINDS = ["slip", "absolute", "symlink", "duplicate", "dir_entry", "bomb", "run_json", "suite_yaml", "facts",
             "layer_index", "not_zip", "truncated", "secret", "markup", "many"]  # fmt: skip


def _hostile_zip(rng: random.Random, root: Path, template: Path) -> Case:
    kind = rng.choice(ZIP_KINDS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are the point
        content = _zip_bytes(rng, root, template, kind)
    if kind == "not_zip":
        content = rng.choice([b"", b"PK\x03\x04" + b"\0" * 20, PASSWD.encode()])
    elif kind == "truncated":
        content = content[: rng.randint(1, len(content) - 1)]
    commands = [["import", "in.zip", "--out", rng.choice(["back", "back", "."])], ["leaderboard", "back"]]
    return Case("zips", commands, {"in.zip": content}, note=kind)


def _zip_bytes(  # noqa: C901 - one branch per kind of damage
    rng: random.Random, root: Path, template: Path, kind: str
) -> bytes:
    """An export of ``template`` with the ``kind`` of damage."""
    buffer = io.BytesIO()
    members = {str(p.relative_to(template)): p.read_bytes() for p in _regular_files(template)}
    replaced = {
        "run_json": ("run.json", [b"{", b"[]", json.dumps({"seed": "x" * 10}).encode()]),
        "suite_yaml": ("suite.yaml", [b"{", b"a: &a [*a]", _billion_laughs().encode(), b"include: /etc/passwd\n"]),
        "facts": ("report_facts.json", [b"{", b"[1]", b"null"]),
    }
    if kind in replaced:
        name, choices = replaced[kind]
        members[name] = rng.choice(choices)
    for name in members:
        if kind == "layer_index" and name.startswith("records/"):
            members[name] = json.dumps({**json.loads(members[name]), "layer_index": 9_999_999}).encode()
    if kind == "secret":
        members["suite.yaml"] += b"\ndescription: ${FUZZ_SECRET}\n"  # expanded by nothing that writes
    extra: dict[str | zipfile.ZipInfo, bytes] = {}
    if kind == "slip":
        extra[rng.choice(["../evil.txt", "records/../../evil.json", "../../outside/evil"])] = b"x"
    elif kind == "absolute":
        extra[str(root / "outside" / "evil.txt")] = b"x"
    elif kind == "symlink":
        info = zipfile.ZipInfo("records/link.json")
        info.external_attr = 0o120777 << 16
        extra[info] = str(root / "passwd").encode()
    elif kind == "duplicate":
        extra[next(iter(members))] = b"{}"
    elif kind == "dir_entry":
        extra[zipfile.ZipInfo("records/")] = b""
        extra[zipfile.ZipInfo("records/sub/")] = b""
    elif kind == "bomb":
        extra["records/bomb.json"] = b"\0" * rng.choice([2**27, 2**28])
    elif kind == "markup":
        extra["records/[/x] :x:.json"] = b"{}"
    elif kind == "many":
        extra.update({f"records/e{i}.json": b"" for i in range(3000)})
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in [*members.items(), *extra.items()]:
            archive.writestr(name, content)
    return buffer.getvalue()


FOLDER_ATTACKS: dict[str, tuple[int, Callable]] = {
    "folders": (10, _folder_edit),
    "zips": (8, _hostile_zip),
    "readonly": (2, _readonly),
    "data_files": (8, None),  # data files take no template
}


def suite_cases(seed: int, count: int, root: Path, only: str | None = None) -> Iterator[tuple[str, Case]]:
    """``count`` labelled suite cases (attack classes drawn by weight; each case from its own seeded draw)."""
    rng = random.Random(seed)
    names = [n for n in SUITE_ATTACKS if only in (None, n)]
    weights = [SUITE_ATTACKS[n][0] for n in names]
    for index in range(count):
        name = rng.choices(names, weights)[0] if names else None
        case_rng = random.Random(f"{seed}-suites-{index}")
        if name:
            yield f"suites:{index}", SUITE_ATTACKS[name][1](case_rng, root)


def folder_cases(
    seed: int, count: int, root: Path, template: Path, only: str | None = None
) -> Iterator[tuple[str, Case]]:
    """``count`` labelled folder, zip and data-file cases, as :func:`suite_cases`."""
    rng = random.Random(seed + 1)
    names = [n for n in FOLDER_ATTACKS if only in (None, n)]
    weights = [FOLDER_ATTACKS[n][0] for n in names]
    for index in range(count):
        name = rng.choices(names, weights)[0] if names else None
        case_rng = random.Random(f"{seed}-folders-{index}")
        if name == "data_files":
            yield f"folders:{index}", _data_files(case_rng, root)
        elif name:
            yield f"folders:{index}", FOLDER_ATTACKS[name][1](case_rng, root, template)


def prepare_process(root: Path) -> None:
    """Point caches and $HOME into the sentinel tree, then import what the commands need once (forks share it)."""
    os.environ.update(_environment(root))
    os.environ.pop("RAY_ADDRESS")
    import torch

    torch.set_num_threads(1)  # before any parallel region: forked children must not inherit an OpenMP pool
    import repreval.cli
    import repreval.plan
    import repreval.runner  # noqa: F401


def main() -> int:  # noqa: C901 - the command line, the loop and the summary in one place
    """Run the cases; exit 1 when any failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suites", type=int, default=1500)
    parser.add_argument("--folders", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--only", help="one attack class: " + ", ".join([*SUITE_ATTACKS, *FOLDER_ATTACKS]))
    parser.add_argument("--case", help="one case again, e.g. suites:17; its folder is kept")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    root = make_root()
    prepare_process(root)
    template = make_template(root)
    suites = args.suites if args.only in (None, *SUITE_ATTACKS) else 0
    folders = args.folders if args.only in (None, *FOLDER_ATTACKS) else 0
    cases = [
        *suite_cases(args.seed, suites, root, args.only),
        *folder_cases(args.seed, folders, root, template, args.only),
    ]
    if args.case:
        cases = [(label, case) for label, case in cases if label == args.case]
    counts: Counter = Counter()
    failed: Counter = Counter()
    failures: list[Outcome] = []
    started = time.monotonic()
    for number, (label, case) in enumerate(cases, 1):
        outcome = run_case(case, root, label, timeout=args.timeout)
        counts[case.attack] += 1
        if outcome.problems:
            failed[case.attack] += 1
            failures.append(outcome)
            if not args.quiet:
                print(f"FAIL {label} [{case.attack}] {case.note}: {outcome.problems[0][:300]}", flush=True)
        if number % 100 == 0:
            print(
                f"... {number}/{len(cases)} cases, {len(failures)} failed, {time.monotonic() - started:.0f} s",
                flush=True,
            )
    print(f"\n{len(cases)} cases in {time.monotonic() - started:.0f} s (seed {args.seed}); per attack class:")
    for attack in [*SUITE_ATTACKS, *FOLDER_ATTACKS]:
        if counts[attack]:
            print(f"  {attack:12} {counts[attack]:5} cases  {failed[attack]:4} failed")
    kinds = Counter(problem.split(":")[0] for outcome in failures for problem in outcome.problems)
    print("failures by kind: " + (", ".join(f"{k} {v}" for k, v in kinds.most_common()) or "none"))
    for outcome in failures:
        case = outcome.case
        print(f"\n{outcome.label} [{case.attack}] {case.note}")
        for command in case.commands:
            print("  repreval " + " ".join(command))
        for problem in outcome.problems:
            print(f"  - {problem[:600]}")
        only = f" --only {args.only}" if args.only else ""
        print(f"  reproduce: python benchmarks/fuzz_hostile.py --seed {args.seed}{only} --case {outcome.label}")
    if args.case:
        print(f"case folder kept: {root / 'case'}")
    else:
        remove_root(root)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
