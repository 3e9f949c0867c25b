"""The base of every configuration model and the value types they share.

``Model`` fixes the conventions (camelCase keys, unknown keys rejected, immutable, no NaN);
``OneOf`` is a block holding exactly one of its fields. The annotated types validate names and
addresses with :mod:`trimtab.slo.names` before they can reach a query or a proxy's config.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

from .durations import Duration, parse_duration
from .names import (
    check_backend,
    check_dns_label,
    check_host_port,
    check_label_name,
    check_object_name,
    check_proxy_name,
)

__all__ = [
    "NAME_PATTERN",
    "Backend",
    "DnsLabel",
    "HostPort",
    "LabelName",
    "Model",
    "ObjectName",
    "OneOf",
    "PositiveDuration",
    "ProxyName",
    "ThresholdValue",
]

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class Model(BaseModel):
    """Base of every configuration model: camelCase keys, unknown keys rejected, immutable."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        allow_inf_nan=False,
    )


class OneOf(Model):
    """A block that holds exactly one of its optional fields (an indicator kind, an adapter)."""

    what: ClassVar[str] = "field"

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            names = ", ".join(f.alias or n for n, f in type(self).model_fields.items())
            raise ValueError(f"give exactly one {self.what} of: {names}")
        return self

    @property
    def chosen(self) -> tuple[str, Model]:
        """The YAML name of the field given and its value."""
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if value is not None:
                return info.alias or name, value
        raise AssertionError("a validated OneOf holds one field")


def _seconds_or_number(value: Any) -> Any:
    """A threshold written as a duration (``250ms``) becomes seconds; numbers stay numbers."""
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError:
            raise ValueError(
                f"expected a number or a duration such as 250ms, got {value!r}"
            ) from None
    return value


ThresholdValue = Annotated[float, BeforeValidator(_seconds_or_number)]
"""A number, or a duration string meaning seconds (for latency values)."""

ObjectName = Annotated[
    str,
    AfterValidator(check_object_name),
    WithJsonSchema({"type": "string", "pattern": NAME_PATTERN, "maxLength": 63}),
]
Backend = Annotated[str, AfterValidator(check_backend)]
LabelName = Annotated[str, AfterValidator(check_label_name)]
ProxyName = Annotated[str, AfterValidator(check_proxy_name)]
DnsLabel = Annotated[str, AfterValidator(check_dns_label)]
HostPort = Annotated[str, AfterValidator(check_host_port)]
PositiveDuration = Annotated[Duration, Field(gt=0)]
