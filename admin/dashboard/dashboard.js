// The rollout dashboard: polls the proxy's admin API and draws the page.
// Plain JavaScript, no dependencies, no build step; charts are inline SVG.
// Every URL is relative to the page, so it works on the proxy port, on the admin port and
// behind a path prefix alike. Text from the server is only ever set as textContent.
"use strict";

(() => {
  const API = "_strangler/api/";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const TOKEN_KEY = "strangler.dashboard.token";
  const NAME_KEY = "strangler.dashboard.name";
  const GLOBAL = "*";
  const MONITOR = "guardrail-monitor"; // the actor of a guardrail trip (guardrails/monitor.py)
  const TITLE = document.title;
  const CORE = "#2563eb"; // the colours of dashboard.css (--core, --legacy)
  const LEGACY = "#e07b00";
  const AUDIT_ROWS = 50;
  const READ_ONLY = "Read-only: the proxy has no admin token (STRANGLER_ADMIN_TOKEN), so " +
    "the dashboard cannot trip or clear kill switches. Use `strangler kill`.";
  const METRICS = [
    { key: "conversion", title: "Conversion", fmt: pct, axis: axisPct, rate: true, floor: 0.1 },
    { key: "payment_success", title: "Payment success", fmt: pct, axis: axisPct, rate: true,
      floor: 0.1 },
    { key: "p95_ms", title: "p95 latency", fmt: ms, axis: ms, rate: false, floor: 10 },
    { key: "error_rate", title: "Error rate", fmt: pct2, axis: axisPct, rate: true,
      floor: 0.01 },
  ];

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || "",
    name: localStorage.getItem(NAME_KEY) || "",
    config: null,
    cards: new Map(),
    globalSwitch: null,
    killsReadAt: null, // when the kill switches shown were last read
    timer: null,
    busy: false,
    again: false,
  };

  // -- DOM helpers ---------------------------------------------------------------------------

  function build(node, attrs, children) {
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const el = (tag, attrs, ...children) => build(document.createElement(tag), attrs, children);
  const svg = (tag, attrs, ...children) =>
    build(document.createElementNS(SVG_NS, tag), attrs, children);
  const $ = (id) => document.getElementById(id);

  // -- formatting ----------------------------------------------------------------------------

  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  function pct(v) { return isNum(v) ? (v * 100).toFixed(1) + "%" : "\u2013"; }
  function pct2(v) { return isNum(v) ? (v * 100).toFixed(2) + "%" : "\u2013"; }
  function axisPct(v) { return isNum(v) ? Number((v * 100).toPrecision(3)) + "%" : ""; }
  function ms(v) {
    if (!isNum(v)) return "\u2013";
    if (v >= 1000) return (v / 1000).toFixed(2) + " s";
    return (v < 10 ? v.toFixed(1) : Math.round(v)) + " ms";
  }
  function times(v) { return isNum(v) ? v.toPrecision(3) + "\u00d7" : "\u2013"; }
  function num(v) { return isNum(v) ? v.toPrecision(3) : "\u2013"; }
  function rps(v) { return v >= 10 ? v.toFixed(1) : v.toFixed(2); }
  function clock(at) {
    return isNum(at) ? new Date(at * 1000).toLocaleTimeString([], { hour12: false }) : "\u2013";
  }
  function stamp(at) {
    if (!isNum(at)) return "\u2013";
    const d = new Date(at * 1000);
    return d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + clock(at);
  }
  function ago(at) {
    if (!isNum(at)) return "never";
    const s = Math.max(0, Date.now() / 1000 - at);
    if (s < 90) return Math.round(s) + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    return Math.round(s / 3600) + " h ago";
  }
  function badge(text, kind) { return el("span", { class: "badge " + kind }, text); }

  // Units of a guardrail's estimates and bounds (see guardrails/judge.py).
  const GUARDS = {
    conversion: { est: pct, bound: pct },
    payment_success: { est: pct, bound: pct },
    latency_p95: { est: ms, bound: (v, g) => (latencyCeiling(g) ? ms(v) : times(v)) },
    error_budget: { est: pct2, bound: (v, g) => (unreachable(g) ? secs(v) : times(v)) },
    sample_ratio: { est: pct, bound: (v) => (isNum(v) ? "p=" + num(v) : "\u2013") },
  };
  function unreachable(g) {
    const ev = g.evidence || {};
    return Boolean(ev.unreachable && ev.unreachable.fail);
  }
  function secs(v) { return isNum(v) ? Math.round(v) + " s" : "\u2013"; }
  function latencyCeiling(g) {
    const ev = g.evidence || {};
    return ev.ceiling_ms !== null && g.threshold === ev.ceiling_ms && g.threshold !== ev.max_ratio;
  }
  const guardFormat = (name) => GUARDS[name] || { est: num, bound: num };

  // -- the API -------------------------------------------------------------------------------

  class HttpError extends Error {
    constructor(status, detail) { super(detail); this.status = status; }
  }

  async function api(path, options = {}) {
    const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
    if (state.token) headers.Authorization = "Bearer " + state.token;
    const response = await fetch(API + path,
      Object.assign({}, options, { headers, cache: "no-store", credentials: "omit" }));
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    if (!response.ok) {
      throw new HttpError(response.status, (body && body.detail) || response.statusText);
    }
    return body;
  }

  // -- polling -------------------------------------------------------------------------------

  async function refresh() {
    if (state.busy) { state.again = true; return; }
    state.busy = true;
    clearTimeout(state.timer);
    try {
      if (!state.config) state.config = await api("config");
      const [status, report, audit, rollouts, shadow] = await Promise.all([
        api("status"), api("guardrails"), api("audit?limit=" + AUDIT_ROWS), api("rollouts"),
        api("shadow").catch(() => null),
      ]);
      const series = await Promise.all(status.funnels.map(
        (f) => api("series?funnel=" + encodeURIComponent(f.name)).catch(() => null)));
      render(status, report, audit, rollouts, series, shadow);
      connection(true, clock(Date.now() / 1000));
      const refused = rulesProblems(status);
      banner(refused, refused.length > 0);
    } catch (err) {
      connection(false, err.status ? "error " + err.status : "offline");
      staleKills(err);
      if (err.status === 401) {
        banner("This proxy requires the admin token: enter it above (Authorization: Bearer).",
          true);
        $("token").focus();
      } else {
        banner("Cannot read the proxy's admin API: " + err.message, true);
      }
    } finally {
      state.busy = false;
      const delay = state.again ? 0 : 1000 * ((state.config && state.config.poll_seconds) || 3);
      state.again = false;
      state.timer = setTimeout(refresh, delay);
    }
  }

  // A rules file rejected as invalid, or an edit refused as a conflict (the file and the
  // active rules disagree): one line each.
  function rulesProblems(status) {
    const files = status.rules_files || [];
    const rejected = files.filter((f) => f.error).map((f) =>
      "Rules file rejected: " + f.path + " is invalid (the last good rules keep serving): " +
      f.error);
    const refused = files.filter((f) => f.conflict).map((f) =>
      "Rules file edit refused: " + f.path + " conflicts with changes made since the last " +
      "import (the active rules keep serving): " +
      f.conflict.conflicts.map((c) => c.sentence).join("; "));
    return rejected.concat(refused);
  }

  function connection(ok, text) {
    const node = $("updated");
    node.textContent = text;
    node.className = "conn " + (ok ? "ok" : "bad");
  }

  // The problems banner (connection, token, rules files): a sentence, or several lines.
  function banner(text, error) {
    const lines = (Array.isArray(text) ? text : [text]).filter(Boolean);
    const node = $("banner");
    node.hidden = !lines.length;
    node.replaceChildren(...lines.map((line) => el("div", { class: "banner-line" }, line)));
    node.className = "banner" + (error ? " error" : "");
  }

  // -- rendering -----------------------------------------------------------------------------

  function render(status, report, audit, rollouts, series, shadow) {
    const version = $("rules-version");
    version.textContent = status.rules_version === null ? "none (all legacy)"
      : "v" + status.rules_version;
    version.dataset.version = status.rules_version === null ? "" : String(status.rules_version);
    const monitor = $("monitor-at");
    monitor.textContent = status.monitor.at ? "judged " + ago(status.monitor.at) : "not yet";
    monitor.dataset.at = status.monitor.at === null ? "" : String(status.monitor.at);
    $("telemetry").textContent = status.monitor.telemetry || "\u2013";
    renderKillBanner(status, audit);
    renderGlobal(status);
    renderMatrix(status);
    renderFunnels(status, report, series);
    renderShadow(status, shadow);
    renderRollouts(rollouts);
    renderAudit(audit);
  }

  // the kill banner: every kill switch that is set, at the top of the page

  const scopeLabel = (scope) => (scope === GLOBAL ? "global" : scope);

  function killScopes(status) {
    const known = [GLOBAL, ...status.funnels.map((f) => f.name)];
    const rank = (s) => (known.includes(s) ? known.indexOf(s) : known.length);
    return Object.keys(status.kill_switches || {})
      .sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  }

  // The guardrails that tripped a switch: the evidence the monitor recorded with its kill (in
  // the audit entry of that kill, when it is among the entries read), else the names its
  // reason gives ("guardrail tripped on warranties: payment_success, latency_p95").
  function tripEvidence(scope, kill, audit) {
    const entry = (audit || []).find((e) => e.action === "kill" && e.target === scope &&
      isNum(e.at) && Math.abs(e.at - kill.at) < 0.001);
    const evidence = entry && entry.details && entry.details.evidence;
    if (evidence && Array.isArray(evidence.failed) && evidence.failed.length) {
      const results = Array.isArray(evidence.guardrails) ? evidence.guardrails : [];
      return {
        funnel: evidence.funnel || null,
        failed: evidence.failed.map((name) =>
          ({ name: String(name), result: results.find((g) => g && g.name === name) || null })),
      };
    }
    const said = /^guardrail tripped on ([^:]+): (.+)$/.exec(kill.reason || "");
    if (kill.actor !== MONITOR || !said) return null;
    return {
      funnel: said[1], failed: said[2].split(/,\s*/).map((name) => ({ name, result: null })),
    };
  }

  function guardrailSentence(failed) {
    const g = failed.result;
    if (!g) return failed.name + " failed";
    if (g.detail) return `${failed.name} failed: ${g.detail}`;
    const f = guardFormat(g.name);
    return `${failed.name} failed: core ${f.est(g.core_estimate, g)}, ` +
      `legacy ${f.est(g.legacy_estimate, g)}`;
  }

  function killItem(scope, kill, audit, known) {
    const trip = tripEvidence(scope, kill, audit);
    const field = (name, value, cls) => el("span", { class: "kill-field " + (cls || name) },
      el("span", { class: "kill-key" }, name + " "), value);
    return el("li", { "data-scope": scope },
      el("div", { class: "kill-main" },
        el("span", { class: "kill-scope" }, scope === GLOBAL ? "GLOBAL (every funnel)" : scope),
        known ? null : el("span", { class: "kill-note" }, "(no such funnel in the active rules)"),
        field("by", el("b", null, kill.actor), "who"),
        field("at", `${stamp(kill.at)} (${ago(kill.at)})`, "when"),
        field("reason", el("q", null, kill.reason), "why")),
      trip ? el("div", { class: "kill-trip" },
        "Tripped by the guardrail monitor" + (trip.funnel ? ` on ${trip.funnel}` : "") + ": ",
        el("ul", null, trip.failed.map((g) =>
          el("li", { "data-guardrail": g.name }, guardrailSentence(g))))) : null);
  }

  function renderKillBanner(status, audit) {
    const kills = status.kill_switches || {};
    const scopes = killScopes(status);
    const names = new Set(status.funnels.map((f) => f.name));
    const node = $("kill-banner");
    state.killsReadAt = Date.now() / 1000;
    node.hidden = !scopes.length;
    node.dataset.scopes = scopes.join(" ");
    document.title = scopes.length
      ? `KILLED: ${scopes.map(scopeLabel).join(", ")} \u00b7 ${TITLE}` : TITLE;
    if (!scopes.length) { node.replaceChildren(); return; }
    const what = kills[GLOBAL] ? "every funnel's traffic goes to legacy"
      : scopes.length === 1 ? "its traffic goes to legacy" : "their traffic goes to legacy";
    node.replaceChildren(
      el("div", { class: "kill-head" },
        el("strong", null, scopes.length === 1 ? "KILL SWITCH SET" :
          `${scopes.length} KILL SWITCHES SET`),
        ` \u00b7 ${scopes.map(scopeLabel).join(", ")}: ${what}, whatever the rules say. ` +
        (scopes.length === 1 ? "Clear it" : "Clear each") +
        " with its switch below (or `strangler unkill`) once it is safe.",
        el("span", { class: "kill-stale" })),
      el("ul", { class: "kill-list" }, scopes.map((scope) =>
        killItem(scope, kills[scope], audit, scope === GLOBAL || names.has(scope)))));
  }

  // The API cannot be read: the kill switches shown are those of the last good read.
  function staleKills(err) {
    const node = $("kill-banner");
    const stale = node.querySelector(".kill-stale");
    if (node.hidden || !stale) return;
    stale.textContent = ` As read at ${clock(state.killsReadAt)}: the API cannot be read now ` +
      `(${err.status ? "error " + err.status : "offline"}), so this may have changed.`;
  }

  // kill switches

  function makeSwitch(scope, label) {
    const sw = {
      scope, killed: false, pending: false,
      stateEl: el("span", { class: "switch-state" }),
      reason: el("input", {
        class: "reason", type: "text", maxlength: "500", spellcheck: "false",
        placeholder: "Reason (required, goes to the audit log)", "aria-label": "reason",
      }),
      button: el("button", { class: "action", type: "button" }),
      msg: el("span", { class: "switch-msg", role: "status" }),
    };
    sw.root = el("div", { class: "switch", "data-scope": scope },
      el("span", { class: "switch-scope" }, label), sw.stateEl, sw.reason, sw.button, sw.msg);
    sw.button.addEventListener("click", () => act(sw));
    sw.reason.addEventListener("keydown", (e) => { if (e.key === "Enter") act(sw); });
    sw.reason.addEventListener("input", () => sw.reason.classList.remove("invalid"));
    return sw;
  }

  // `coveredByGlobal`: a funnel's switch while the global one is set; `funnelKills`: the
  // global switch's note of the funnel switches set (its own state is not all that counts).
  function updateSwitch(sw, kill, coveredByGlobal, funnelKills = []) {
    sw.killed = Boolean(kill);
    sw.root.dataset.state = kill ? "killed" : "live";
    sw.root.classList.toggle("is-killed", Boolean(kill) || coveredByGlobal);
    sw.root.classList.toggle("has-kills", !kill && funnelKills.length > 0);
    sw.stateEl.replaceChildren(...(
      kill ? [badge("KILLED", "killed"), " ",
        `by ${kill.actor}, ${ago(kill.at)} (${clock(kill.at)}): ${kill.reason}`]
        : coveredByGlobal ? [badge("CLEAR", "none"), " ", badge("GLOBAL KILL", "killed"), " ",
          "its own switch is clear, but the global kill switch sends it to legacy"]
          : funnelKills.length ? [badge("CLEAR", "none"), " ",
            badge(`${funnelKills.length} FUNNEL${funnelKills.length > 1 ? "S" : ""} KILLED`,
              "killed"), " ",
            el("span", { class: "funnel-kills", title: "their traffic goes to legacy; clear " +
              "each with its own switch, in its card below" },
            "global: clear; funnel switches set: " + funnelKills.join(", "))]
            : [badge("LIVE", "live"), " ", sw.scope === GLOBAL
              ? "clear: no kill switch is set; the rules route every funnel's traffic"
              : "clear: the rules route this funnel's traffic"]));
    sw.button.textContent = kill ? "Clear kill switch" : "Trip kill switch";
    sw.button.dataset.action = kill ? "unkill" : "kill";
    sw.button.className = "action " + (kill ? "safe" : "danger");
    const enabled = Boolean(state.config && state.config.actions);
    sw.button.disabled = !enabled || sw.pending;
    sw.reason.disabled = !enabled;
    if (!enabled && !sw.msg.textContent) {
      say(sw, READ_ONLY);
    } else if (enabled && sw.msg.textContent === READ_ONLY) {
      say(sw, "");
    }
  }

  function say(sw, text, error) {
    sw.msg.textContent = text;
    sw.msg.classList.toggle("error", Boolean(error));
  }

  async function act(sw) {
    if (sw.pending || sw.button.disabled) return;
    syncAuth();
    const reason = sw.reason.value.trim();
    const action = sw.killed ? "unkill" : "kill";
    if (!reason) {
      sw.reason.classList.add("invalid");
      say(sw, "A reason is required: it is recorded in the audit log.", true);
      sw.reason.focus();
      return;
    }
    const what = sw.scope === GLOBAL ? "EVERY funnel" : `the ${sw.scope} funnel`;
    const question = action === "kill"
      ? `Trip the kill switch: send all traffic of ${what} to legacy now?\n\nReason: ${reason}`
      : `Clear the kill switch of ${what}: the rules route its traffic again?\n\nReason: ${reason}`;
    if (!window.confirm(question)) return;
    sw.pending = true;
    sw.button.disabled = true;
    say(sw, action === "kill" ? "Tripping\u2026" : "Clearing\u2026");
    try {
      const result = await api(action, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          funnel: sw.scope === GLOBAL ? null : sw.scope, reason, name: state.name || null,
        }),
      });
      sw.reason.value = "";
      say(sw, action === "kill"
        ? `Kill switch set by ${result.actor} at ${clock(result.at)}: traffic goes to legacy.`
        : result.cleared ? `Kill switch cleared by ${result.actor}: the rules route traffic again.`
          : "The kill switch was not set.");
    } catch (err) {
      say(sw, err.status === 401 ? "Not authorised: enter the admin token at the top."
        : `Failed (${err.status || "network error"}): ${err.message}`, true);
    } finally {
      sw.pending = false;
      refresh();
    }
  }

  function renderGlobal(status) {
    if (!state.globalSwitch) {
      state.globalSwitch = makeSwitch(GLOBAL, "global");
      $("global-switch").append(state.globalSwitch.root);
    }
    const kills = status.kill_switches || {};
    const funnelKills = killScopes(status).filter((s) => s !== GLOBAL);
    updateSwitch(state.globalSwitch, kills[GLOBAL] || null, false, funnelKills);
    const count = Object.keys(kills).length;
    $("kill-count").replaceChildren(count ? badge(`${count} set`, "killed")
      : badge("none set", "live"));
  }

  // funnels x countries

  function ruleFor(funnel, country) {
    return funnel.rules.find((r) => r.countries === "*" || r.countries.includes(country)) || null;
  }

  function renderMatrix(status) {
    const explicit = new Set();
    for (const f of status.funnels) {
      for (const r of f.rules) if (r.countries !== "*") r.countries.forEach((c) => explicit.add(c));
    }
    const countries = [...explicit].sort();
    const head = el("tr", null, el("th", null, "funnel"),
      countries.map((c) => el("th", { "data-country": c }, c)),
      el("th", { title: "every country no rule names: the '*' rule" }, "other"));
    const kills = status.kill_switches || {};
    const rows = status.funnels.map((f) => el("tr",
      { class: f.killed ? "killed" : null, "data-funnel": f.name },
      el("th", null, f.name, f.killed ? [
        el("div", { class: "forced" }, "killed: 0% core"),
        el("div", { class: "forced-by" }, kills[f.name] ? "all to legacy"
          : "global switch: all to legacy")] : null),
      countries.map((c) => cell(f, c, f.live[c] || {})),
      cell(f, GLOBAL, otherLive(f.live, explicit))));
    $("matrix").replaceChildren(el("thead", null, head), el("tbody", null, rows));
  }

  function otherLive(live, explicit) {
    const sum = { core: 0, legacy: 0 };
    for (const [country, arms] of Object.entries(live)) {
      if (explicit.has(country)) continue;
      sum.core += arms.core || 0;
      sum.legacy += arms.legacy || 0;
    }
    return sum;
  }

  // A killed funnel's cell: the rule's percentage greyed (not in force) and "killed" instead
  // of the last minute's live split, which still counts core traffic from before the kill.
  // The data-*-rps attributes keep the monitor's figures, as `strangler status` gives them.
  function cell(funnel, country, live) {
    const rule = country === GLOBAL ? funnel.rules.find((r) => r.countries === "*") || null
      : ruleFor(funnel, country);
    const core = live.core || 0;
    const legacy = live.legacy || 0;
    const total = core + legacy;
    const share = total > 0 ? core / total : null;
    const killed = Boolean(funnel.killed);
    const ruleText = rule ? `rule ${rule.id}: ${rule.percent}% of customers to the core`
      : "no rule matches: legacy";
    return el("td", {
      class: "cell" + (rule ? "" : " no-rule") + (killed ? " killed" : ""),
      "data-funnel": funnel.name, "data-country": country,
      "data-percent": rule ? String(rule.percent) : "", "data-core-rps": String(core),
      "data-legacy-rps": String(legacy), "data-killed": killed ? "true" : null,
      title: killed ? `killed: 0% core, all traffic to legacy (${ruleText}, not in force ` +
        "while the kill switch is set)" : ruleText,
    },
    el("div", { class: "pct" }, rule ? rule.percent + "%" : "\u2013"),
    killed ? splitBar(0, null) : splitBar(share, rule ? rule.percent / 100 : 0),
    el("div", { class: "live" }, killed ? "killed" : total > 0
      ? `core ${(share * 100).toFixed(0)}% \u00b7 ${rps(core)}/${rps(legacy)} req/s`
      : "no traffic"),
    el("div", { class: "rule" }, rule ? rule.id : "no rule"));
  }

  // `configured` null: no tick (a killed funnel, whose rules are not in force).
  function splitBar(share, configured) {
    const bar = svg("svg", { class: "split", viewBox: "0 0 100 8", preserveAspectRatio: "none",
      role: "img", "aria-label": share === null ? "no traffic" : `core ${pct(share)}` },
    svg("rect", { x: 0, y: 1, width: 100, height: 6, fill: share === null ? "#e5e7eb" : LEGACY }));
    if (share !== null) {
      bar.append(svg("rect", { x: 0, y: 1, width: share * 100, height: 6, fill: CORE }));
    }
    if (configured !== null) {
      bar.append(svg("rect",
        { x: Math.min(99.2, configured * 100), y: 0, width: 0.8, height: 8, fill: "#111827" }));
    }
    return bar;
  }

  // funnel cards: guardrails and charts

  function makeCard(name) {
    const card = {
      switch: makeSwitch(name, name),
      verdict: el("span"),
      since: el("span", { class: "since" }),
      guardrails: el("div", { class: "guardrails scroll" }),
      charts: new Map(),
    };
    const charts = el("div", { class: "charts" });
    for (const m of METRICS) {
      const latest = el("span", { class: "chart-latest" });
      const holder = el("div");
      card.charts.set(m.key, { latest, holder });
      charts.append(el("div", { class: "chart", "data-metric": m.key },
        el("div", { class: "chart-title" }, el("b", null, m.title), latest), holder));
    }
    card.root = el("article", { class: "funnel", "data-funnel": name },
      el("div", { class: "funnel-head" }, el("h3", null, name), card.verdict, card.since),
      card.switch.root, card.guardrails, charts);
    return card;
  }

  function renderFunnels(status, report, series) {
    const container = $("funnels");
    const names = new Set(status.funnels.map((f) => f.name));
    for (const [name, card] of state.cards) {
      if (!names.has(name)) { card.root.remove(); state.cards.delete(name); }
    }
    const coveredByGlobal = Boolean(status.kill_switches[GLOBAL]);
    status.funnels.forEach((f, i) => {
      let card = state.cards.get(f.name);
      if (!card) { card = makeCard(f.name); state.cards.set(f.name, card); }
      container.append(card.root); // keeps the order of the rules
      card.root.classList.toggle("is-killed", f.killed);
      updateSwitch(card.switch, status.kill_switches[f.name] || null, coveredByGlobal);
      renderGuardrails(card, (report.funnels || {})[f.name], report.at);
      renderCharts(card, series[i]);
    });
  }

  function renderGuardrails(card, judged, reportAt) {
    if (!judged) {
      card.verdict.replaceChildren(badge(reportAt ? "no guardrails" : "not judged yet", "none"));
      card.since.textContent = "";
      card.guardrails.replaceChildren(el("p", { class: "muted" }, reportAt
        ? "The rules configure no guardrails for this funnel: the monitor does not judge it."
        : "No guardrail report yet (the monitor judges every few seconds)."));
      return;
    }
    card.verdict.replaceChildren(badge("guardrails: " + judged.verdict, judged.verdict));
    card.since.textContent = "judged since " + stamp(judged.since);
    const head = el("tr", null, ["guardrail", "verdict", "core", "legacy", "bound", "limit",
      "samples (core / legacy)", "detail"].map((h, i) =>
      el("th", { class: i >= 2 && i <= 6 ? "r" : null }, h)));
    const rows = judged.guardrails.map((g) => {
      const f = guardFormat(g.name);
      return el("tr", { "data-guardrail": g.name, "data-verdict": g.verdict },
        el("td", null, g.name), el("td", null, badge(g.verdict, g.verdict)),
        el("td", { class: "r" }, f.est(g.core_estimate, g)),
        el("td", { class: "r" }, f.est(g.legacy_estimate, g)),
        el("td", { class: "r" }, f.bound(g.bound, g)),
        el("td", { class: "r" }, f.bound(g.threshold, g)),
        el("td", { class: "r" }, `${g.n_core} / ${g.n_legacy}`),
        el("td", { class: "detail" }, g.waiting
          ? g.waiting.lacks + ": " + g.waiting.text : g.detail));
    });
    card.guardrails.replaceChildren(el("table", { class: "grid" },
      el("thead", null, head), el("tbody", null, rows)));
  }

  function renderCharts(card, series) {
    for (const m of METRICS) {
      const { latest, holder } = card.charts.get(m.key);
      const points = series ? series.points : [];
      const last = (arm) => {
        for (let i = points.length - 1; i >= 0; i--) {
          const v = points[i][arm][m.key];
          if (isNum(v)) return v;
        }
        return null;
      };
      latest.replaceChildren(el("span", { class: "core" }, "core " + m.fmt(last("core"))),
        " \u00b7 ", el("span", { class: "legacy" }, "legacy " + m.fmt(last("legacy"))));
      holder.replaceChildren(lineChart(m, points));
    }
  }

  function niceCeil(v) {
    if (!(v > 0)) return 1;
    const base = Math.pow(10, Math.floor(Math.log10(v)));
    for (const step of [1, 2, 2.5, 5, 10]) if (v <= step * base) return step * base;
    return 10 * base;
  }

  function lineChart(metric, points) {
    const W = 300, H = 118, L = 40, R = 8, T = 6, B = 16;
    const plot = svg("svg", { class: "plot", viewBox: `0 0 ${W} ${H}`, role: "img",
      "aria-label": metric.title + ", last hour, core and legacy" });
    const values = [];
    for (const p of points) {
      for (const arm of ["core", "legacy"]) {
        if (isNum(p[arm][metric.key])) values.push(p[arm][metric.key]);
      }
    }
    plot.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
    if (!values.length) {
      plot.append(svg("text",
        { class: "empty", x: (L + W - R) / 2, y: H / 2, "text-anchor": "middle" },
        "no data in the last hour"));
      return plot;
    }
    let top = niceCeil(Math.max(metric.floor, Math.max(...values) * 1.1));
    if (metric.rate) top = Math.min(1, top);
    const t0 = points[0].t;
    const t1 = points[points.length - 1].t;
    const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - R);
    const y = (v) => T + (1 - Math.min(v, top) / top) * (H - T - B);
    for (const frac of [0, 0.5, 1]) {
      const yy = y(top * frac);
      if (frac > 0) {
        plot.append(svg("line", { class: "gridline", x1: L, y1: yy, x2: W - R, y2: yy }));
      }
      plot.append(svg("text", { x: L - 4, y: yy + 3, "text-anchor": "end" },
        metric.axis(top * frac)));
    }
    plot.append(svg("text", { x: L, y: H - 4 }, clock(t0).slice(0, 5)));
    plot.append(svg("text", { x: W - R, y: H - 4, "text-anchor": "end" }, "now"));
    for (const arm of ["legacy", "core"]) {
      let d = "";
      let pen = false;
      const dots = [];
      for (const p of points) {
        const v = p[arm][metric.key];
        if (!isNum(v)) { pen = false; continue; }
        d += (pen ? " L" : " M") + x(p.t).toFixed(1) + " " + y(v).toFixed(1);
        pen = true;
        dots.push(svg("circle",
          { class: "dot " + arm, cx: x(p.t).toFixed(1), cy: y(v).toFixed(1), r: 1.6 },
          svg("title", null, `${clock(p.t).slice(0, 5)} ${arm}: ${metric.fmt(v)} ` +
            `(${p[arm].requests} requests)`)));
      }
      if (d) plot.append(svg("path", { class: "line " + arm, d: d.trim() }));
      plot.append(...dots);
    }
    return plot;
  }

  // shadow parity: per funnel, the share of compared units whose every response matched
  // legacy's, drops, and per route the mismatch rate and the fields that differ most

  // Parity rounded down (0.99899 is 99.89%, never 99.90% against a 99.9% bar), an interval
  // rounded outwards, as `strangler shadow status` shows them.
  function pctFloor(v) {
    return isNum(v) ? (Math.floor(v * 10000 + 1e-6) / 100).toFixed(2) + "%" : "\u2013";
  }
  function pctCeil(v) {
    return isNum(v) ? (Math.ceil(v * 10000 - 1e-6) / 100).toFixed(2) + "%" : "\u2013";
  }
  function interval(bounds) {
    return Array.isArray(bounds) ? `[${pctFloor(bounds[0])}, ${pctCeil(bounds[1])}]` : "\u2013";
  }
  function dropsText(dropped) {
    const parts = Object.entries(dropped || {}).filter(([, n]) => n > 0)
      .sort(([a], [b]) => a.localeCompare(b)).map(([reason, n]) => `${reason} ${n}`);
    return parts.length ? parts.join(", ") : "none";
  }
  const SHADOW_FIELDS = 3; // the fields shown per route, most mismatches first

  function renderShadow(status, shadow) {
    const container = $("shadow");
    const summary = shadow && shadow.funnels ? shadow : { at: null, funnels: {} };
    const names = status.funnels.filter((f) => f.shadow && f.shadow.lines.length)
      .map((f) => f.name);
    for (const name of Object.keys(summary.funnels)) if (!names.includes(name)) names.push(name);
    $("shadow-at").dataset.at = isNum(summary.at) ? String(summary.at) : "";
    $("shadow-at").textContent = summary.at ? `Written ${ago(summary.at)} by the proxy holding ` +
      `the monitor lease, over the last ${duration(summary.window_seconds || 0)}; intervals at ` +
      `${confidence(summary.alpha)} confidence.` : "";
    if (!names.length) {
      container.replaceChildren(el("p", { class: "muted" }, "No funnel has a shadow " +
        "configured: add a shadow: section to a funnel of the rules (docs/shadow.md)."));
      return;
    }
    const note = shadow === null ? el("p", { class: "muted" }, "The shadow summary cannot " +
      "be read from this proxy.") : !summary.at ? el("p", { class: "muted" }, "No shadow " +
      "report yet: the proxy holding the monitor lease writes one every few seconds.") : null;
    container.replaceChildren(note || "", ...names.map((name) => shadowFunnel(name,
      status.funnels.find((f) => f.name === name) || null, summary.funnels[name] || null,
      confidence(summary.alpha))));
  }

  function confidence(alpha) {
    return isNum(alpha) ? Number(((1 - alpha) * 100).toPrecision(4)) + "%" : "95%";
  }

  function shadowFunnel(name, funnel, body, conf) {
    const units = (body && body.units) || {};
    const compared = units.compared || 0;
    const verdict = compared ? badge("parity " + pctFloor(units.parity),
      units.with_mismatch ? "fail" : "pass") : badge("no units compared yet", "none");
    const lines = funnel && funnel.shadow ? funnel.shadow.lines : [];
    const routes = Object.entries((body && body.routes) || {});
    const noise = [];
    const rows = routes.map(([route, r]) => {
      const fields = Object.entries(r.fields || {}).filter(([, f]) => f.mismatches > 0);
      for (const [path, f] of fields) if (f.noise) noise.push({ route, path, hint: f.hint });
      return el("tr", { "data-route": route, "data-mismatches": String(r.mismatches || 0) },
        el("td", null, route), el("td", { class: "r" }, String(r.comparisons || 0)),
        el("td", { class: "r" }, String(r.mismatches || 0)),
        el("td", { class: "r" }, pct2(r.mismatch_rate)),
        el("td", { class: "r" }, interval(r.interval)),
        el("td", { class: "fields" }, fields.length ? fields.slice(0, SHADOW_FIELDS).map(
          ([path, f]) => el("span", { class: "field" + (f.money ? " money" : ""),
            "data-field": path, title: f.hint || "" }, `${path} ${pct2(f.mismatch_rate)} ` +
            `(${f.mismatches} of ${f.comparisons})`, f.noise ? badge("noise?", "none") : null))
          .concat(fields.length > SHADOW_FIELDS ? [`+${fields.length - SHADOW_FIELDS} more`]
            : []) : el("span", { class: "muted" }, "none")));
    });
    const head = el("tr", null, ["route", "responses compared", "with a mismatch",
      "mismatch rate", conf + " interval", "fields that differ most"].map((h, i) =>
      el("th", { class: i >= 1 && i <= 4 ? "r" : null }, h)));
    return el("article", { class: "shadow-funnel", "data-funnel": name,
      "data-units": String(compared), "data-parity": isNum(units.parity) ? String(units.parity)
        : "" },
    el("div", { class: "funnel-head" }, el("h3", null, name), verdict,
      el("span", { class: "since" }, compared ? `${compared} units compared, ` +
        `${units.with_mismatch} with a mismatch; ${conf} interval ` +
        interval(units.parity_interval) : "")),
    el("div", { class: "shadow-config" }, lines.length ? lines.map((l) => el("div", null, l))
      : el("div", null, "No shadow in the active rules: figures from before it was removed.")),
    el("div", { class: "shadow-drops" }, "Dropped before a comparison: " +
      dropsText(body && body.dropped)),
    routes.length ? el("div", { class: "scroll" }, el("table", { class: "grid" },
      el("thead", null, head), el("tbody", null, rows)))
      : el("p", { class: "muted" }, "No response compared in the window yet."),
    noise.length ? el("ul", { class: "shadow-noise" }, noise.map((n) =>
      el("li", { "data-field": n.path }, `${n.route} ${n.path}: ${n.hint}`))) : null);
  }

  // rollouts and audit

  function renderRollouts(rollouts) {
    const container = $("rollouts");
    if (!rollouts.length) {
      container.replaceChildren(el("p", { class: "muted" },
        "No staged rollout yet. Start one with " +
        "`strangler rollout start FUNNEL --steps 1,5,25,50,100 --reason ...`."));
      return;
    }
    const active = rollouts.filter((r) => r.active);
    const shown = active.concat(rollouts.filter((r) => !r.active).slice(0, 5));
    const head = el("tr", null, ["rollout", "funnel", "country", "state", "now", "steps", "hold",
      "detail", "started"].map((h) => el("th", null, h)));
    const rows = shown.map((r) => el("tr", { "data-rollout": r.id, "data-state": r.state },
      el("td", null, r.id), el("td", null, r.funnel), el("td", null, r.country || "all"),
      el("td", null, badge(r.state, r.state)), el("td", { class: "r" }, r.percent + "%"),
      el("td", null, el("span", { class: "steps" }, isNum(r.parity_bar) ? el("span", {
        class: "gate" + (r.step_index < 0 ? " current" : " done"),
        title: `waits for shadow parity of at least ${r.parity_bar}% over ` +
          `${r.parity_min_units} compared units before the first step` },
      `parity \u2265 ${r.parity_bar}%`) : null, r.steps.map((s, i) => el("span", {
        class: i < r.step_index ? "done" : i === r.step_index ? "current" : null }, s + "%")))),
      el("td", { class: "r" }, duration(r.hold_seconds)),
      el("td", { class: "detail" }, r.detail),
      el("td", null, `${r.actor}, ${stamp(r.created_at)}`,
        el("div", { class: "detail" }, r.reason))));
    container.replaceChildren(
      el("p", { class: "hint" },
        active.length ? `${active.length} in progress.` : "None in progress."),
      el("div", { class: "scroll" }, el("table", { class: "grid" },
        el("thead", null, head), el("tbody", null, rows))));
  }

  function duration(seconds) {
    if (seconds >= 3600) return (seconds / 3600).toPrecision(2) + " h";
    if (seconds >= 60) return Math.round(seconds / 60) + " min";
    return Math.round(seconds) + " s";
  }

  function renderAudit(entries) {
    const head = el("tr", null,
      ["when", "who", "action", "scope", "reason"].map((h) => el("th", null, h)));
    const rows = entries.map((e) => el("tr", { "data-action": e.action, "data-actor": e.actor },
      el("td", { class: "num" }, stamp(e.at)), el("td", null, e.actor),
      el("td", null, e.action === "kill" ? badge("kill", "killed")
        : e.action === "unkill" ? badge("unkill", "live") : e.action),
      el("td", null, e.target), el("td", null, e.reason)));
    if (!rows.length) {
      rows.push(el("tr", null, el("td", { colspan: 5, class: "muted" }, "No entries yet.")));
    }
    $("audit").replaceChildren(el("thead", null, head), el("tbody", null, rows));
  }

  // -- start ---------------------------------------------------------------------------------

  function syncAuth() {
    state.token = $("token").value.trim();
    state.name = $("actor-name").value.trim();
    sessionStorage.setItem(TOKEN_KEY, state.token);
    localStorage.setItem(NAME_KEY, state.name);
  }

  function start() {
    const token = $("token");
    const name = $("actor-name");
    token.value = state.token;
    name.value = state.name;
    $("auth").addEventListener("submit", (e) => {
      e.preventDefault();
      syncAuth();
      state.config = null;
      refresh();
    });
    token.addEventListener("change", syncAuth);
    name.addEventListener("change", syncAuth);
    refresh();
  }

  start();
})();
