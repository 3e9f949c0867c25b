"""YAML documents that remember where every value came from.

PyYAML's composer gives nodes with positions; we build plain Python data from them, and each
value's path (a tuple of keys and indexes) maps to its 1-based ``(line, column)``. Validation
errors then point at the exact key. Only the safe YAML subset is read; duplicate keys are errors
(PyYAML would silently keep the last one).

Positions are found when first asked for, by reading the text again: a valid configuration
never asks, and at 10,000 documents the maps would hold more memory than the models. Documents
are composed by libyaml when PyYAML has it; any problem is reported by PyYAML's own reader,
exactly as without libyaml.
"""

from __future__ import annotations

import contextlib
import re
import sys
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
    """One YAML document: its data and the position of every value and key in it.

    Documents from :func:`read_documents` find their positions when first asked, by reading
    their text again; after :meth:`release` they read their data again too.
    """

    file: str
    index: int
    _data: Any
    line: int
    column: int
    _values: dict[Path, tuple[int, int]] | None = field(default_factory=dict, repr=False)
    _keys: dict[Path, tuple[int, int]] | None = field(default_factory=dict, repr=False)
    _source: _Text | None = field(default=None, repr=False, compare=False)
    _released: bool = field(default=False, repr=False, compare=False)

    @property
    def data(self) -> Any:
        """The document as plain data (dicts, lists, scalars)."""
        if self._released:
            assert self._source is not None
            self._data, self._released = self._source.document(self.index).data, False
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        self._data, self._released = value, False

    @property
    def values(self) -> dict[Path, tuple[int, int]]:
        """The position of every value, by path."""
        return self._positions()[0]

    @property
    def keys(self) -> dict[Path, tuple[int, int]]:
        """The position of every mapping key, by the path of its value."""
        return self._positions()[1]

    def release(self) -> None:
        """Let go of the data and the positions, which are read again if asked for: a loaded
        configuration keeps its models, not a second copy of every document."""
        if self._source is not None:
            self._data, self._values, self._keys, self._released = None, None, None, True

    def _positions(self) -> tuple[dict[Path, tuple[int, int]], dict[Path, tuple[int, int]]]:
        if self._values is None or self._keys is None:
            assert self._source is not None
            again = self._source.document(self.index)
            self._values, self._keys = again._positions()
        return self._values, self._keys

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
_INTERNED = 64  # characters: names and words, not queries or descriptions


class _Builder:
    def __init__(self, doc: SourceDocument, constructor: yaml.SafeLoader | Any) -> None:
        self.doc = doc
        self.constructor = constructor
        self.open: set[int] = set()
        self.count = 0
        # Positions are recorded only when the document has maps to fill (see _Text).
        self.values = doc._values
        self.keys = doc._keys

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.count += 1
        if self.count > _MAX_NODES:
            raise _Failure(
                _where(node), path, f"document too large (more than {_MAX_NODES} values)"
            )
        if id(node) in self.open:
            raise _Failure(_where(node), path, "recursive YAML alias")
        if self.values is not None:
            self.values[path] = _where(node)
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
            value = self.constructor.construct_object(node, deep=True)
        except Exception as exc:  # PyYAML's constructors raise all sorts of errors
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            reason = exc.problem if isinstance(exc, yaml.MarkedYAMLError) else None
            if isinstance(exc, ValueError | OverflowError):
                reason = str(exc)
            message = f"invalid {tag} value {node.value!r}" + (f": {reason}" if reason else "")
            raise _Failure(_where(node), path, message) from None
        # The words a fleet's documents repeat (an apiVersion, a kind, a backend or SLO name)
        # are kept once however many documents hold them.
        return sys.intern(value) if type(value) is str and len(value) <= _INTERNED else value

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _Failure(_where(key_node), path, "YAML merge keys (<<) are not supported")
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Failure(_where(key_node), path, "mapping keys must be plain strings")
            key = sys.intern(str(key_node.value))
            if key in result:
                raise _Failure(_where(key_node), (*path, key), f"duplicate key {key!r}")
            if self.keys is not None:
                self.keys[(*path, key)] = _where(key_node)
            result[key] = self.build(value_node, (*path, key))
        return result


def _where(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


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
    """Each non-empty YAML document in ``text``; raises :class:`ConfigError` on bad YAML.

    Documents are read without their positions, which are found again when first asked for.
    """
    return _read(text, file, _Text(text, file))


class _Text:
    """The text documents were read from, read again — once, in full, positions and all — the
    first time a document is asked for what it did not keep (a problem to report)."""

    def __init__(self, text: str, file: str) -> None:
        self.text, self.file = text, file
        self.again: list[SourceDocument] | None = None

    def document(self, index: int) -> SourceDocument:
        if self.again is None:
            self.again = []
            try:
                for doc in _read(self.text, self.file, None, fast=False):
                    self.again.append(doc)
            except ConfigError:
                pass  # the documents before the problem were all read
        return self.again[index]


def _read(
    text: str, file: str, later: _Text | None, *, fast: bool = True
) -> Iterator[SourceDocument]:
    """The documents of ``text``, positions recorded now (``later`` is ``None``) or left to
    ``later``. Composed by libyaml when ``fast`` and there is one; on any problem, read again by
    PyYAML's reader from the first document not yet given, so problems read as they always
    have. (Positions are always PyYAML's: libyaml places some empty values elsewhere.)"""
    given = 0
    if fast and _FAST_LOADER is not None and not _PYYAML_ONLY.search(text):
        with contextlib.suppress(Exception):  # whatever it is, PyYAML's reader says it below
            yaml.reader.Reader(text)  # PyYAML's check of every character
            for doc in _documents(text, file, _FAST_LOADER, later):
                if not isinstance(doc.data, dict | list):
                    break  # libyaml places a scalar document (an empty one) elsewhere
                yield doc
                given += 1
            else:
                return
    for index, doc in enumerate(_documents(text, file, yaml.SafeLoader, later)):
        if index >= given:
            yield doc


_FAST_LOADER: Any = getattr(yaml, "CSafeLoader", None) if yaml.__with_libyaml__ else None
# What libyaml accepts and PyYAML's reader refuses: such text is read by PyYAML alone.
_PYYAML_ONLY = re.compile("[\t\ufeff]")


def _documents(
    text: str, file: str, loader_class: Any, later: _Text | None
) -> Iterator[SourceDocument]:
    try:
        loader = loader_class(text)  # PyYAML's own reader checks every character up front
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
            line, column = _where(node)
            doc = SourceDocument(file, index, None, line, column)
            if later is not None:
                doc._values = doc._keys = None
                doc._source = later
            try:
                doc.data = _Builder(doc, loader).build(node, ())
                loader.constructed_objects, loader.recursive_objects = {}, {}  # as PyYAML does
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
