"""Compiled rules: frozen, hot-path friendly objects built once from a validated file."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from control.rules_schema import FunnelSpec, RulesFile
from guardrails.spec import GuardrailsSpec, merge_guardrails
from shadow.spec import ShadowConfig, compile_shadow, merge_shadow

SIGNAL_NAMES = (
    "checkout_started", "order_placed", "payment_attempted", "payment_declined", "payment_failed",
)


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    countries: frozenset[str] | None  # None matches every country
    basis_points: int  # 0..10000
    # the shadow of the requests this rule matches (the rule's own merged over the funnel's),
    # or None: the funnel's applies
    shadow: ShadowConfig | None = None

    def matches(self, country: str | None) -> bool:
        return self.countries is None or (country is not None and country in self.countries)


@dataclass(frozen=True, slots=True)
class Signal:
    name: str
    method: str
    path: re.Pattern[str]
    statuses: frozenset[int]

    def matches(self, method: str, path: str, status: int) -> bool:
        return method == self.method and status in self.statuses and bool(self.path.match(path))


@dataclass(frozen=True, slots=True)
class Funnel:
    name: str
    header_value: str | None
    path_prefix: str | None
    strip_prefix: bool
    salt: str
    rules: tuple[Rule, ...]
    signals: tuple[Signal, ...]
    guardrails: GuardrailsSpec | None = None
    # First-match-wins, precomputed: the first rule naming each country before the first
    # catch-all, and that catch-all (rules after it can never match).
    by_country: dict[str, Rule] = field(default_factory=dict)
    catch_all: Rule | None = None
    shadow: ShadowConfig | None = None  # the funnel's shadow parity section

    def rule_for(self, country: str | None) -> Rule | None:
        if country is not None:
            rule = self.by_country.get(country)
            if rule is not None:
                return rule
        return self.catch_all

    def shadow_for(self, country: str | None) -> ShadowConfig | None:
        """The shadow of a request from `country`: its rule's, else the funnel's."""
        rule = self.rule_for(country)
        if rule is not None and rule.shadow is not None:
            return rule.shadow
        return self.shadow

    def shadow_lines(self) -> list[str]:
        """Human sentences of this funnel's shadow, for `rules diff`, `status`, `explain`:
        the funnel's, then each rule that changes it. Empty when there is no shadow."""
        lines = [f"{self.name}: {self.shadow.describe()}"] if self.shadow is not None else []
        lines += [f"{self.name} / rule {r.id}: {r.shadow.describe()}"
                  for r in self.rules if r.shadow is not None and r.shadow != self.shadow]
        return lines


@dataclass(frozen=True, slots=True)
class RuleSet:
    version: str
    funnels: tuple[Funnel, ...]
    funnel_header: str  # lower-case
    country_headers: tuple[str, ...]  # lower-case, in order of preference
    session_cookie: str
    session_header: str  # lower-case
    sticky_ttl_seconds: int
    by_header: dict[str, Funnel] = field(default_factory=dict)
    by_prefix: tuple[tuple[str, Funnel], ...] = ()  # longest prefix first
    # first path segment -> the prefixes starting with it, longest first
    prefix_index: dict[str, tuple[tuple[str, Funnel], ...]] = field(default_factory=dict)
    funnel_header_b: bytes = b""
    country_headers_b: tuple[bytes, ...] = ()
    session_header_b: bytes = b""
    # the countries some rule names (what else a client sends is "other" in the telemetry)
    named_countries: frozenset[str] = frozenset()
    # the funnels with a shadow section, theirs or a rule's (the proxy mirrors only those)
    shadowed_funnels: frozenset[str] = frozenset()

    def funnel(self, name: str) -> Funnel | None:
        for funnel in self.funnels:
            if funnel.name == name:
                return funnel
        return None


def _first_match_index(rules: tuple[Rule, ...]) -> tuple[dict[str, Rule], Rule | None]:
    by_country: dict[str, Rule] = {}
    for rule in rules:
        if rule.countries is None:
            return by_country, rule
        for country in rule.countries:
            by_country.setdefault(country, rule)
    return by_country, None


def _compile_funnel(spec: FunnelSpec, defaults: GuardrailsSpec | None) -> Funnel:
    rules = tuple(
        Rule(
            id=r.id,
            countries=None if r.countries == "*" else frozenset(r.countries),
            basis_points=r.basis_points,
            shadow=None if r.shadow is None else compile_shadow(merge_shadow(spec.shadow,
                                                                             r.shadow)),
        )
        for r in spec.rules
    )
    by_country, catch_all = _first_match_index(rules)
    signals = tuple(
        Signal(name, s.method, re.compile(s.path), frozenset(s.status))
        for name in SIGNAL_NAMES
        if (s := getattr(spec.signals, name)) is not None
    )
    return Funnel(
        name=spec.name,
        header_value=spec.match.header,
        path_prefix=spec.match.path_prefix,
        strip_prefix=spec.match.strip_prefix,
        salt=spec.salt,
        rules=rules,
        signals=signals,
        guardrails=_guardrails(defaults, spec.guardrails),
        by_country=by_country,
        catch_all=catch_all,
        shadow=compile_shadow(spec.shadow),
    )


def _guardrails(
    defaults: GuardrailsSpec | None, own: GuardrailsSpec | None,
) -> GuardrailsSpec | None:
    if defaults is None:
        return own
    return merge_guardrails(defaults, own)


def compile_rules(spec: RulesFile, version: str) -> RuleSet:
    """Turn a validated rules file into the immutable objects the proxy routes with."""
    funnels = tuple(_compile_funnel(f, spec.guardrails) for f in spec.funnels)
    by_header = {f.header_value.lower(): f for f in funnels if f.header_value is not None}
    prefixes = sorted(
        ((f.path_prefix, f) for f in funnels if f.path_prefix is not None),
        key=lambda pair: len(pair[0]),
        reverse=True,
    )
    index: dict[str, list[tuple[str, Funnel]]] = {}
    for prefix, funnel in prefixes:  # already longest first
        index.setdefault(prefix.split("/", 2)[1], []).append((prefix, funnel))
    ctx = spec.context
    return RuleSet(
        version=version,
        funnels=funnels,
        funnel_header=ctx.funnel_header.lower(),
        country_headers=tuple(h.lower() for h in ctx.country_headers),
        session_cookie=ctx.session_cookie,
        session_header=ctx.session_header.lower(),
        sticky_ttl_seconds=spec.stickiness.idle_ttl_seconds,
        by_header=by_header,
        by_prefix=tuple(prefixes),
        prefix_index={k: tuple(v) for k, v in index.items()},
        funnel_header_b=ctx.funnel_header.lower().encode(),
        country_headers_b=tuple(h.lower().encode() for h in ctx.country_headers),
        session_header_b=ctx.session_header.lower().encode(),
        named_countries=frozenset(country for funnel in funnels for rule in funnel.rules
                                  for country in rule.countries or ()),
        shadowed_funnels=frozenset(
            f.name for f in funnels
            if f.shadow is not None or any(r.shadow is not None for r in f.rules)),
    )


def _shadow_text(config: ShadowConfig | None) -> str:
    return "no shadow" if config is None else config.describe()


def shadow_changes(old: RuleSet | None, new: RuleSet) -> list[str]:
    """One sentence per funnel or rule whose shadow section changes, for `rules diff`."""
    names = [f.name for f in new.funnels]
    if old is not None:
        names += [f.name for f in old.funnels if new.funnel(f.name) is None]
    out: list[str] = []
    for name in names:
        before = old.funnel(name) if old is not None else None
        after = new.funnel(name)
        b = before.shadow if before is not None else None
        a = after.shadow if after is not None else None
        if a != b:
            out.append(f"{name}: {_shadow_text(b)} -> {_shadow_text(a)}")
        rules_b = {r.id: r.shadow for r in before.rules} if before is not None else {}
        rules_a = {r.id: r.shadow for r in after.rules} if after is not None else {}
        for rid in [*rules_a, *(r for r in rules_b if r not in rules_a)]:
            rb, ra = rules_b.get(rid), rules_a.get(rid)
            if ra != rb:
                out.append(f"{name} / rule {rid}: {_shadow_text(rb)} -> {_shadow_text(ra)}")
    return out
