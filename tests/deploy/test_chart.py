"""The Helm chart (deploy/helm/checkout-strangler): lint, render, validate, and what the
rendered objects promise (docs/deploy.md)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from control.rules_loader import load_rules_text
from tests.deploy.helm import CHART, CI_VALUES, REPO, Helm, missing

CI = {path.stem.removesuffix("-values"): path for path in CI_VALUES}
MONITORING = "monitoring.coreos.com/v1"
# the chart's floor (Chart.yaml kubeVersion) and a recent release
KUBERNETES_VERSIONS = ("1.25.0", "1.35.0")
DRAIN = re.compile(r'"timeout_graceful_shutdown":\s*(\d+)')

Objects = dict[tuple[str, str], dict[str, Any]]


def by_kind(docs: list[dict[str, Any]]) -> Objects:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}


def one(objects: Objects, kind: str, name: str = "shop-checkout-strangler") -> dict[str, Any]:
    return objects[(kind, name)]


def proxy_container(objects: Objects) -> dict[str, Any]:
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "proxy")


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


@pytest.fixture(scope="module")
def default(helm: Helm) -> Objects:
    return by_kind(helm.template(CI["default"]))


@pytest.fixture(scope="module")
def production(helm: Helm) -> Objects:
    return by_kind(helm.template(CI["redis-hpa"], api_versions=(MONITORING,)))


@pytest.fixture(scope="module")
def demo(helm: Helm) -> Objects:
    return by_kind(helm.template(CI["demo"]))


def test_the_ci_values_files_are_the_three_the_docs_name() -> None:
    assert set(CI) >= {"default", "redis-hpa", "demo"}


@pytest.mark.parametrize("path", CI_VALUES, ids=lambda p: p.stem)
def test_helm_lint_strict_passes(helm: Helm, path: Path) -> None:
    done = helm.run("lint", "--strict", str(CHART), "--values", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("path", CI_VALUES, ids=lambda p: p.stem)
def test_rendered_objects_are_valid_kubernetes_objects(helm: Helm, path: Path) -> None:
    try:
        import kubernetes_validate  # type: ignore[import-untyped]
    except ImportError:
        missing("kubernetes-validate is not installed")
    docs = helm.template(path, api_versions=(MONITORING,))
    assert docs
    for version in KUBERNETES_VERSIONS:
        for doc in docs:
            if doc["apiVersion"] == MONITORING:  # a CRD: asserted by hand below
                continue
            kubernetes_validate.validate(doc, version, strict=True)


def test_default_is_three_replicas_rolling_without_losing_capacity(default: Objects) -> None:
    deployment = one(default, "Deployment")["spec"]
    assert deployment["replicas"] == 3
    assert deployment["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def test_the_pod_is_hardened(default: Objects, demo: Objects) -> None:
    for objects, names in ((default, ["shop-checkout-strangler"]),
                           (demo, ["shop-checkout-strangler", "shop-checkout-strangler-core",
                                   "shop-checkout-strangler-legacy"])):
        for name in names:
            pod = one(objects, "Deployment", name)["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["runAsUser"] == 65532
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            assert pod["automountServiceAccountToken"] is False
            for container in pod["containers"]:
                sc = container["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True
                assert sc["allowPrivilegeEscalation"] is False
                assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
                assert sc["capabilities"] == {"drop": ["ALL"]}
                assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
                assert "memory" in container["resources"]["limits"]
                assert container["resources"]["requests"]["cpu"]


def test_state_lives_in_the_writable_volume(default: Objects) -> None:
    container = proxy_container(default)
    env = env_of(container)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert env["STRANGLER_DB_PATH"].startswith("/var/lib/strangler/")
    assert env["STRANGLER_STATE_CACHE"] == "/var/lib/strangler/last-known-state.json"
    assert "/var/lib/strangler" in mounts and "/tmp" in mounts
    volumes = {v["name"]: v for v in one(default, "Deployment")["spec"]["template"]["spec"]
               ["volumes"]}
    assert "emptyDir" in volumes[mounts["/var/lib/strangler"]["name"]]


def test_rules_come_from_a_watched_configmap_mount(default: Objects) -> None:
    container = proxy_container(default)
    rules_file = env_of(container)["STRANGLER_RULES_FILE"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "rules")
    assert rules_file == f"{mount['mountPath']}/checkout.yaml"
    assert mount["readOnly"] is True
    assert "subPath" not in mount  # a subPath mount never sees a ConfigMap edit
    configmap = one(default, "ConfigMap", "shop-checkout-strangler-rules")
    rules = load_rules_text(configmap["data"]["checkout.yaml"], "1")
    # the chart's own rules move nobody: everything at 0% until someone ramps
    assert rules.funnels and all(rule.basis_points == 0 for funnel in rules.funnels
                                 for rule in funnel.rules)


def test_no_checksum_annotation_restarts_pods_on_a_rules_edit(default: Objects) -> None:
    template = one(default, "Deployment")["spec"]["template"]
    assert not any("checksum" in key for key in template["metadata"].get("annotations", {}))


def test_admin_surface_has_its_own_port_and_service(default: Objects) -> None:
    container = proxy_container(default)
    assert env_of(container)["STRANGLER_ADMIN_PORT"] == "9090"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "http": 8080, "admin": 9090}
    public = one(default, "Service")["spec"]["ports"]
    assert [p["targetPort"] for p in public] == ["http"]
    admin = one(default, "Service", "shop-checkout-strangler-admin")["spec"]
    assert admin["type"] == "ClusterIP"
    assert [p["targetPort"] for p in admin["ports"]] == ["admin"]
    assert "--admin-host" in container["args"]


def test_probes_are_livez_and_readyz_on_the_admin_port(default: Objects) -> None:
    """Readiness is /readyz, which a control store outage never fails (not
    /_strangler/healthz, which would take every replica out at once)."""
    container = proxy_container(default)
    assert container["startupProbe"]["httpGet"] == {"path": "/livez", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "admin"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert "style" not in values()["probes"]


def test_probes_need_no_admin_token(production: Objects) -> None:
    """With a token, the probes are still plain httpGet: /livez and /readyz answer without
    it, so no Secret goes into the pod spec and no exec probe starts a Python."""
    container = proxy_container(production)
    assert env_of(container)["STRANGLER_ADMIN_TOKEN"] == {
        "secretKeyRef": {"name": "strangler-admin", "key": "token"}}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert "exec" not in container[probe]
        assert container[probe]["httpGet"]["path"] in ("/livez", "/readyz")
        assert "httpHeaders" not in container[probe]["httpGet"]


def test_logs_are_json_by_default_and_the_access_log_is_opt_in(
    default: Objects, production: Objects, demo: Objects,
) -> None:
    assert values()["logFormat"] == "json"
    env = env_of(proxy_container(default))
    assert env["STRANGLER_LOG_FORMAT"] == "json"
    assert "STRANGLER_ACCESS_LOG" not in env  # off: the hot path's default
    assert env_of(proxy_container(production))["STRANGLER_ACCESS_LOG"] == "0.01"
    for component in ("core", "legacy"):
        name = f"shop-checkout-strangler-{component}"
        [container] = one(demo, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        command = container["command"]
        assert command[command.index("--log-format") + 1] == "json"


def test_log_format_text(helm: Helm) -> None:
    objects = by_kind(helm.template(CI["default"], sets={"logFormat": "text"}))
    assert env_of(proxy_container(objects))["STRANGLER_LOG_FORMAT"] == "text"


def test_probes_on_the_main_port_without_an_admin_port(demo: Objects) -> None:
    container = proxy_container(demo)
    assert "STRANGLER_ADMIN_PORT" not in env_of(container)
    assert container["readinessProbe"]["httpGet"]["port"] == "http"
    assert ("Service", "shop-checkout-strangler-admin") not in demo


def test_grace_period_covers_the_prestop_sleep_and_the_drain(default: Objects,
                                                             production: Objects) -> None:
    drain = DRAIN.search((REPO / "cli" / "run.py").read_text())
    assert drain, "cli/run.py no longer sets timeout_graceful_shutdown: update the chart"
    assert values()["termination"]["drainSeconds"] == int(drain.group(1))
    for objects in (default, production):
        pod = one(objects, "Deployment")["spec"]["template"]["spec"]
        sleep = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
        assert sleep[0] == "sleep"
        assert pod["terminationGracePeriodSeconds"] >= int(sleep[1]) + int(drain.group(1))


def test_grace_period_shorter_than_the_drain_is_refused(helm: Helm) -> None:
    done = helm.template_raw(CI["default"], sets={
        "termination.terminationGracePeriodSeconds": "8"})
    assert done.returncode != 0
    assert "requests in flight would be cut" in done.stderr


def test_pdb_and_anti_affinity_select_the_proxy_pods(default: Objects,
                                                     production: Objects) -> None:
    selector = one(default, "Deployment")["spec"]["selector"]["matchLabels"]
    assert one(default, "PodDisruptionBudget")["spec"] == {
        "maxUnavailable": 1, "selector": {"matchLabels": selector}}
    affinity = one(default, "Deployment")["spec"]["template"]["spec"]["affinity"]
    [term] = affinity["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector
    assert one(production, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
    hard = one(production, "Deployment")["spec"]["template"]["spec"]["affinity"]
    assert hard["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]


def test_hpa_owns_the_replica_count(production: Objects, default: Objects) -> None:
    assert "replicas" not in one(production, "Deployment")["spec"]
    hpa = one(production, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    assert hpa["spec"]["scaleTargetRef"]["name"] == "shop-checkout-strangler"
    assert not [key for key in default if key[0] == "HorizontalPodAutoscaler"]


def test_redis_url_and_admin_token_come_from_secrets(production: Objects) -> None:
    env = env_of(proxy_container(production))
    assert env["STRANGLER_REDIS_URL"] == {"secretKeyRef": {"name": "strangler-redis",
                                                           "key": "url"}}
    assert env["STRANGLER_TRAFFIC_REDIS_URL"] == {
        "secretKeyRef": {"name": "strangler-traffic-redis", "key": "url"}}
    assert env["STRANGLER_ADMIN_TOKEN"]["secretKeyRef"]["name"] == "strangler-admin"
    assert env["STRANGLER_TRUSTED_PROXIES"] == '["10.0.0.0/8"]'
    image = proxy_container(production)["image"]
    assert image.endswith("@sha256:" + "0" * 64)


def test_servicemonitor_only_when_the_cluster_serves_its_crd(helm: Helm,
                                                            production: Objects) -> None:
    monitor = one(production, "ServiceMonitor")
    assert monitor["apiVersion"] == MONITORING
    admin = one(production, "Service", "shop-checkout-strangler-admin")
    labels = admin["metadata"]["labels"]
    assert all(labels[k] == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    public = one(production, "Service")["metadata"]["labels"]
    assert not all(public.get(k) == v
                   for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "admin" and endpoint["path"] == "/metrics"
    assert endpoint["authorization"] == {
        "type": "Bearer", "credentials": {"name": "strangler-admin", "key": "token"}}
    without_crd = by_kind(helm.template(CI["redis-hpa"]))
    assert not [key for key in without_crd if key[0] == "ServiceMonitor"]


def test_sqlite_with_more_than_one_replica_is_refused(helm: Helm) -> None:
    done = helm.template_raw(CI["default"], sets={"redis.url": ""})
    assert done.returncode != 0
    assert "no Redis is set" in done.stderr and "SQLite" in done.stderr


@pytest.mark.parametrize("sets", [
    {"replicaCount": "1", "autoscaling.enabled": "true"},
    {"replicaCount": "1", "proxy.workers": "2"},
], ids=["hpa", "workers"])
def test_sqlite_with_hpa_or_workers_is_refused(helm: Helm, sets: dict[str, str]) -> None:
    done = helm.template_raw(CI["default"], sets={"redis.url": "", **sets})
    assert done.returncode != 0
    assert "Redis" in done.stderr


def test_sqlite_with_one_replica_renders(helm: Helm) -> None:
    objects = by_kind(helm.template(CI["default"], sets={"redis.url": "",
                                                        "replicaCount": "1"}))
    env = env_of(proxy_container(objects))
    assert "STRANGLER_REDIS_URL" not in env
    assert one(objects, "Deployment")["spec"]["replicas"] == 1


def test_a_traffic_redis_needs_the_control_redis(helm: Helm) -> None:
    done = helm.template_raw(CI["default"], sets={
        "redis.url": "", "replicaCount": "1", "trafficRedis.url": "redis://t:6379/0"})
    assert done.returncode != 0
    assert "trafficRedis needs redis" in done.stderr


def test_backend_urls_are_required(helm: Helm) -> None:
    done = helm.template_raw(sets={"redis.url": "redis://r:6379/0"})
    assert done.returncode != 0
    assert "proxy.coreUrl is required" in done.stderr


@pytest.mark.parametrize("sets, message", [
    ({"securityContext.readOnlyRootFilesystem": "false"}, "readOnlyRootFilesystem"),
    ({"podSecurityContext.runAsNonRoot": "false"}, "runAsNonRoot"),
    ({"replicas": "3"}, "replicas"),
    ({"probes.style": "strangler"}, "style"),
    ({"logFormat": "xml"}, "logFormat"),
    ({"proxy.env.STRANGLER_REDIS_URL": "redis://x"}, "env"),
    ({"proxy.env.STRANGLER_LOG_FORMAT": "text"}, "env"),
], ids=["read-only-root", "non-root", "typo", "probe-style-is-gone", "log-format",
        "managed-env", "managed-log-format"])
def test_values_schema_refuses(helm: Helm, sets: dict[str, str], message: str) -> None:
    done = helm.template_raw(CI["default"], sets=sets)
    assert done.returncode != 0
    assert message in done.stderr


def test_demo_backends_run_from_the_same_image(demo: Objects) -> None:
    env = env_of(proxy_container(demo))
    assert env["STRANGLER_CORE_URL"] == "http://shop-checkout-strangler-core:8081"
    assert env["STRANGLER_LEGACY_URL"] == "http://shop-checkout-strangler-legacy:8082"
    image = proxy_container(demo)["image"]
    for component, module, port in (("core", "checkout_core", 8081),
                                     ("legacy", "legacy_stub", 8082)):
        name = f"shop-checkout-strangler-{component}"
        [container] = one(demo, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        assert container["image"] == image
        assert container["command"][:3] == ["python3", "-m", module]
        assert container["readinessProbe"]["httpGet"]["path"] == (
            "/readyz" if component == "core" else "/healthz")
        service = one(demo, "Service", name)["spec"]
        assert service["ports"][0]["port"] == port
        assert service["selector"]["app.kubernetes.io/component"] == component
    rules = load_rules_text(one(demo, "ConfigMap", "shop-checkout-strangler-rules")["data"]
                            ["checkout.yaml"], "1")
    assert [f.name for f in rules.funnels] == ["warranties"]


def test_demo_backends_are_off_by_default(default: Objects) -> None:
    assert [name for kind, name in default if kind == "Deployment"] == [
        "shop-checkout-strangler"]


def test_every_values_key_is_in_the_schema() -> None:
    """values.yaml and values.schema.json describe the same keys (a closed schema object
    would refuse a key values.yaml has; an undocumented key would be a typo trap)."""
    schema = json.loads((CHART / "values.schema.json").read_text())

    def unknown(node: Any, sub: dict[str, Any], path: str) -> Iterator[str]:
        if not isinstance(node, dict) or "properties" not in sub:
            return
        for key, value in node.items():
            if key in sub["properties"]:
                yield from unknown(value, sub["properties"][key], f"{path}{key}.")
            elif sub.get("additionalProperties", True) is False:
                yield f"{path}{key}"

    assert list(unknown(values(), schema, "")) == []
    assert schema["additionalProperties"] is False
