"""Pricing of docs/contract.md in integer minor units: lines, promotions, tax, totals."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from checkout_core.domain.catalog import Promotion
from checkout_core.domain.errors import ValidationFailed

BASIS_POINTS = 10_000

DriftKind = Literal["tax_round_down", "tax_rate_plus_100bp"]
DRIFT_KINDS: tuple[DriftKind, ...] = ("tax_round_down", "tax_rate_plus_100bp")


@dataclass(frozen=True, slots=True)
class Line:
    sku: str
    name: str
    quantity: int
    unit_price: int

    @property
    def line_total(self) -> int:
        return self.unit_price * self.quantity


@dataclass(frozen=True, slots=True)
class Totals:
    subtotal: int
    discount: int
    tax: int

    @property
    def total(self) -> int:
        return self.subtotal - self.discount + self.tax


def subtotal_of(lines: Sequence[Line]) -> int:
    return sum(line.line_total for line in lines)


def discount_for(promotion: Promotion | None, subtotal: int) -> int:
    """Percent: the floor of the share; fixed: the value, never more than the subtotal."""
    if promotion is None:
        return 0
    if promotion.kind == "percent":
        return subtotal * promotion.value // 100
    return min(promotion.value, subtotal)


@dataclass(frozen=True, slots=True)
class Taxation:
    """How one cart is taxed: its country's rate, rounded half up (or down, in a drill)."""

    rate_bp: int
    round_down: bool = False


@dataclass(frozen=True, slots=True)
class PricingDrift:
    """A known, deliberate pricing error for fault drills and the shadow parity tests
    (docs/checkout_core.md, "Fault drills"). It changes the tax of carts in `country`, and
    so their `tax` and `total`, and nothing else:

    - `tax_round_down`: the tax is rounded down instead of half up; one minor unit less
      where the exact tax has a fraction of at least one half, the same elsewhere;
    - `tax_rate_plus_100bp`: the rate is one percentage point higher (DE: 20 % instead of
      19 %); more tax on every cart whose taxable amount is at least 100 minor units.
    """

    country: str
    kind: DriftKind

    def taxation(self, country: str, tax_rate_bp: int) -> Taxation:
        if country != self.country:
            return Taxation(tax_rate_bp)
        if self.kind == "tax_round_down":
            return Taxation(tax_rate_bp, round_down=True)
        return Taxation(tax_rate_bp + 100)


def taxation(country: str, tax_rate_bp: int, drift: PricingDrift | None = None) -> Taxation:
    """The taxation of a cart in `country`: its rate, unless a drift is in force there."""
    return Taxation(tax_rate_bp) if drift is None else drift.taxation(country, tax_rate_bp)


def tax_for(taxable: int, tax_rate_bp: int, *, round_down: bool = False) -> int:
    """`taxable * rate` rounded half up to a whole minor unit (taxable is never negative);
    `round_down`: rounded down instead (a pricing drift)."""
    if round_down:
        return taxable * tax_rate_bp // BASIS_POINTS
    return (taxable * tax_rate_bp + BASIS_POINTS // 2) // BASIS_POINTS


def check_promotion(promotion: Promotion, subtotal: int) -> None:
    """Raise `ValidationFailed` on `promotion_code` when the promotion's condition is unmet."""
    if subtotal < promotion.min_subtotal:
        raise ValidationFailed.field(
            "promotion_code",
            f"{promotion.code} needs a subtotal of at least {promotion.min_subtotal}",
        )


def price(
    lines: Sequence[Line], tax: int | Taxation, promotion: Promotion | None = None
) -> Totals:
    """The totals of `lines`; `tax` is the rate in basis points or a whole `Taxation`."""
    subtotal = subtotal_of(lines)
    discount = discount_for(promotion, subtotal)
    rule = tax if isinstance(tax, Taxation) else Taxation(tax)
    return Totals(subtotal, discount,
                  tax_for(subtotal - discount, rule.rate_bp, round_down=rule.round_down))
