"""What a rules change will do, shown before it is applied: `ramp` and `rollout start`."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

import typer

from cli.common import console, fail

if TYPE_CHECKING:
    from control.rules import RuleSet


def effective_percent(rules: RuleSet, funnel: str, country: str | None) -> Decimal | None:
    """The percentage the rules give `country` (None: the catch-all) in `funnel`, or None
    when no rule matches it (legacy by default)."""
    target = rules.funnel(funnel)
    rule = target.rule_for(country) if target is not None else None
    return Decimal(rule.basis_points) / 100 if rule is not None else None


def show_and_confirm(
    old: RuleSet, new: RuleSet, sentence: str, *, yes: bool, refuse_lower: tuple[str, str | None]
    | None = None,
) -> None:
    """Print the change and its blast radius, then ask (unless `yes`); exit 1 on no.

    With `refuse_lower=(funnel, country)`, a change that lowers that percentage exits 2.
    """
    from control.blast_radius import blast_radius

    if refuse_lower is not None:
        before = effective_percent(old, *refuse_lower)
        after = effective_percent(new, *refuse_lower)
        if before is not None and after is not None and after < before:
            fail(f"this would lower {refuse_lower[0]} / {refuse_lower[1] or 'all countries'} "
                 f"from {before:g}% to {after:g}%: pass --allow-lower if that is meant", 2)
    changes = blast_radius(old, new)
    console.print(f"{sentence}\nblast radius:")
    for change in changes:
        console.print(f"  {change.sentence()}")
    if not changes:
        console.print("  no unit changes backend")
    if not yes and not typer.confirm("apply?", default=False):
        raise typer.Exit(1)
