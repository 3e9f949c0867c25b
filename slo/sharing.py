"""Equal configuration blocks, kept once.

Configuration models are frozen, so two equal blocks can be one object. A fleet of 10,000
Rollouts written from one template repeats the same steps, analysis and guardrails 10,000
times; :func:`share` makes each document's blocks the ones an earlier document already had,
so a loaded configuration holds each distinct block once (a third of its memory at that
scale).

Blocks are equal when they have the same type, the same fields given (``model_fields_set``)
and equal values, compared by type as well (``1`` is not ``1.0``; mappings in order).

The blocks that stay distinct (a name, a path) share their set of given field names: pydantic
keeps one set per model instance, about half of a small model's memory, and changes it only
where a model is mutable or copied (``model_copy`` copies it first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

__all__ = ["Pool", "share"]


@dataclass
class Pool:
    """What :func:`share` has kept so far."""

    blocks: dict[int, list[BaseModel]] = field(default_factory=dict)
    """The blocks, by the hash of what makes them equal (the keys themselves would hold as
    much memory as the blocks)."""
    given: dict[frozenset[str], set[str]] = field(default_factory=dict)
    """One set of given field names per distinct set."""


M = TypeVar("M", bound=BaseModel)

_UNSHARED = object()  # a key for values that cannot be compared this way


def share(model: M, pool: Pool) -> M:
    """``model`` holding, in place of each of its blocks, an equal block of ``pool`` (the
    blocks ``pool`` lacks are added). ``model`` itself is kept: documents name their own."""
    for name in type(model).model_fields:
        value = model.__dict__.get(name)
        shared = _shared(value, pool)
        if shared is not value:
            model.__dict__[name] = shared  # a block not yet seen by anyone: frozen from here
    if model.model_config.get("frozen"):
        given = model.__pydantic_fields_set__
        kept = pool.given.setdefault(frozenset(given), given)
        if kept is not given:
            object.__setattr__(model, "__pydantic_fields_set__", kept)
    return model


def _shared(value: Any, pool: Pool) -> Any:
    if isinstance(value, BaseModel):
        share(value, pool)
        key = _key(value)
        if key is _UNSHARED:
            return value
        kept = pool.blocks.setdefault(hash(key), [])
        for block in kept:
            if _key(block) == key:
                return block
        kept.append(value)
        return value
    if type(value) is list:
        for i, item in enumerate(value):
            value[i] = _shared(item, pool)
    elif type(value) is dict:
        for k, item in value.items():
            value[k] = _shared(item, pool)
    return value


def _key(value: Any) -> Any:
    """What makes ``value`` equal to another, hashable; ``_UNSHARED`` if that is not known."""
    if isinstance(value, BaseModel):
        if value.__pydantic_extra__ or value.__pydantic_private__:
            return _UNSHARED
        fields = tuple(_item(value.__dict__.get(name)) for name in type(value).model_fields)
        if _UNSHARED in fields:
            return _UNSHARED
        return (type(value), frozenset(value.model_fields_set), fields)
    if type(value) in (list, tuple):
        items = tuple(_item(v) for v in value)
        return _UNSHARED if _UNSHARED in items else (type(value), items)
    if type(value) is dict:
        pairs = tuple((_item(k), _item(v)) for k, v in value.items())
        return _UNSHARED if any(_UNSHARED in p for p in pairs) else (dict, pairs)
    if type(value) is float:
        return (float, value.hex())  # 0.0 and -0.0 differ
    if value is None or type(value) in (str, int, bool):
        return (type(value), value)
    return _UNSHARED


def _item(value: Any) -> Any:
    """The key of a value inside a block: a block inside was shared first, so it is known by
    its identity (kept alive by the pool, or by the block holding it)."""
    if isinstance(value, BaseModel):
        return (BaseModel, id(value))
    return _key(value)
