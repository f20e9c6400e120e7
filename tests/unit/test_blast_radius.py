from __future__ import annotations

import pytest

from control.blast_radius import OTHERS, blast_radius
from control.rules_loader import load_rules_text


def rules(ie: str = "50", rest: str = "0", salt: str = "s1", extra: str = "") -> object:
    return load_rules_text(f"""\
funnels:
  - name: warranties
    match: {{header: warranties}}
    salt: {salt}
    rules:
      - {{id: ie, countries: [IE], percent: {ie}}}
      - {{id: rest, countries: '*', percent: {rest}}}
{extra}""", "1")


def test_identical_rules_change_nothing():
    assert blast_radius(rules(), rules()) == []


@pytest.mark.parametrize(("old", "new", "to_core", "to_legacy"), [
    ("50", "75", 0.25, 0.0),
    ("50", "10", 0.0, 0.4),
    ("0", "0.01", 0.0001, 0.0),
])
def test_a_percentage_change_moves_exactly_the_difference(old, new, to_core, to_legacy):
    [change] = blast_radius(rules(ie=old), rules(ie=new))
    assert (change.funnel, change.country) == ("warranties", "IE")
    assert change.to_core == pytest.approx(to_core)
    assert change.to_legacy == pytest.approx(to_legacy)


def test_the_catch_all_is_reported_as_other_countries():
    [change] = blast_radius(rules(rest="0"), rules(rest="5"))
    assert change.country == OTHERS
    assert "all other countries: 0% -> 5%" in change.sentence()


def test_a_new_salt_reshuffles_units():
    changes = {c.country: c for c in blast_radius(rules(salt="a"), rules(salt="b"))}
    assert changes["IE"].to_core == pytest.approx(0.25)
    assert changes["IE"].to_legacy == pytest.approx(0.25)
    assert "reshuffled" in changes["IE"].note


def test_a_new_funnel_and_a_removed_one():
    extra = """\
  - name: hardware
    match: {header: hardware}
    salt: h
    rules: [{id: hw, countries: [DE], percent: 10}]
"""
    added = blast_radius(rules(), rules(extra=extra))
    assert [(c.funnel, c.country, c.to_core) for c in added] == [("hardware", "DE", 0.1)]
    removed = blast_radius(rules(extra=extra), rules())
    assert [(c.funnel, c.country, c.to_legacy) for c in removed] == [("hardware", "DE", 0.1)]


def test_no_previous_rules_means_everything_starts_from_legacy():
    changes = blast_radius(None, rules())
    assert [(c.country, c.to_core) for c in changes] == [("IE", 0.5)]
