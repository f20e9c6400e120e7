"""The operator dashboard in a real browser: headless Chromium driven by selenium, against
`strangler up` (admin port and admin token) with checkout traffic running.

Needs Debian's `chromium` and `chromium-driver` and the `selenium` package (the `test`
extra); `.ci/run` installs them. Without them the browser test is skipped, except under
CI (tests.support.ci), where it fails.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import REPO, strangler_cmd
from tests.support.ci import skip_or_fail
from tests.support.processes import clean_env, http_ok, stop, wait_until
from tests.support.servers import free_port

pytestmark = pytest.mark.e2e

TOKEN = "dash-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OPERATOR = "e2e-oncall"
ARTIFACT = REPO / "artifacts" / "dashboard.png"
KILLED_ARTIFACT = REPO / "artifacts" / "dashboard-killed.png"  # the first screen, 1400x900
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1400,1000",
)
# Traffic: the warranties pilot (50 % core in IE, PT, FI; 5 % in SE; 0 % elsewhere) and
# the accessories pilot (10 % in IE).
TRAFFIC = [("warranties", c) for c in ("IE", "PT", "FI", "SE", "DE")] + [
    ("accessories", "IE"), ("accessories", "FR")]
TRAFFIC_SECONDS = 50  # a hard bound; the test stops it as soon as it is done


@dataclass
class Dashboard:
    url: str  # the proxy (checkout traffic)
    admin_url: str  # the admin port: /dashboard and the API
    data_dir: Path
    log: Path  # the output of `strangler up`

    def cli(self, *args: str) -> Any:
        env = clean_env(STRANGLER_DB_PATH=str(self.data_dir / "strangler.sqlite3"))
        done = subprocess.run([*strangler_cmd(), *args], capture_output=True, text=True,
                              env=env, timeout=30, cwd=REPO, check=False)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


def free_ports() -> tuple[int, int]:
    """A port for `strangler up` (which also takes the next two) and an admin port."""
    port = free_port()
    while port > 65000:
        port = free_port()
    admin = free_port()
    while port <= admin <= port + 2:
        admin = free_port()
    return port, admin


def _exited_or_healthy(proc: subprocess.Popen[bytes], url: str) -> bool:
    return proc.poll() is not None or http_ok(url, AUTH)


def start_up(data_dir: Path, rules: Path) -> tuple[subprocess.Popen[bytes], Dashboard]:
    """`strangler up` on fresh ports; tried again (three times in all) when it exits at
    once: a port found free may be taken by another process before the server binds it."""
    for attempt in range(3):
        port, admin = free_ports()
        log = data_dir / f"up-{attempt}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*strangler_cmd(), "up", "--port", str(port), "--data-dir", str(data_dir),
                 "--rules", str(rules), "--legacy-latency-ms", "20", "--admin-port", str(admin)],
                stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                # the tests' X-Country comes from loopback, as a CDN's would
                env=clean_env(STRANGLER_ADMIN_TOKEN=TOKEN, STRANGLER_LOG_LEVEL="warning",
                              STRANGLER_TRUST_COUNTRY_HEADERS="always"),
            )
        up = Dashboard(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}", data_dir, log)
        try:
            wait_until(partial(_exited_or_healthy, proc, up.admin_url + "/_strangler/healthz"),
                       60, "strangler up")
        except BaseException:
            stop(proc, 20)
            raise
        if proc.poll() is None:
            return proc, up
    raise AssertionError(f"strangler up exited:\n{log.read_text(errors='replace')}")


@pytest.fixture(scope="module")
def dashboard_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """`strangler up` with an admin port and token. The guardrails ask for so many samples
    that the monitor never trips on its own here: the kill switch is the page's to trip."""
    data_dir = tmp_path_factory.mktemp("dashboard")
    rules = data_dir / "checkout.yaml"
    text = (REPO / "rules" / "checkout.yaml").read_text()
    text = text.replace("min_samples: 100 ", "min_samples: 1000000 ", 1)
    # shadow parity on accessories: its legacy-served cart building is replayed to the core
    rules.write_text(text.replace("    salt: accessories-2026-11\n",
                                  "    salt: accessories-2026-11\n    shadow: {share: 100}\n"))
    assert "min_samples: 1000000" in rules.read_text() and "share: 100" in rules.read_text()
    proc, up = start_up(data_dir, rules)
    try:
        yield up
    finally:
        stop(proc, 20)


# -- traffic ---------------------------------------------------------------------------------


@dataclass
class Traffic:
    url: str
    stop: threading.Event = field(default_factory=threading.Event)
    served: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def run(self) -> None:
        deadline = time.monotonic() + TRAFFIC_SECONDS
        with httpx.Client(base_url=self.url, timeout=10) as client:
            i = 0
            while not self.stop.is_set() and time.monotonic() < deadline:
                funnel, country = TRAFFIC[i % len(TRAFFIC)]
                i += 1
                try:
                    self.checkout(client, funnel, country)
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))

    def checkout(self, client: httpx.Client, funnel: str, country: str) -> None:
        h = {"X-Checkout-Funnel": funnel, "X-Country": country,
             "X-Checkout-Session": f"s-{uuid.uuid4().hex}"}
        cart = client.post("/carts", headers=h, json={"country": country, "currency": "EUR"})
        self.served[(funnel, country, cart.headers.get("x-checkout-backend", "?"))] += 1
        if cart.status_code != 201:
            return
        cart_id = cart.json()["id"]
        client.post(f"/carts/{cart_id}/items", headers=h,
                    json={"sku": "WR-CARE-2Y", "quantity": 1})
        checkout = client.post(f"/carts/{cart_id}/checkout", headers=h, json={
            "email": "e2e@example.com",
            "shipping_address": {"name": "A", "line1": "1 Main St", "city": "Cork",
                                 "postal_code": "T12", "country": country}})
        if checkout.status_code == 201:
            client.post(f"/checkouts/{checkout.json()['id']}/orders",
                        headers={**h, "Idempotency-Key": uuid.uuid4().hex},
                        json={"payment": {"method": "card", "token": "tok_visa"}})


@pytest.fixture
def traffic(dashboard_up: Dashboard) -> Iterator[Traffic]:
    running = Traffic(dashboard_up.url)
    threads = [threading.Thread(target=running.run, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        yield running
    finally:
        running.stop.set()
        for t in threads:
            t.join(15)


# -- the browser -----------------------------------------------------------------------------


def _missing_browser() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for exe in ("chromium", "chromedriver"):
        if shutil.which(exe) is None:
            return f"{exe} is not installed (apt-get install chromium chromium-driver)"
    return None


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    missing = _missing_browser()
    if missing is not None:
        skip_or_fail(f"no headless browser for the dashboard's test: {missing}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(shutil.which("chromium"))
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    service = Service(executable_path=str(shutil.which("chromedriver")),
                      log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


# What the page shows, read in one go (the page cannot re-render halfway through).
READ_PAGE = """
const text = (el, sel) => { const n = el.querySelector(sel); return n ? n.textContent : null; };
return {
  ok: document.getElementById("updated").classList.contains("ok"),
  version: document.getElementById("rules-version").dataset.version,
  at: document.getElementById("monitor-at").dataset.at,
  cells: [...document.querySelectorAll("#matrix td.cell")].map((td) => ({
    funnel: td.dataset.funnel, country: td.dataset.country, percent: td.dataset.percent,
    shown: text(td, ".pct"), core: Number(td.dataset.coreRps),
    legacy: Number(td.dataset.legacyRps), live: text(td, ".live"),
  })),
  killedRows: [...document.querySelectorAll("#matrix tbody tr.killed")]
    .map((tr) => tr.dataset.funnel),
  switches: Object.fromEntries([...document.querySelectorAll(".switch")]
    .map((s) => [s.dataset.scope, s.dataset.state])),
};
"""


def page_state(driver: Any) -> dict[str, Any]:
    return driver.execute_script(READ_PAGE)


# The banners at the top of the page, where the first screen shows them.
READ_BANNERS = """
const read = (id) => {
  const node = document.getElementById(id);
  const r = node.getBoundingClientRect();
  return { hidden: node.hidden, top: r.top, bottom: r.bottom, text: node.innerText,
    scopes: [...node.querySelectorAll(".kill-list > li")].map((li) => li.dataset.scope),
    guardrails: [...node.querySelectorAll("li[data-guardrail]")]
      .map((li) => li.dataset.guardrail) };
};
return { kill: read("kill-banner"), problems: read("banner"), scrollY: window.scrollY,
  innerHeight: window.innerHeight,
  globalSwitch: document.querySelector('#global-switch .switch .switch-state').innerText,
  rows: Object.fromEntries([...document.querySelectorAll("#matrix tbody tr")]
    .map((tr) => [tr.dataset.funnel, tr.querySelector("th").innerText])) };
"""


def first_screen(driver: Any) -> dict[str, Any]:
    """The banners as a 1400x900 window shows them, scrolled to the top."""
    if driver.get_window_size() != {"width": 1400, "height": 900}:
        driver.set_window_size(1400, 900)
    driver.execute_script("window.scrollTo(0, 0)")
    screen: dict[str, Any] = driver.execute_script(READ_BANNERS)
    return screen


def above_the_fold(banner: dict[str, Any], screen: dict[str, Any]) -> bool:
    return (not banner["hidden"] and screen["scrollY"] == 0 and banner["top"] >= 0
            and banner["bottom"] > banner["top"]
            and banner["bottom"] <= screen["innerHeight"] <= 900)


def poll_now(driver: Any) -> None:
    """Make the page poll now rather than within its 3 s (the token form's button does)."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "token-save").click()


def expected_rule(funnel: dict[str, Any], country: str) -> dict[str, Any] | None:
    """The first rule that matches, as the proxy decides; '*' stands for other countries."""
    for rule in funnel["rules"]:
        if rule["countries"] == "*" or (country != "*" and country in rule["countries"]):
            return rule
    return None


def check_matches_status(page: dict[str, Any], status: dict[str, Any], live: bool = True,
                         ) -> None:
    """Percentages per funnel and country, kill switches and (when `live`, for the same
    monitor report) the live split: page == CLI."""
    assert page["version"] == str(status["rules_version"])
    explicit = {c for f in status["funnels"] for r in f["rules"] if r["countries"] != "*"
                for c in r["countries"]}
    cells = {(c["funnel"], c["country"]): c for c in page["cells"]}
    assert set(cells) == {(f["name"], c) for f in status["funnels"] for c in [*explicit, "*"]}
    for f in status["funnels"]:
        for country in [*explicit, "*"]:
            cell, rule = cells[(f["name"], country)], expected_rule(f, country)
            if rule is None:
                assert (cell["percent"], cell["shown"]) == ("", "\u2013"), cell
            else:
                assert float(cell["percent"]) == rule["percent"], (cell, rule)
                assert cell["shown"] == f"{rule['percent']:g}%", cell
            if live:
                check_live(cell, f["live"], country, explicit)
    kills = status["kill_switches"]
    assert page["killedRows"] == [f["name"] for f in status["funnels"] if f["killed"]]
    for scope in ["*", *(f["name"] for f in status["funnels"])]:
        assert page["switches"][scope] == ("killed" if scope in kills else "live"), scope


def check_live(cell: dict[str, Any], live: dict[str, dict[str, float]], country: str,
               explicit: set[str]) -> None:
    """Requests per second per arm: the country's, or for '*' those of every country no
    rule names."""
    countries = [country] if country != "*" else [c for c in live if c not in explicit]
    for arm in ("core", "legacy"):
        want = sum(live.get(c, {}).get(arm, 0.0) for c in countries)
        assert cell[arm] == pytest.approx(want), (cell, arm, want)
    assert cell["live"].startswith("core ") == (cell["core"] + cell["legacy"] > 0)


def wait_for(driver: Any, condition: Any, timeout: float = 15, message: str = "") -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition, message)


def screenshot(driver: Any) -> None:
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(int(height) + 120, 6000))
    time.sleep(0.3)
    assert driver.save_screenshot(str(ARTIFACT))


# -- the tests ---------------------------------------------------------------------------------


def test_the_dashboard_lives_on_the_admin_port(dashboard_up: Dashboard):
    page = httpx.get(dashboard_up.admin_url + "/dashboard")
    assert page.status_code == 200 and "<title>" in page.text
    assert httpx.get(dashboard_up.admin_url + "/_strangler/api/status").status_code == 401
    assert httpx.get(dashboard_up.admin_url + "/_strangler/api/status",
                     headers=AUTH).status_code == 200
    assert httpx.get(dashboard_up.url + "/_strangler/api/status", headers=AUTH
                     ).status_code == 404
    public = httpx.get(dashboard_up.url + "/dashboard")  # checkout traffic, not the page
    assert "x-checkout-backend" in public.headers and "<title>" not in public.text


def test_operators_see_the_rollout_and_trip_the_kill_switch_from_the_page(
    browser: Any, dashboard_up: Dashboard, traffic: Traffic,
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    driver = browser
    started = time.monotonic()
    driver.get(dashboard_up.admin_url + "/dashboard")
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.ID, "actor-name").send_keys(OPERATOR)
    driver.find_element(By.ID, "token-save").click()

    # live traffic has reached the monitor's report, and the page shows it
    wait_for(driver, lambda d: any(
        c["funnel"] == "warranties" and c["core"] > 0 for c in page_state(d)["cells"]),
        25, "the page never showed live warranties traffic on the core")

    # the same numbers as `strangler status --json` (compared on the same monitor report)
    deadline = time.monotonic() + 20
    while True:
        status = dashboard_up.cli("status", "--json")
        page = page_state(driver)
        if page["ok"] and page["at"] and float(page["at"]) == status["monitor"]["at"]:
            break
        assert time.monotonic() < deadline, "the page never showed the CLI's monitor report"
        time.sleep(0.3)
    check_matches_status(page, status)
    assert page["switches"]["warranties"] == "live"

    # a reason is required: nothing is sent without one
    switch = driver.find_element(By.CSS_SELECTOR, '.funnel .switch[data-scope="warranties"]')
    button = switch.find_element(By.CSS_SELECTOR, "button.action")
    assert button.get_attribute("data-action") == "kill" and button.is_enabled()
    button.click()
    assert "reason is required" in switch.find_element(By.CSS_SELECTOR, ".switch-msg").text
    assert "warranties" not in dashboard_up.cli("status", "--json")["kill_switches"]

    # trip it: type a reason, click, accept the confirmation
    switch.find_element(By.CSS_SELECTOR, "input.reason").send_keys("INC-77 drill from the page")
    button.click()
    alert = wait_for(driver, ec.alert_is_present(), 5, "no confirmation was asked")
    assert "warranties" in alert.text and "legacy" in alert.text
    alert.accept()
    wait_for(driver, lambda d: page_state(d)["switches"]["warranties"] == "killed", 10,
             "the page never showed the kill switch set")

    # a red banner at the top says so, on the first screen: the funnel, who and why
    screen = wait_for(driver, lambda d: (s := first_screen(d))["kill"]["scopes"] == [
        "warranties"] and s, 10, "no kill banner named the warranties funnel")
    assert above_the_fold(screen["kill"], screen), screen
    assert driver.find_element(By.ID, "kill-banner").is_displayed()
    for said in ("warranties", f"dashboard:{OPERATOR}", "INC-77 drill from the page"):
        assert said in screen["kill"]["text"], (said, screen["kill"]["text"])
    # the Kill switches panel does not say all clear, and the killed row claims no core
    assert "global: clear; funnel switches set: warranties" in screen["globalSwitch"]
    assert "LIVE" not in screen["globalSwitch"], screen["globalSwitch"]
    assert "killed: 0% core" in screen["rows"]["warranties"], screen["rows"]
    assert not any("killed" in text for f, text in screen["rows"].items() if f != "warranties")
    killed_cells = [c for c in page_state(driver)["cells"] if c["funnel"] == "warranties"]
    assert killed_cells and all(c["live"] == "killed" for c in killed_cells), killed_cells
    KILLED_ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(KILLED_ARTIFACT))

    # it is set, audited with who and why, and the proxy routes warranties to legacy
    status = dashboard_up.cli("status", "--json")
    kill = status["kill_switches"]["warranties"]
    assert (kill["actor"], kill["reason"]) == (f"dashboard:{OPERATOR}",
                                                "INC-77 drill from the page")
    audit = dashboard_up.cli("audit", "--limit", "5", "--json")
    assert (audit[0]["action"], audit[0]["target"], audit[0]["actor"]) == (
        "kill", "warranties", f"dashboard:{OPERATOR}")
    ie = {"X-Checkout-Funnel": "warranties", "X-Country": "IE"}
    for _ in range(5):
        r = httpx.post(dashboard_up.url + "/carts", json={"country": "IE", "currency": "EUR"},
                       headers={**ie, "X-Checkout-Session": f"s-{uuid.uuid4().hex}"})
        assert r.status_code == 201
        assert r.headers["x-checkout-backend"] == "legacy"
        assert r.headers["x-checkout-decision"].startswith("KILL_SWITCH;")
    wait_for(driver, lambda d: d.find_element(
        By.CSS_SELECTOR, "#audit tbody tr").get_attribute("data-actor") == f"dashboard:{OPERATOR}",
        10, "the audit log on the page never showed the kill")
    check_matches_status(page_state(driver), dashboard_up.cli("status", "--json"), live=False)
    assert sum(n for (f, _, b), n in traffic.served.items() if b == "core") > 0
    assert not traffic.errors, traffic.errors[:3]

    screenshot(driver)

    # clear it from the page: the banner goes, the row routes by its rules again
    switch.find_element(By.CSS_SELECTOR, "input.reason").send_keys("drill over")
    button = switch.find_element(By.CSS_SELECTOR, "button.action")
    assert button.get_attribute("data-action") == "unkill"
    button.click()
    wait_for(driver, ec.alert_is_present(), 5, "no confirmation was asked").accept()
    screen = wait_for(driver, lambda d: (s := first_screen(d))["kill"]["hidden"] and s, 10,
                      "the kill banner stayed after the kill switch was cleared")
    assert "killed" not in screen["rows"]["warranties"], screen["rows"]
    assert "warranties" not in dashboard_up.cli("status", "--json")["kill_switches"]
    assert time.monotonic() - started < 60


READ_SHADOW = """
const block = document.querySelector('#shadow .shadow-funnel[data-funnel="accessories"]');
return { at: document.getElementById("shadow-at").dataset.at || null,
  funnels: [...document.querySelectorAll("#shadow .shadow-funnel")].map((b) => b.dataset.funnel),
  units: block ? Number(block.dataset.units) : null,
  badge: block ? block.querySelector(".funnel-head .badge").textContent : null,
  config: block ? block.querySelector(".shadow-config").textContent : null,
  routes: block ? [...block.querySelectorAll("tbody tr")].map((tr) => [tr.dataset.route,
    Number(tr.children[1].textContent), Number(tr.children[2].textContent)]) : [] };
"""


def test_the_shadow_panel_shows_what_strangler_shadow_status_gives(
    browser: Any, dashboard_up: Dashboard, traffic: Traffic,
) -> None:
    """Accessories' legacy-served carts are replayed to the real core and compared; the
    page's Shadow parity panel shows the figures of `strangler shadow status --json`."""
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(dashboard_up.admin_url + "/dashboard")
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.ID, "token-save").click()
    wait_for(driver, lambda d: (poll_now(d), d.execute_script(READ_SHADOW)["units"])[1], 30,
             "the page never showed compared accessories units")
    deadline = time.monotonic() + 30
    while True:
        poll_now(driver)
        shown = driver.execute_script(READ_SHADOW)
        cli = dashboard_up.cli("shadow", "status", "--json")
        if shown["at"] and float(shown["at"]) == cli["at"]:
            break
        assert time.monotonic() < deadline, "the page never showed the CLI's shadow summary"
        time.sleep(0.5)
    assert shown["funnels"] == ["accessories"]  # the only funnel with a shadow
    body = cli["funnels"]["accessories"]
    assert shown["units"] == body["units"]["compared"] > 0
    parity = body["units"]["parity"]
    assert shown["badge"] == f"parity {math.floor(parity * 10000 + 1e-6) / 100:.2f}%"
    assert "shadow 100% of legacy-served units" in shown["config"]
    assert shown["routes"] == [[route, r["comparisons"], r["mismatches"]]
                               for route, r in body["routes"].items()]
    assert "POST /carts" in body["routes"]
    assert not traffic.errors, traffic.errors[:3]


# What the guardrail monitor records with its kill (guardrails/monitor.py, _trip).
TRIP_DETAIL = ("payment success core 90.00% in [88.10%, 91.75%] vs legacy 98.00%; drop in "
               "[+6.25%, +9.90%], allowed 2.0%")
TRIP = {
    "funnel": "warranties", "failed": ["payment_success"], "rules_version": 1, "since": 0.0,
    "configured_core_share": 0.3,
    "guardrails": [
        {"name": "conversion", "verdict": "pass", "core_estimate": 0.31,
         "legacy_estimate": 0.3, "bound": 0.01, "threshold": 0.1, "n_core": 900,
         "n_legacy": 2100, "detail": "conversion core 31.00% vs legacy 30.00%"},
        {"name": "payment_success", "verdict": "fail", "core_estimate": 0.9,
         "legacy_estimate": 0.98, "bound": 0.0625, "threshold": 0.02, "n_core": 900,
         "n_legacy": 2100, "detail": TRIP_DETAIL},
    ],
}
XSS = "INC-78 <img src=x onerror=window.__xss=1> stop everything"


def set_switches(up: Dashboard, action: str, scopes: list[str | None], reason: str) -> None:
    for scope in scopes:
        r = httpx.post(f"{up.admin_url}/_strangler/api/{action}", headers=AUTH, timeout=10,
                       json={"funnel": scope, "reason": reason, "name": "ana"})
        assert r.status_code == 200, r.text


def test_every_kill_switch_set_is_one_banner_at_the_top_beside_the_rules_problems(
    browser: Any, dashboard_up: Dashboard,
) -> None:
    """A guardrail trip (with the monitor's evidence) and a global kill: one banner at the
    top lists each, with who, when, why and the guardrail that failed; a rejected rules file
    edit is a second banner right below it, both on the first screen."""
    from selenium.webdriver.common.by import By

    from control.killswitch import kill
    from control.store import open_store

    driver = browser
    rules = dashboard_up.data_dir / "checkout.yaml"
    good = rules.read_text()
    already = dashboard_up.cli("status", "--json")["kill_switches"]
    set_switches(dashboard_up, "unkill", [None if s == "*" else s for s in already], "reset")
    driver.get(dashboard_up.admin_url + "/dashboard")
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.ID, "token-save").click()
    wait_for(driver, lambda d: page_state(d)["ok"], 10, "the page never read the API")
    assert first_screen(driver)["kill"]["hidden"]

    store = open_store(None, str(dashboard_up.data_dir / "strangler.sqlite3"), create=False)
    try:
        kill(store, "warranties", actor="guardrail-monitor",
             reason="guardrail tripped on warranties: payment_success", evidence=TRIP)
    finally:
        store.close()
    set_switches(dashboard_up, "kill", [None], XSS)
    rules.write_text(good + "\nthis: [is not valid\n")
    try:
        def both(d: Any) -> dict[str, Any] | bool:
            poll_now(d)
            s = first_screen(d)
            return (s["kill"]["scopes"] == ["*", "warranties"] and not s["problems"]["hidden"]
                    and "Rules file rejected" in s["problems"]["text"] and s)

        screen = wait_for(driver, both, 15, "the kill and rules file banners never showed")
        kill_banner, problems = screen["kill"], screen["problems"]
        assert above_the_fold(kill_banner, screen) and above_the_fold(problems, screen), screen
        assert kill_banner["bottom"] <= problems["top"], screen  # stacked, the kill first
        assert kill_banner["guardrails"] == ["payment_success"], kill_banner
        for said in ("GLOBAL", "dashboard:ana", XSS, "warranties", "guardrail-monitor",
                     "guardrail tripped on warranties: payment_success", TRIP_DETAIL):
            assert said in kill_banner["text"], (said, kill_banner["text"])
        assert driver.execute_script("return window.__xss") is None  # text, never markup
        assert "KILLED" in screen["globalSwitch"]
        assert all("killed: 0% core" in text for text in screen["rows"].values()), screen
    finally:
        rules.write_text(good)
        set_switches(dashboard_up, "unkill", [None, "warranties"], "drill over")

    def none(d: Any) -> dict[str, Any] | bool:
        poll_now(d)
        s = first_screen(d)
        return s["kill"]["hidden"] and s["problems"]["hidden"] and s

    screen = wait_for(driver, none, 15, "a banner stayed after the switches were cleared and "
                      "the rules file fixed")
    assert not any("killed" in text for text in screen["rows"].values()), screen
    assert "LIVE" in screen["globalSwitch"]
