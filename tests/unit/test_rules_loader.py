from __future__ import annotations

from pathlib import Path

import pytest

from control.rules_loader import RulesError, load_rules_file, load_rules_text

SAMPLE = Path(__file__).resolve().parents[2] / "rules" / "checkout.yaml"

BASE = """\
schema: 1
funnels:
  - name: warranties
    match: {header: warranties, path_prefix: /warranties}
    salt: w1
    rules:
      - id: pilot
        countries: [IE, PT]
        percent: 25
      - id: rest
        countries: '*'
        percent: 0.01
"""


def test_sample_rules_load():
    rules = load_rules_file(SAMPLE)
    names = [f.name for f in rules.funnels]
    assert names == ["warranties", "accessories", "subscriptions", "hardware"]
    pilot = rules.funnel("warranties").rules[0]
    assert pilot.countries == frozenset({"IE", "PT", "FI"})


def test_percent_is_compiled_to_basis_points_down_to_one_hundredth():
    rules = load_rules_text(BASE, "1")
    funnel = rules.funnel("warranties")
    assert [r.basis_points for r in funnel.rules] == [2500, 1]
    assert funnel.rules[1].countries is None


def test_header_and_prefix_index_the_funnel():
    rules = load_rules_text(BASE, "7")
    assert rules.by_header["warranties"].name == "warranties"
    assert rules.by_prefix[0][0] == "/warranties"
    assert rules.version == "7"


BAD = [
    # (replace this, with that, expected line, expected field, words in message)
    ("percent: 25", "percent: 150", 9, "funnels[0].rules[0].percent", "less than or equal"),
    ("percent: 25", "percent: -1", 9, "funnels[0].rules[0].percent", "greater than or equal"),
    ("percent: 0.01", "percent: 0.001", 12, "funnels[0].rules[1].percent", "decimal places"),
    ("[IE, PT]", "[IE, XX]", 8, "funnels[0].rules[0].countries[1]", "ISO 3166"),
    ("[IE, PT]", "[IE, pt]", 8, "funnels[0].rules[0].countries[1]", "ISO 3166"),
    ("[IE, PT]", "[IE, IE]", 8, "funnels[0].rules[0].countries[1]", "duplicate country"),
    ("    salt: w1\n", "    salt: w1\n    colour: red\n", 6, "funnels[0].colour", "unknown key"),
    ("schema: 1", "schema: 2", 1, "schema", "Input should be 1"),
    ("id: rest", "id: pilot", 10, "funnels[0].rules[1].id", "duplicate rule id"),
    ("    salt: w1\n", "", 3, "funnels[0].salt", "Field required"),
    ("match: {header: warranties, path_prefix: /warranties}", "match: {}", 4,
     "funnels[0].match", "matches by"),
    ("path_prefix: /warranties", "path_prefix: /a/../b", 4, "funnels[0].match.path_prefix",
     "'..'"),
    ("percent: 25", "percent: 25\n        percent: 30", 10, "funnels[0].rules[0].percent",
     "duplicate key"),
]


@pytest.mark.parametrize(("old", "new", "line", "field", "words"), BAD)
def test_bad_rules_name_file_line_and_field(old, new, line, field, words):
    assert old in BASE
    with pytest.raises(RulesError) as info:
        load_rules_text(BASE.replace(old, new, 1), "1", "bad.yaml")
    issue = info.value.issues[0]
    assert (issue.source, issue.line, issue.field) == ("bad.yaml", line, field), str(info.value)
    assert words in issue.message
    assert str(info.value).startswith(f"bad.yaml:{line}: {field}: ")


def test_duplicate_funnel_names_the_second_one():
    text = BASE + BASE.split("funnels:\n", 1)[1].replace("header: warranties", "header: w2") \
        .replace("/warranties", "/w2").replace("id: pilot", "id: p2").replace("id: rest", "id: r2")
    with pytest.raises(RulesError) as info:
        load_rules_text(text, "1", "dup.yaml")
    fields = {(i.field, i.line) for i in info.value.issues}
    assert ("funnels[1].name", 13) in fields
    assert all("duplicate funnel" in i.message for i in info.value.issues)


@pytest.mark.parametrize(("text", "words"), [
    ("", "empty"),
    ("funnels: [\n", "invalid YAML"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("funnels: {a: 1}", "valid list"),
])
def test_malformed_files_fail_with_a_clear_error(text, words):
    with pytest.raises(RulesError) as info:
        load_rules_text(text, "1", "x.yaml")
    assert words in str(info.value)


def test_unreadable_file_names_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(RulesError) as info:
        load_rules_file(missing)
    assert str(missing) in str(info.value)


@pytest.mark.parametrize("word", ["NO", "no", "No", "ON", "YES", "off", "true"])
def test_a_yaml_boolean_where_a_country_belongs_says_to_quote_it(word: str) -> None:
    text = f"""\
schema: 1
funnels:
  - name: warranties
    match: {{header: warranties}}
    salt: w1
    rules:
      - {{id: nordics, countries: [SE, {word}], percent: 5}}
"""
    with pytest.raises(RulesError) as caught:
        load_rules_text(text, "1", "rules.yaml")
    [issue] = caught.value.issues
    assert (issue.line, issue.field) == (7, "funnels[0].rules[0].countries[1]")
    assert "quote" in issue.message and "'NO'" in issue.message
