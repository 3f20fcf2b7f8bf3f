"""repreval: evaluate neural-network representations through aggregated attributions.

Start with the command line (``repreval --help``) or, in Python::

    import repreval

    result = repreval.run("benchmarks_yaml/quickstart.yaml")  # what `repreval run` does, folder and all
    result = repreval.evaluate(model, images)  # an nn.Module and images in [0, 1]: no suite file
    result.summary(), result.rows(), result.values(score="noise_score")

Plugin authors: see :mod:`repreval.api` and :mod:`repreval.hookspecs`.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

try:
    __version__ = version("repreval")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from .notebook import evaluate
    from .runs import RunResult, read_results, run

__all__ = ["run", "evaluate", "read_results", "RunResult"]

#: The front door's names, imported on first use (``import repreval`` stays as cheap as ``--help``)
_LAZY = {"run": "runs", "read_results": "runs", "RunResult": "runs", "evaluate": "notebook"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'repreval' has no attribute {name!r}")
