from __future__ import annotations

import pytest

from control.bucketing import bucket
from control.decision import Backend, Decision, Reason, decide, owner_of
from control.rules_loader import load_rules_text
from proxy.context import extract_context

RULES = load_rules_text("""\
schema: 1
funnels:
  - name: warranties
    match: {header: warranties, path_prefix: /warranties}
    salt: w1
    rules:
      - {id: all-in, countries: [IE], percent: 100}
      - {id: none, countries: [DE], percent: 0}
      - {id: half, countries: '*', percent: 50}
  - name: hardware
    match: {header: hardware}
    salt: h1
    rules:
      - {id: de-only, countries: [DE], percent: 100}
""", "12")


def ctx(path="/carts", funnel="warranties", country="IE", unit="unit-0001"):
    headers = [(b"x-checkout-session", unit.encode())]
    if funnel:
        headers.append((b"x-checkout-funnel", funnel.encode()))
    if country:
        headers.append((b"x-country", country.encode()))
    return extract_context(RULES, path, headers)


# (context kwargs, kills, sticky, expected backend, reason, rule id)
TABLE = [
    ({}, frozenset(), None, Backend.CORE, Reason.RULE, "all-in"),
    ({"country": "DE"}, frozenset(), None, Backend.LEGACY, Reason.RULE, "none"),
    ({}, frozenset({"*"}), None, Backend.LEGACY, Reason.KILL_SWITCH, None),
    ({}, frozenset({"warranties"}), None, Backend.LEGACY, Reason.KILL_SWITCH, None),
    ({}, frozenset({"hardware"}), None, Backend.CORE, Reason.RULE, "all-in"),
    ({"path": "/carts/co_cart_1/items"}, frozenset(), None, Backend.CORE, Reason.OWNER, None),
    ({"path": "/orders/lg_ord_9", "country": "IE"}, frozenset(), None, Backend.LEGACY,
     Reason.OWNER, None),
    ({"path": "/checkouts/co_chk_1/orders"}, frozenset({"*"}), None, Backend.LEGACY,
     Reason.KILL_SWITCH, None),
    ({}, frozenset(), Backend.LEGACY, Backend.LEGACY, Reason.STICKY, None),
    ({"country": "DE"}, frozenset(), Backend.CORE, Backend.CORE, Reason.STICKY, None),
    ({"path": "/carts/lg_cart_1"}, frozenset(), Backend.CORE, Backend.LEGACY, Reason.OWNER, None),
    ({"funnel": None}, frozenset(), None, Backend.LEGACY, Reason.DEFAULT, None),
    ({"funnel": "unknown"}, frozenset(), None, Backend.LEGACY, Reason.DEFAULT, None),
    ({"funnel": "hardware", "country": "FR"}, frozenset(), None, Backend.LEGACY,
     Reason.DEFAULT, None),
    ({"funnel": "hardware", "country": None}, frozenset(), None, Backend.LEGACY,
     Reason.DEFAULT, None),
    ({"funnel": "hardware", "country": "DE"}, frozenset(), None, Backend.CORE, Reason.RULE,
     "de-only"),
    ({"funnel": None, "path": "/warranties/carts"}, frozenset(), None, Backend.CORE,
     Reason.RULE, "all-in"),
]


@pytest.mark.parametrize(("kwargs", "kills", "sticky", "backend", "reason", "rule_id"), TABLE)
def test_decision_table(kwargs, kills, sticky, backend, reason, rule_id):
    decision = decide(ctx(**kwargs), RULES, kills, sticky)
    assert (decision.backend, decision.reason, decision.rule_id) == (backend, reason, rule_id)
    assert decision.rules_version == "12"


def test_rule_decision_carries_the_bucket_and_compares_it_to_basis_points():
    for i in range(300):
        unit = f"unit-{i:04d}"
        decision = decide(ctx(country="FR", unit=unit), RULES, frozenset())
        assert decision.bucket == bucket("w1", unit)
        assert (decision.backend is Backend.CORE) == (decision.bucket < 5000)


def test_no_rules_sends_everything_to_legacy():
    context = extract_context(None, "/carts", [(b"x-checkout-funnel", b"warranties")])
    decision = decide(context, None, frozenset())
    assert (decision.backend, decision.reason, decision.rules_version) == (
        Backend.LEGACY, Reason.DEFAULT, "none")


def test_raising_a_percentage_never_moves_a_unit_from_core_to_legacy():
    def rules_at(percent: str):
        return load_rules_text(f"""\
funnels:
  - name: f
    match: {{header: f}}
    salt: s
    rules: [{{id: r, countries: '*', percent: {percent}}}]
""", percent)

    steps = ["0.01", "1", "5", "25", "50", "99.99", "100"]
    units = [f"u-{i:06d}" for i in range(3000)]
    previous: set[str] = set()
    for step in steps:
        rules = rules_at(step)
        core = {
            u for u in units
            if decide(extract_context(rules, "/carts", [(b"x-checkout-funnel", b"f"),
                                                        (b"x-checkout-session", u.encode())]),
                      rules, frozenset()).backend is Backend.CORE
        }
        assert previous <= core
        previous = core
    assert len(previous) == len(units)


@pytest.mark.parametrize(("decision", "header"), [
    (Decision(Backend.CORE, Reason.RULE, "3", "pilot", 42), "RULE; rule=pilot; bucket=42; rules=3"),
    (Decision(Backend.LEGACY, Reason.KILL_SWITCH, "3"), "KILL_SWITCH; rules=3"),
    (Decision(Backend.CORE, Reason.RULE, "3", "p", 1).failed_over(),
     "FAILOVER; rule=p; bucket=1; rules=3"),
])
def test_decision_header_value(decision, header):
    assert decision.header_value() == header


@pytest.mark.parametrize(("entity", "owner"), [
    ("co_cart_1", Backend.CORE), ("lg_cart_1", Backend.LEGACY), ("12345", Backend.LEGACY),
    ("CO_cart", Backend.LEGACY),
])
def test_owner_of_an_id(entity, owner):
    assert owner_of(entity) is owner
