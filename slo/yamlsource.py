"""YAML documents that remember where every value came from.

PyYAML's composer gives nodes with positions; we build plain Python data from them and keep a map
from each value's path (a tuple of keys and indexes) to its 1-based ``(line, column)``. Validation
errors then point at the exact key. Only the safe YAML subset is read; duplicate keys are errors
(PyYAML would silently keep the last one).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import ConfigError, Problem

__all__ = ["Location", "SourceDocument", "read_documents"]

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Location:
    """Where a value starts in a file (1-based)."""

    file: str
    line: int
    column: int


@dataclass
class SourceDocument:
    """One YAML document: its data and the position of every value and key in it."""

    file: str
    index: int
    data: Any
    line: int
    column: int
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: Path, *, key: bool = False) -> Location:
        """The position of ``path``, or of its nearest ancestor that has one.

        With ``key=True`` the position of the mapping key is preferred (where an unknown key or
        a field error is best shown); the value's position otherwise.
        """
        probe = tuple(path)
        while True:
            table = (self.keys, self.values) if key else (self.values, self.keys)
            for positions in table:
                if probe in positions:
                    line, column = positions[probe]
                    return Location(self.file, line, column)
            if not probe:
                return Location(self.file, self.line, self.column)
            probe = probe[:-1]

    def problem(self, path: Path, message: str, *, key: bool = False) -> Problem:
        """A :class:`Problem` at ``path`` with the dotted field path in the message."""
        where = self.locate(path, key=key)
        return Problem(where.file, where.line, where.column, dotted(path), message)


def dotted(path: Path) -> str:
    """``("spec", "steps", 2, "weight")`` → ``spec.steps[2].weight``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_MAX_NODES = 100_000  # aliases can expand a small file exponentially ("billion laughs")


class _Builder:
    def __init__(self, doc: SourceDocument, constructor: yaml.SafeLoader) -> None:
        self.doc = doc
        self.constructor = constructor
        self.open: set[int] = set()
        self.count = 0

    def build(self, node: yaml.Node, path: Path) -> Any:
        where = (node.start_mark.line + 1, node.start_mark.column + 1)
        self.count += 1
        if self.count > _MAX_NODES:
            raise _Failure(where, path, f"document too large (more than {_MAX_NODES} values)")
        if id(node) in self.open:
            raise _Failure(where, path, "recursive YAML alias")
        self.doc.values[path] = where
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            self.open.add(id(node))
            try:
                if isinstance(node, yaml.MappingNode):
                    return self._mapping(node, path)
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            finally:
                self.open.discard(id(node))
        assert isinstance(node, yaml.ScalarNode)
        try:
            return self.constructor.construct_object(node, deep=True)
        except Exception as exc:  # PyYAML's constructors raise all sorts of errors
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            reason = exc.problem if isinstance(exc, yaml.MarkedYAMLError) else None
            if isinstance(exc, ValueError | OverflowError):
                reason = str(exc)
            message = f"invalid {tag} value {node.value!r}" + (f": {reason}" if reason else "")
            raise _Failure(where, path, message) from None

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            where = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _Failure(where, path, "YAML merge keys (<<) are not supported")
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Failure(where, path, "mapping keys must be plain strings")
            key = str(key_node.value)
            if key in result:
                raise _Failure(where, (*path, key), f"duplicate key {key!r}")
            self.doc.keys[(*path, key)] = where
            result[key] = self.build(value_node, (*path, key))
        return result


class _Failure(Exception):
    def __init__(self, where: tuple[int, int], path: Path, message: str) -> None:
        super().__init__(message)
        self.where, self.path, self.message = where, path, message


# Contexts opened by a bracket or quote the user wrote. When the parser fails on a later line
# inside one, the opening bracket or quote was not closed: that is where to look.
_OPENED_BY_USER = ("while parsing a flow", "while scanning a quoted scalar")


def _syntax_problem(exc: yaml.MarkedYAMLError, file: str) -> Problem:
    """PyYAML's error at the mark to fix, with the other mark in the message."""
    problem, context = exc.problem_mark, exc.context_mark
    message = exc.problem or str(exc)
    if context is not None and exc.context:
        if (
            problem is not None
            and exc.context.startswith(_OPENED_BY_USER)
            and problem.line != context.line
        ):
            what = exc.context.removeprefix("while parsing a ").removeprefix("while scanning a ")
            found = f"line {problem.line + 1}, column {problem.column + 1}"
            message = f"this {what} is not closed: {message} at {found}"
            problem = context
        else:
            where = f"line {context.line + 1}, column {context.column + 1}"
            message = f"{message} ({exc.context} at {where})"
    elif exc.context:
        message = f"{message} ({exc.context})"
    mark = problem or context
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    return Problem(file, line, column, "", f"invalid YAML: {message}")


_LINE_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")  # as PyYAML counts lines


def _position(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of ``text[index]``."""
    breaks = list(_LINE_BREAK.finditer(text, 0, index))
    start = breaks[-1].end() if breaks else 0
    return len(breaks) + 1, index - start + 1


def read_documents(text: str, file: str) -> Iterator[SourceDocument]:
    """Each non-empty YAML document in ``text``; raises :class:`ConfigError` on bad YAML."""
    try:
        loader = yaml.SafeLoader(text)  # checks every character up front
    except yaml.reader.ReaderError as exc:
        line, column = _position(text, exc.position)
        character = f"#x{exc.character:04x}" if isinstance(exc.character, int) else "character"
        raise ConfigError(
            [Problem(file, line, column, "", f"invalid YAML: {exc.reason} ({character})")]
        ) from None
    index = 0
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            doc = SourceDocument(
                file, index, None, node.start_mark.line + 1, node.start_mark.column + 1
            )
            try:
                doc.data = _Builder(doc, loader).build(node, ())
            except _Failure as failure:
                line, column = failure.where
                raise ConfigError(
                    [Problem(file, line, column, dotted(failure.path), failure.message)]
                ) from None
            except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
                # A scalar PyYAML cannot construct (e.g. a timestamp out of range).
                raise ConfigError(
                    [Problem(file, doc.line, doc.column, "", f"invalid YAML value: {exc}")]
                ) from None
            yield doc
            index += 1
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_syntax_problem(exc, file)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file, 1, 1, "", f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()
