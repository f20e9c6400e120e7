"""The `shadow:` section of a funnel (or of a rule) in the rules file, and its compiled form.

```yaml
funnels:
  - name: warranties
    shadow:
      share: 10                    # % of the units legacy serves whose cart building is replayed
      routes: ['POST /carts', 'POST /carts/{cart_id}/items']   # default: all cart building
      ignore: ['items[sku].name']  # field paths left out of the comparison
      tolerances: {tax: 1}         # field path -> absolute numeric tolerance
      min_units: 200               # compared units a parity gate needs (default 100)
    rules:
      - {id: ie, countries: [IE], percent: 0, shadow: {share: 100}}
```

A rule's `shadow:` is merged over its funnel's field by field (the fields the rule sets
replace the funnel's), for the requests that rule matches; `share: 0` switches the shadow off
for them. Routes that place or read an order are refused (`shadow.routes`). Pure: pydantic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from shadow.routes import CART_BUILDING, parse_route_key

DEFAULT_MIN_UNITS = 100
# A field path as the comparison names it: `total`, `shipping_address.city`,
# `items[sku].line_total` (items matched by sku), `errors[].field` (matched by position).
_SEGMENT = r"[A-Za-z_][A-Za-z0-9_-]*(\[(sku)?\])?"
FIELD_PATH = re.compile(rf"^{_SEGMENT}(\.{_SEGMENT})*$")


def _route_key(value: str) -> str:
    return parse_route_key(value).key


def _field_path(value: str) -> str:
    if not FIELD_PATH.match(value):
        raise ValueError(f"{value!r} is not a field path such as 'tax', "
                         "'shipping_address.city' or 'items[sku].line_total'")
    return value


def _unique(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{v!r} is listed twice")
        seen.add(v)
    return values


RouteKey = Annotated[str, AfterValidator(_route_key)]
FieldPath = Annotated[str, AfterValidator(_field_path)]
Tolerance = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Share = Annotated[Decimal, Field(ge=0, le=100, decimal_places=2)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class ShadowSpec(_Strict):
    """Shadow parity of a funnel: which legacy-served requests are replayed to the core, and
    how their responses are compared."""

    share: Share = Field(description="Percentage (0-100, two decimals) of the units legacy "
                         "serves whose cart-building requests are replayed to the core.")
    routes: Annotated[list[RouteKey] | None, AfterValidator(_unique)] = Field(
        None, min_length=1, description="Routes replayed, as 'METHOD /path' (default: every "
        "cart-building route). Placing or reading an order is refused.")
    ignore: Annotated[list[FieldPath], AfterValidator(_unique)] = Field(
        default_factory=list, description="Field paths left out of the comparison; a path "
        "also covers the fields below it.")
    tolerances: dict[FieldPath, Tolerance] = Field(
        default_factory=dict, description="Field path -> absolute tolerance of a numeric "
        "field (money is compared exactly unless listed here).")
    min_units: int = Field(DEFAULT_MIN_UNITS, ge=1, description="Compared units a parity "
                           "gate needs before it judges.")


class ShadowOverrideSpec(_Strict):
    """A rule's shadow: each field set replaces the funnel's, for the requests the rule
    matches. Without a funnel shadow, `share` is required."""

    share: Share | None = None
    routes: Annotated[list[RouteKey] | None, AfterValidator(_unique)] = Field(None, min_length=1)
    ignore: Annotated[list[FieldPath] | None, AfterValidator(_unique)] = None
    tolerances: dict[FieldPath, Tolerance] | None = None
    min_units: int | None = Field(None, ge=1)


def merge_shadow(funnel: ShadowSpec | None,
                 rule: ShadowOverrideSpec | None) -> ShadowSpec | None:
    """The shadow of a rule's requests: the rule's fields over the funnel's. ValueError when
    neither gives a share (the loader reports it first, with the line)."""
    if rule is None:
        return funnel
    update = {name: getattr(rule, name) for name in rule.model_fields_set
              if getattr(rule, name) is not None}
    if funnel is None:
        if "share" not in update:
            raise ValueError("a rule's shadow needs a share when its funnel has no shadow")
        return ShadowSpec.model_validate(update)
    return funnel.model_copy(update=update)


@dataclass(frozen=True, slots=True)
class ShadowConfig:
    """Compiled shadow section: what `shadow.selection` and `shadow.compare` use."""

    basis_points: int  # 0..10000 of the units legacy serves
    routes: frozenset[str] = CART_BUILDING  # route keys
    ignore: tuple[str, ...] = ()
    tolerances: tuple[tuple[str, float], ...] = ()
    min_units: int = DEFAULT_MIN_UNITS

    @property
    def percent(self) -> float:
        return self.basis_points / 100

    def tolerance_map(self) -> dict[str, float]:
        return dict(self.tolerances)

    def describe(self) -> str:
        """One line for `rules diff`, `status` and `explain`."""
        if self.basis_points == 0:
            return "shadow off (share 0%)"
        routes = ("all cart-building routes" if self.routes == CART_BUILDING
                  else ", ".join(sorted(self.routes)))
        parts = [f"shadow {self.percent:g}% of legacy-served units", routes]
        if self.ignore:
            parts.append("ignoring " + ", ".join(self.ignore))
        if self.tolerances:
            parts.append("tolerances " + ", ".join(f"{p} ±{t:g}" for p, t in self.tolerances))
        parts.append(f"parity needs {self.min_units} compared units")
        return "; ".join(parts)

    def to_json(self) -> dict[str, object]:
        return {
            "percent": self.percent,
            "routes": sorted(self.routes),
            "ignore": list(self.ignore),
            "tolerances": dict(self.tolerances),
            "min_units": self.min_units,
            "summary": self.describe(),
        }


def compile_shadow(spec: ShadowSpec | None) -> ShadowConfig | None:
    if spec is None:
        return None
    return ShadowConfig(
        basis_points=int(spec.share * 100),
        routes=CART_BUILDING if spec.routes is None else frozenset(spec.routes),
        ignore=tuple(spec.ignore),
        tolerances=tuple(sorted(spec.tolerances.items())),
        min_units=spec.min_units,
    )
