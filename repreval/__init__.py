"""repreval: evaluate neural-network representations through aggregated attributions.

Start with the command line (``repreval --help``) or, in Python::

    from repreval.plugins import load_plugins
    from repreval.suite import load_suite
    from repreval.runner import run_suite

    plugins = load_plugins()
    report = run_suite(load_suite("benchmarks_yaml/quickstart.yaml", plugins), plugins)

Plugin authors: see :mod:`repreval.api` and :mod:`repreval.hookspecs`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("repreval")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
