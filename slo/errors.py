"""Errors raised while reading configuration.

Hierarchy::

    TrimtabError                 base of every error trimtab raises on purpose
    └── ConfigError              one or more problems in the user's files; holds ``problems``

A :class:`Problem` names where (``file:line:col``), what (the field path) and why. The loader
collects every problem it can find before raising, so a user fixes a file in one pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ConfigError", "Problem", "TrimtabError"]


class TrimtabError(Exception):
    """Base class of the errors trimtab raises deliberately."""


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong in a configuration file, with its position (1-based line and column)."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(TrimtabError):
    """The configuration is invalid; ``problems`` lists every problem found, in file order."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(sorted(set(problems)))
        if not self.problems:
            raise ValueError("ConfigError needs at least one problem")
        super().__init__("\n".join(str(p) for p in self.problems))
