"""Who is trusted to name code and network peers: the user and installed packages, never a suite.

A suite is data from anyone. The one route by which it names Python code, ``torch:MODULE:CALLABLE``, may
import only:

* library factory packages on :data:`LIBRARY_FACTORIES` (``torchvision.models``, ``torch.nn``; nothing in them
  runs a program or executes a string), and
* modules the user names: ``--trust MODULE`` (``run``, ``eval``, ``validate``, ``layers``, ``show``), the
  ``trust=`` argument of :func:`repreval.run`, ``$REPREVAL_TRUST`` (comma-separated) and ``trust:`` in the
  user's own config file (:func:`config_path`). Trusting ``pkg`` trusts its submodules.

The name is checked as a string before anything is imported: a module nobody trusted, any ``__main__`` or
``_private`` part, or a private attribute is refused. Installed plugins are trusted as installed code: their
model sources need no ``--trust``. A trusted module that is not installed is loaded from its file in the
working directory or beside the suite (:attr:`Trust.folders`); no folder is ever put on ``sys.path``, so a
``torch.py`` beside a suite is never imported.

The same trust covers the network: a suite's ``executor.address`` joins a cluster only when the user passed
``--address`` (``address=``) or listed it under ``addresses:`` in the config file, and ``repreval validate``
downloads nothing (:func:`no_downloads`).

The config file (YAML)::

    trust: [mynet, lab.models]        # modules torch: may import
    addresses: ["10.0.0.5:6379"]      # Ray clusters a suite may name
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import socket
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import ReprevalError, suggest

#: Library packages whose classes and factories a suite may name (their submodules too)
LIBRARY_FACTORIES = ("torchvision.models", "torch.nn")
#: Modules of those packages that are tools, not factories
NOT_FACTORIES = ("torchvision.models.feature_extraction",)
TRUST_ENV = "REPREVAL_TRUST"
#: Help of the ``--trust`` option (every command that builds models)
TRUST_HELP = (
    "a module that torch:MODULE:CALLABLE may import besides torchvision.models and torch.nn (repeatable; also "
    f"${TRUST_ENV}=a,b and 'trust:' in ~/.config/repreval/config.yaml); a suite can never add one"
)


def config_path() -> Path:
    """The user's config file: ``$XDG_CONFIG_HOME/repreval/config.yaml`` (default ``~/.config/...``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "repreval" / "config.yaml"


def read_config() -> dict[str, list[str]]:
    """The config file's ``trust`` and ``addresses`` lists (empty when there is no file)."""
    import yaml

    path = config_path()
    if not path.is_file():
        return {"trust": [], "addresses": []}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")[:1_000_000]) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ReprevalError(f"cannot read {str(path)!r} ({type(exc).__name__})", fix="fix or remove it") from None
    if not isinstance(data, dict) or set(data) - {"trust", "addresses"}:
        raise ReprevalError(f"{str(path)!r} may hold only 'trust' and 'addresses'", fix="e.g. trust: [mynet]")
    found = {}
    for key in ("trust", "addresses"):
        values = data.get(key) or []
        if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
            raise ReprevalError(f"{str(path)!r}: {key} must be a list of strings", fix=f"e.g. {key}: [NAME]")
        found[key] = values
    return found


@dataclass(frozen=True)
class Trust:
    """What the user trusts: ``modules`` torch: may import besides :data:`LIBRARY_FACTORIES`, ``folders``
    (absolute) where such a module may be found when it is not installed, and Ray ``addresses`` a suite may
    name. Picklable: executor tasks carry it to their workers."""

    modules: tuple[str, ...] = ()
    folders: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()

    def trusts(self, module_path: str) -> bool:
        """Whether ``module_path`` is one of the user's modules, a submodule of one, or a library factory."""
        if _below(module_path, self.modules):
            return True
        return _below(module_path, LIBRARY_FACTORIES) and not _below(module_path, NOT_FACTORIES)


def _below(module_path: str, packages: Iterable[str]) -> bool:
    return any(module_path == package or module_path.startswith(package + ".") for package in packages)


def user_trust(modules: Iterable[str] = (), suite: str | os.PathLike | None = None) -> Trust:
    """The user's trust: ``modules`` (``--trust``), ``$REPREVAL_TRUST`` and the config file; modules that are
    not installed are looked for in the working directory and beside ``suite``."""
    config = read_config()
    from_env = [name.strip() for name in os.environ.get(TRUST_ENV, "").split(",") if name.strip()]
    named = [*modules, *from_env, *config["trust"]]
    for name in named:
        if not _dotted_identifier(name):
            raise ReprevalError(f"cannot trust {name!r}: it is not a module name", fix="e.g. --trust mynet")
    folders = [Path.cwd(), *([Path(suite).resolve().parent] if suite else [])]
    return Trust(tuple(dict.fromkeys(named)), tuple(dict.fromkeys(str(f) for f in folders)), tuple(config["addresses"]))


_active: Trust | None = None


def active() -> Trust:
    """The trust of the run in progress (:func:`trusting`), else the user's from their environment and config."""
    return _active if _active is not None else user_trust()


@contextmanager
def trusting(trust: Trust) -> Iterator[Trust]:
    """Make ``trust`` the one :func:`active` returns for the block (a run, a validation, an executor task)."""
    global _active
    previous, _active = _active, trust
    try:
        yield trust
    finally:
        _active = previous


def _dotted_identifier(name: str) -> bool:
    return all(part.isidentifier() for part in name.split("."))


def check_factory_name(module_path: str, attribute: str, trust: Trust) -> None:
    """Refuse, before any import, a ``torch:`` name that is not trusted code (see the module docstring)."""
    named = f"torch:{module_path}:{attribute}"
    if not _dotted_identifier(module_path) or not attribute.isidentifier():
        raise ReprevalError(f"{named} is not of the form torch:MODULE:CALLABLE", fix="e.g. torch:mynet:build")
    parts = module_path.split(".")
    if "__main__" in parts or any(part.startswith("_") for part in (*parts, attribute)):
        raise ReprevalError(
            f"{named} names a program or a private part (__main__ or _name), which a suite may not run",
            fix="name a public nn.Module class or factory",
        )
    if parts[0] in sys.stdlib_module_names:
        raise ReprevalError(f"{named}: {parts[0]!r} is part of Python's standard library, not model code")
    if not trust.trusts(module_path):
        if not _findable(parts[0], trust.folders):  # a typo, most likely
            raise ReprevalError(
                f"cannot import {module_path!r}: no such module is installed or trusted",
                fix=suggest(module_path, (*LIBRARY_FACTORIES, *trust.modules)),
            )
        raise ReprevalError(
            f"{named}: module {module_path!r} is not trusted: a suite may name only torchvision.models, torch.nn "
            "and modules you trust",
            fix=f"if you trust it, pass --trust {parts[0]} (repreval.run(..., trust=[{parts[0]!r}])) or list it "
            f"under 'trust:' in {config_path()}",
        )


def import_trusted(module_path: str, attribute: str) -> ModuleType:
    """The module of ``module_path:attribute``, a name a suite gave: checked against the :func:`active` trust
    before anything is imported (ReprevalError when it is not trusted), then imported. For any plugin that
    turns a suite's string into code; ImportError when the trusted module is not there."""
    trust = active()
    check_factory_name(module_path, attribute, trust)
    return import_factory_module(module_path, trust)


def import_factory_module(module_path: str, trust: Trust) -> ModuleType:
    """Import the trusted ``module_path``: installed, else its package's file in one of ``trust.folders``
    (loaded from that file; ``sys.path`` is never changed). ImportError when there is none."""
    top = module_path.split(".")[0]
    if top not in sys.modules and importlib.util.find_spec(top) is None:
        _load_from_folders(top, trust.folders)
    return importlib.import_module(module_path)


def _findable(top: str, folders: Iterable[str]) -> bool:
    """Whether module ``top`` is installed or a file in ``folders`` (found without importing anything)."""
    if top in sys.modules or importlib.util.find_spec(top) is not None:
        return True
    return any(_module_file(top, folder) for folder in folders)


def _module_file(top: str, folder: str) -> Path | None:
    package, single = Path(folder) / top / "__init__.py", Path(folder) / f"{top}.py"
    return package if package.is_file() else single if single.is_file() else None


def _load_from_folders(top: str, folders: Iterable[str]) -> None:
    for folder in folders:
        file = _module_file(top, folder)
        if file is None:
            continue
        spec = importlib.util.spec_from_file_location(
            top, file, submodule_search_locations=[str(file.parent)] if file.name == "__init__.py" else None
        )
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        sys.modules[top] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[top]
            raise
        return
    raise ImportError(f"No module named {top!r}")


# -- network -------------------------------------------------------------------------------------------------


class DownloadRefused(ReprevalError):
    """Something tried to fetch from the network where repreval downloads nothing (``validate``)."""


_blocked = False
_originals: dict[str, Any] = {}


@contextmanager
def no_downloads() -> Iterator[None]:
    """Within the block nothing is downloaded: torch.hub's weight loaders read only their cache (a missing file
    is refused without creating ``$TORCH_HOME/hub/checkpoints``) and internet connections are refused."""
    global _blocked
    _guard_torch_hub()
    connect, create_connection = socket.socket.connect, socket.create_connection
    socket.socket.connect = _refused_connect  # type: ignore[method-assign, assignment]
    socket.create_connection = _refused_create_connection
    previous, _blocked = _blocked, True
    try:
        yield
    finally:
        _blocked = previous
        socket.socket.connect = connect  # type: ignore[method-assign]
        socket.create_connection = create_connection


def _refused(address: object) -> DownloadRefused:
    return DownloadRefused(
        f"a model tried to connect to {address!r} while validating: validate downloads nothing",
        fix="`repreval run` fetches what a model needs",
    )


def _refused_connect(self: socket.socket, address: Any) -> None:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        raise _refused(address)
    _originals["connect"](self, address)


def _refused_create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
    raise _refused(address)


_originals["connect"] = socket.socket.connect


def _guard_torch_hub() -> None:
    """Replace torch.hub's loader wherever it was imported by name (torchvision, timm) with one that, while
    downloads are blocked, reads only the cache."""
    import torch.hub

    original = _originals.setdefault("load_state_dict_from_url", torch.hub.load_state_dict_from_url)
    for module in list(sys.modules.values()):
        for name in ("load_state_dict_from_url", "load_url"):
            if getattr(module, name, None) is original:
                setattr(module, name, _cached_only)


def _cached_only(url: str, model_dir: str | None = None, *args: Any, **kwargs: Any):
    """torch.hub.load_state_dict_from_url, refusing a file that is not cached while downloads are blocked."""
    original = _originals["load_state_dict_from_url"]
    if _blocked:
        import inspect
        from urllib.parse import urlparse

        import torch.hub

        bound = inspect.signature(original).bind(url, model_dir, *args, **kwargs)
        name = bound.arguments.get("file_name") or os.path.basename(urlparse(url).path)
        cached = Path(model_dir or Path(torch.hub.get_dir()) / "checkpoints") / name
        if not cached.is_file():
            raise DownloadRefused(
                f"published weights {name!r} are not cached and validate downloads nothing",
                fix="`repreval run` fetches them",
            )
    return original(url, model_dir, *args, **kwargs)


def check_suite_address(executor: object, trust: Trust) -> None:
    """Refuse a suite's ``executor.address`` the user did not allow (``addresses:`` in the config file): a
    suite may not choose the cluster a run joins (``--address`` / ``address=`` is the user's own choice)."""
    address = executor.get("address") if isinstance(executor, dict) else None
    if address is None or (isinstance(address, str) and address in trust.addresses):
        return
    raise ReprevalError(
        f"the suite's executor names the cluster {address!r}: a suite may not choose where a run connects",
        fix=f"if you trust it, pass --address (repreval.run(..., address=...)) or list it under 'addresses:' in "
        f"{config_path()}",
    )
