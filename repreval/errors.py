"""Errors the CLI reports as one line with exit code 2 (bad input), never as a traceback."""

from __future__ import annotations


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
        text = f"{self.where}: {self.problem}" if self.where else self.problem
        if self.fix:
            text += f"; {self.fix}"
        return text


class UnknownNameError(ReprevalError):
    """A plugin, layer or other name that does not exist."""
