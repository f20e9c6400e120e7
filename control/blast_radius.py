"""What a rules change would do: which funnels and countries change, and which share of
their units would move backend. Pure: it compares two RuleSets.

Because a unit is in the core when its bucket is below the percentage, a change from p to q
(same salt) moves exactly |q - p| of the units: q - p from legacy to core when raising,
p - q from core to legacy when lowering (units with a checkout in flight finish first).
A new salt reshuffles: p(1-q) move to legacy and q(1-p) to core, in expectation.
"""

from __future__ import annotations

from dataclasses import dataclass

from control.rules import Funnel, RuleSet

OTHERS = "*"


@dataclass(frozen=True, slots=True)
class Change:
    funnel: str
    country: str  # an explicit country, or "*" for every country not named
    before_bp: int
    after_bp: int
    to_core: float  # share of this slice's units that move legacy -> core
    to_legacy: float  # share that move core -> legacy
    note: str = ""

    def sentence(self) -> str:
        where = "all other countries" if self.country == OTHERS else self.country
        move = []
        if self.to_core:
            move.append(f"{self.to_core:.2%} of units move to core")
        if self.to_legacy:
            move.append(f"{self.to_legacy:.2%} move back to legacy")
        text = (f"{self.funnel} / {where}: {self.before_bp / 100:g}% -> "
                f"{self.after_bp / 100:g}% ({', '.join(move) or 'no unit moves'})")
        return f"{text}; {self.note}" if self.note else text


def _bp(funnel: Funnel | None, country: str) -> int:
    if funnel is None:
        return 0
    rule = funnel.rule_for(None if country == OTHERS else country)
    if rule is None:
        return 0
    if country == OTHERS and rule.countries is not None:
        return 0  # only a catch-all rule applies to countries nobody named
    return rule.basis_points


def _countries(*funnels: Funnel | None) -> list[str]:
    named = {
        c for f in funnels if f is not None for r in f.rules if r.countries for c in r.countries
    }
    return [*sorted(named), OTHERS]


def _slice(name: str, country: str, old: Funnel | None, new: Funnel | None) -> Change | None:
    before, after = _bp(old, country), _bp(new, country)
    p, q = before / 10_000, after / 10_000
    if old is not None and new is not None and old.salt != new.salt and (p or q):
        return Change(name, country, before, after, q * (1 - p), p * (1 - q),
                      "new salt: units are reshuffled")
    if before == after:
        return None
    return Change(name, country, before, after, max(q - p, 0.0), max(p - q, 0.0))


def blast_radius(old: RuleSet | None, new: RuleSet) -> list[Change]:
    """Every (funnel, country) slice whose routing would change."""
    names = [f.name for f in new.funnels]
    if old is not None:
        names += [f.name for f in old.funnels if new.funnel(f.name) is None]
    changes = []
    for name in names:
        before = old.funnel(name) if old is not None else None
        after = new.funnel(name)
        for country in _countries(before, after):
            change = _slice(name, country, before, after)
            if change is not None:
                changes.append(change)
    return changes
