"""Prometheus durations (``30s``, ``5m``, ``1h30m``, ``30d``) as seconds, and back.

Units as Prometheus accepts them: ``ms s m h d w y`` (``y`` is 365 days), largest first, each at
most once. The canonical text form is what Prometheus prints, so it can go into PromQL as-is.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, ValidationInfo, WithJsonSchema

__all__ = ["FROM_TEXT", "Duration", "format_duration", "parse_duration"]

_UNITS: dict[str, int] = {
    "y": 365 * 86400 * 1000,
    "w": 7 * 86400 * 1000,
    "d": 86400 * 1000,
    "h": 3600 * 1000,
    "m": 60 * 1000,
    "s": 1000,
    "ms": 1,
}
_PATTERN = re.compile(
    r"^(?:(?P<y>\d+)y)?(?:(?P<w>\d+)w)?(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?"
    r"(?:(?P<s>\d+)s)?(?:(?P<ms>\d+)ms)?$"
)


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration; raises ``ValueError`` with the accepted form."""
    match = _PATTERN.match(text) if text else None
    if match is None or not any(match.groupdict().values()):
        raise ValueError(
            f"invalid duration {text!r}: expected a Prometheus duration such as 30s, 5m, 1h or 30d"
        )
    millis = sum(int(v) * _UNITS[unit] for unit, v in match.groupdict().items() if v)
    if millis == 0:
        raise ValueError(f"invalid duration {text!r}: must be greater than zero")
    return millis / 1000


@lru_cache(maxsize=4096)  # a cycle formats the same few durations for every target
def format_duration(seconds: float) -> str:
    """The canonical Prometheus text for ``seconds`` (``3600`` → ``1h``, ``5400`` → ``1h30m``)."""
    millis = round(seconds * 1000)
    if millis <= 0:
        raise ValueError(f"duration must be positive, got {seconds}")
    parts = []
    for unit, size in _UNITS.items():
        if unit in ("y", "w"):  # Prometheus prints days rather than weeks or years
            continue
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


FROM_TEXT = "from_text"
"""Validation-context flag: the input is a user's file, where a bare number is a mistake."""


def _to_seconds(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 5m, not a boolean")
    if isinstance(value, int | float) and (info.context or {}).get(FROM_TEXT):
        raise ValueError(f"expected a duration with a unit such as '{value}s', not a bare number")
    return value


Duration = Annotated[
    float,
    BeforeValidator(_to_seconds),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {"type": "string", "pattern": r"^(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$"}
    ),
]
"""A duration in seconds; written in YAML as a Prometheus duration string (Python callers may
pass seconds)."""
