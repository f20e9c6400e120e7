"""Pricing rules of the contract: line totals, discounts, taxes. Pure integer arithmetic."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from legacy_stub.catalog import Promotion

BASIS_POINTS = 10_000


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
    """Percent: floor of the share; fixed: the value, never more than the subtotal."""
    if promotion is None:
        return 0
    if promotion.kind == "percent":
        return subtotal * promotion.value // 100
    return min(promotion.value, subtotal)


def tax_for(taxable: int, tax_rate_bp: int) -> int:
    """`taxable * rate`, rounded half up to a whole minor unit (taxable is never negative)."""
    return (taxable * tax_rate_bp + BASIS_POINTS // 2) // BASIS_POINTS


def price(lines: Sequence[Line], tax_rate_bp: int, promotion: Promotion | None = None) -> Totals:
    subtotal = subtotal_of(lines)
    discount = discount_for(promotion, subtotal)
    return Totals(subtotal, discount, tax_for(subtotal - discount, tax_rate_bp))
