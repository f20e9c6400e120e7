"""The rules file format: pydantic models, validated once at load.

These models describe the YAML a release manager writes. They are compiled into the
frozen, hot-path friendly objects of `control.rules` right after validation; nothing on the
request path touches them.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Literal

import pycountry
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from guardrails.spec import GuardrailsSpec
from shadow.spec import ShadowOverrideSpec, ShadowSpec

HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"
IDENTIFIER = r"^[a-z0-9][a-z0-9_.-]{0,62}$"


def _country_code(value: str) -> str:
    if value != value.upper() or pycountry.countries.get(alpha_2=value) is None:
        raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code (e.g. DE, US)")
    return value


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from exc
    return value


def _not_a_yaml_boolean(value: object) -> object:
    """YAML 1.1 reads NO, OFF, YES, ON unquoted as booleans: say so instead of 'not a
    string'."""
    if isinstance(value, bool):
        message = (f"YAML reads an unquoted NO, OFF, YES or ON as a boolean (here "
                   f"{str(value).lower()}): quote country codes such as 'NO' (Norway)")
        raise ValueError(message)  # noqa: TRY004 (pydantic reports ValueError, not TypeError)
    return value


CountryCode = Annotated[str, BeforeValidator(_not_a_yaml_boolean),
                        AfterValidator(_country_code)]
Regex = Annotated[str, AfterValidator(_regex)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class ContextSpec(Strict):
    """Where the proxy finds the funnel, the country and the sticky unit of a request."""

    funnel_header: str = Field("X-Checkout-Funnel", pattern=HEADER_NAME)
    country_headers: list[Annotated[str, Field(pattern=HEADER_NAME)]] = Field(
        default_factory=lambda: ["X-Country", "CloudFront-Viewer-Country", "CF-IPCountry"],
        min_length=1,
    )
    session_cookie: str = Field("checkout_session", pattern=r"^[A-Za-z0-9_.-]+$")
    session_header: str = Field("X-Checkout-Session", pattern=HEADER_NAME)


class StickinessSpec(Strict):
    """How long a unit keeps its backend without activity, while its checkout is in flight."""

    idle_ttl_seconds: int = Field(3600, ge=60, le=7 * 24 * 3600)


class MatchSpec(Strict):
    """A funnel matches a request by the funnel header's value or by a path prefix."""

    header: str | None = Field(None, min_length=1, max_length=64)
    path_prefix: str | None = Field(None, pattern=r"^/[A-Za-z0-9._~/-]*[^/]$")
    strip_prefix: bool = True

    @field_validator("path_prefix")
    @classmethod
    def _no_dot_segments(cls, value: str | None) -> str | None:
        if value is not None and any(seg in {".", ".."} for seg in value.split("/")):
            raise ValueError("path_prefix may not contain '.' or '..' segments")
        return value


class SignalSpec(Strict):
    """A response that means something to the business: method, path pattern, statuses."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    path: Regex
    status: list[Annotated[int, Field(ge=100, le=599)]] = Field(min_length=1)


class SignalsSpec(Strict):
    checkout_started: SignalSpec | None = None
    order_placed: SignalSpec | None = None
    payment_attempted: SignalSpec | None = None
    payment_declined: SignalSpec | None = None
    payment_failed: SignalSpec | None = None


class RuleSpec(Strict):
    """Countries (a list, or '*' for all) and the share of units routed to the core."""

    id: str = Field(pattern=IDENTIFIER)
    countries: list[CountryCode] | Literal["*"] = Field(min_length=1)
    percent: Decimal = Field(ge=0, le=100, decimal_places=2)
    note: str | None = None
    shadow: ShadowOverrideSpec | None = Field(
        None, description="Shadow parity of the requests this rule matches: each field set "
        "here replaces the funnel's shadow field.",
    )

    @property
    def basis_points(self) -> int:
        return int(self.percent * 100)


class FunnelSpec(Strict):
    name: str = Field(pattern=IDENTIFIER)
    description: str | None = None
    match: MatchSpec
    salt: str = Field(min_length=1, max_length=128)
    signals: SignalsSpec = Field(default_factory=SignalsSpec)
    rules: list[RuleSpec] = Field(default_factory=list)
    guardrails: GuardrailsSpec | None = Field(
        None, description="This funnel's guardrails; each section set here replaces the "
        "top-level default's section.",
    )
    shadow: ShadowSpec | None = Field(
        None, description="Shadow parity: replay a share of the cart building legacy serves "
        "to the core and compare the responses (docs/shadow.md).",
    )


class RulesFile(Strict):
    """The whole rules file."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, str_strip_whitespace=True,
        json_schema_extra={"title": "checkout strangler rules"},
    )

    schema_version: Literal[1] = Field(1, alias="schema")
    context: ContextSpec = Field(default_factory=ContextSpec)
    stickiness: StickinessSpec = Field(default_factory=StickinessSpec)
    guardrails: GuardrailsSpec | None = Field(
        None, description="Default guardrails of every funnel (none when absent).",
    )
    funnels: list[FunnelSpec] = Field(default_factory=list)
