"""Errors the CLI reports as one line with exit code 2 (bad input), never as a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ReprevalError(Exception):
    """Bad input: names what is wrong, where, and how to fix it.

    ``where`` is a location such as ``suite.yaml: models[0].layers`` (file and key).
    """

    def __init__(self, problem: str, *, where: str | None = None, fix: str | None = None):
        self.problem = problem
        self.where = where
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """``where: problem; fix``, without the parts that are not set."""
        text = f"{self.where}: {self.problem}" if self.where else self.problem
        if self.fix:
            text += f"; {self.fix}"
        return text


class UnknownNameError(ReprevalError):
    """A plugin, layer or other name that does not exist."""


class PluginOptionError(ReprevalError):
    """A plugin's options from a suite are wrong: raise it from ``__init__`` (with ``fix=`` if you can).

    The host adds where the options were given (``suite.yaml: evaluation.scores[0]``). Unknown or missing
    option names need no code: the host checks them against ``__init__``'s signature before calling it.
    """


def suggest(name: str, candidates: Iterable[str]) -> str:
    """A 'did you mean' hint, or a list of what exists when nothing is close."""
    names = sorted(str(c) for c in candidates)
    close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    return f"known: {shown}" if names else "none are registered"
