"""The alert rules (deploy/prometheus/alerts.yaml) and the Grafana dashboard
(deploy/grafana/checkout-strangler.json) query only what the proxy exports.

Every expression is parsed as PromQL (promql-parser, in the deploy extra), and every metric
it selects must be a series of `proxy.metrics.ProxyMetrics`' registry, with labels that metric
has (or that Prometheus adds to every target). A renamed metric or label fails here, not in
production, where an alert on a missing series never fires.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from proxy.metrics import ProxyMetrics
from tests.deploy.helm import REPO, missing

ALERTS = REPO / "deploy" / "prometheus" / "alerts.yaml"
DASHBOARD = REPO / "deploy" / "grafana" / "checkout-strangler.json"
# labels Prometheus (and the Kubernetes service discovery of prometheus-operator) attaches
TARGET_LABELS = {"instance", "job", "namespace", "pod", "service", "container", "endpoint"}
SCRAPE_SERIES: dict[str, set[str]] = {"up": set()}  # written by Prometheus for each target, not by the proxy
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h",
                     "$funnel": ".*"}


def exported() -> dict[str, set[str]]:
    """Series name -> label names, for every series the proxy's registry can expose."""
    series: dict[str, set[str]] = dict(SCRAPE_SERIES)
    metrics = ProxyMetrics()
    for collector in vars(metrics).values():
        name = getattr(collector, "_name", None)
        kind = getattr(collector, "_type", None)
        if not name or not kind:
            continue
        labels = set(collector._labelnames)
        if kind == "counter":
            series[f"{name}_total"] = labels
        elif kind == "histogram":
            series[f"{name}_bucket"] = labels | {"le"}
            series[f"{name}_count"] = labels
            series[f"{name}_sum"] = labels
        else:
            series[name] = labels
    return series


SERIES = exported()


def test_the_series_list_covers_every_metric_of_the_registry() -> None:
    families = {family.name for family in ProxyMetrics().registry.collect()}
    assert families
    for family in families:
        assert any(name == family or name.startswith(family + "_") for name in SERIES), family


def parser() -> Any:
    try:
        import promql_parser
    except ImportError:
        missing("promql-parser is not installed")
    return promql_parser


def selectors(node: Any) -> Iterator[Any]:
    """Every VectorSelector of an expression tree."""
    pp = parser()
    if isinstance(node, pp.VectorSelector):
        yield node
    elif isinstance(node, pp.MatrixSelector):
        yield node.vector_selector
    elif isinstance(node, pp.Call):
        for arg in node.args:
            yield from selectors(arg)
    elif isinstance(node, pp.BinaryExpr):
        yield from selectors(node.lhs)
        yield from selectors(node.rhs)
    elif isinstance(node, pp.AggregateExpr):
        yield from selectors(node.expr)
        if node.param is not None:
            yield from selectors(node.param)
    elif isinstance(node, pp.ParenExpr | pp.UnaryExpr | pp.SubqueryExpr):
        yield from selectors(node.expr)


def groupings(node: Any) -> Iterator[list[str]]:
    """The label lists of every `by (...)` / `without (...)` and `on (...)` in the tree."""
    pp = parser()
    if isinstance(node, pp.AggregateExpr):
        if node.modifier is not None:
            yield list(node.modifier.labels)
        yield from groupings(node.expr)
    elif isinstance(node, pp.BinaryExpr):
        matching = getattr(node.modifier, "matching", None) if node.modifier else None
        if matching is not None:
            yield list(matching.labels)
        yield from groupings(node.lhs)
        yield from groupings(node.rhs)
    elif isinstance(node, pp.Call):
        for arg in node.args:
            yield from groupings(arg)
    elif isinstance(node, pp.ParenExpr | pp.UnaryExpr | pp.SubqueryExpr):
        yield from groupings(node.expr)


def output_labels(node: Any) -> set[str]:
    """The labels the result of an expression keeps (what `$labels.X` can name)."""
    pp = parser()
    if isinstance(node, pp.VectorSelector):
        return SERIES.get(node.name or "", set()) | TARGET_LABELS
    if isinstance(node, pp.MatrixSelector):
        return output_labels(node.vector_selector)
    if isinstance(node, pp.AggregateExpr):
        if node.modifier is None:
            return set()
        labels = set(node.modifier.labels)
        if node.modifier.type == pp.AggModifierType.By:
            return labels
        return output_labels(node.expr) - labels
    if isinstance(node, pp.Call):
        vectors = [output_labels(a) for a in node.args if not isinstance(
            a, pp.NumberLiteral | pp.StringLiteral)]
        labels = vectors[-1] if vectors else set()
        return labels - {"le"} if node.func.name == "histogram_quantile" else labels
    if isinstance(node, pp.BinaryExpr):
        if isinstance(node.lhs, pp.NumberLiteral):
            return output_labels(node.rhs)
        return output_labels(node.lhs)
    if isinstance(node, pp.ParenExpr | pp.UnaryExpr | pp.SubqueryExpr):
        return output_labels(node.expr)
    return set()


def check_expression(expr: str, where: str) -> set[str]:
    """Parse `expr`; assert it selects exported series with their labels only. Returns the
    series it selects."""
    try:
        tree = parser().parse(expr)
    except ValueError as exc:
        raise AssertionError(f"{where}: not PromQL: {exc}\n{expr}") from exc
    used: set[str] = set()
    labels_in_play: set[str] = set(TARGET_LABELS)
    for selector in selectors(tree):
        name = selector.name
        assert name in SERIES, f"{where}: {name} is not a series the proxy exports"
        used.add(name)
        labels_in_play |= SERIES[name]
        for matcher in selector.matchers.matchers:
            assert matcher.name in SERIES[name] | TARGET_LABELS, (
                f"{where}: {name} has no label {matcher.name}")
    for labels in groupings(tree):
        unknown = set(labels) - labels_in_play
        assert not unknown, f"{where}: grouping by labels no selected series has: {unknown}"
    assert used, f"{where}: selects no series"
    return used


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_alert_rule_file_has_the_shape_prometheus_loads() -> None:
    doc = yaml.safe_load(ALERTS.read_text())
    assert set(doc) == {"groups"}
    names = [group["name"] for group in doc["groups"]]
    assert len(names) == len(set(names))
    alerts = [rule["alert"] for rule in alert_rules()]
    assert len(alerts) == len(set(alerts)), "alert names repeat"
    for rule in alert_rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations",
                             "keep_firing_for"}, rule["alert"]
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_expressions_query_what_the_proxy_exports(rule: dict[str, Any]) -> None:
    check_expression(rule["expr"], rule["alert"])
    kept = output_labels(parser().parse(rule["expr"]))
    for text in rule["annotations"].values():
        for label in re.findall(r"\$labels\.(\w+)", text):
            assert label in kept, f"{rule['alert']}: $labels.{label} is not in its result"


def test_alerts_cover_the_failures_the_docs_promise() -> None:
    used: set[str] = set()
    for rule in alert_rules():
        used |= check_expression(rule["expr"], rule["alert"])
    assert used >= {
        "strangler_kill_switch", "strangler_guardrail_trips_total",
        "strangler_store_errors_total", "strangler_background_errors_total",
        "strangler_rules_conflicts", "strangler_upstream_errors_total",
        "strangler_request_duration_seconds_bucket", "strangler_rules_reload_failures_total",
        "strangler_guardrail_telemetry_up", "strangler_requests_total",
    }


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def grafana_expressions() -> list[tuple[str, str]]:
    exprs = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            exprs.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for annotation in dashboard()["annotations"]["list"]:
        exprs.append((f"annotation {annotation['name']!r}", annotation["expr"]))
    return exprs


def substitute(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"an unknown Grafana variable in {expr}"
    return expr


def test_dashboard_is_a_grafana_dashboard() -> None:
    board = dashboard()
    assert board["uid"] == "checkout-strangler" and board["title"]
    assert board["schemaVersion"] >= 36
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    funnel_query = variables["funnel"]["query"]["query"]
    assert re.fullmatch(r"label_values\((\w+), funnel\)", funnel_query)
    metric = funnel_query.split("(")[1].split(",")[0]
    assert "funnel" in SERIES[metric]


@pytest.mark.parametrize("where, expr", grafana_expressions(), ids=lambda v: str(v)[:60])
def test_dashboard_queries_what_the_proxy_exports(where: str, expr: str) -> None:
    check_expression(substitute(expr), where)


def test_dashboard_and_alerts_watch_the_same_key_metrics() -> None:
    on_board: set[str] = set()
    for where, expr in grafana_expressions():
        on_board |= check_expression(substitute(expr), where)
    alerted: set[str] = set()
    for rule in alert_rules():
        alerted |= check_expression(rule["expr"], rule["alert"])

    def family(name: str) -> str:
        return re.sub(r"_(bucket|count|sum)$", "", name)

    assert {family(n) for n in alerted - SCRAPE_SERIES.keys()} <= {family(n) for n in on_board}
