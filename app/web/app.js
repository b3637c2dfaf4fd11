// @ts-check
/**
 * The reference web app: sign-in, the escalation board (live), the peer tablet and the
 * coordinator's desk. No build step: ES modules, type-checked with `tsc --checkJs` against the
 * types generated from the contract (see jsconfig.json). Everything goes through the public
 * API, by way of the TypeScript client (vendor/peerlink-client.js).
 */
import { createPeerlink, ProblemError } from "./vendor/peerlink-client.js";

/** @typedef {import("./vendor/peerlink-client.js").Schemas} S */
/** @typedef {S["EscalationRead"]} Escalation */
/** @typedef {S["MeRead"]} Me */

const pl = createPeerlink({ baseUrl: "", auth: "cookie" });

const ROLE_SCREENS = {
  officer: ["board"], clinician: ["board"], coordinator: ["desk", "board"],
  staff_coordinator: ["desk", "board"], admin: ["desk", "board"], peer_supporter: ["tablet"],
  auditor: ["desk"],
};
const SCREEN_NAMES = { board: "Escalation board", tablet: "Peer tablet", desk: "Coordinator's desk" };
// What each role may do on the board follows the scopes the server granted (GET /v1/auth/me);
// the server still decides each action (a refusal is shown with its problem code).
const CAN = {
  acknowledge: "escalations:write", assign: "escalations:write", resolve: "escalations:write",
  observe: "escalations:observe",
};
/** @param {Me} me @param {keyof typeof CAN} action */
const may = (me, action) => me.scopes.includes(CAN[action]);
const CATEGORIES = ["suicide_risk", "self_harm", "violence_threat", "mental_health_crisis", "victimization", "medical"];
const TIERS = ["imminent", "high", "moderate", "low"];

/** @type {{ me: Me | null, cleanup: Array<() => void> }} */
const state = { me: null, cleanup: [] };

// ---------------------------------------------------------------------------------------------
// DOM helpers

/**
 * @param {string} tag
 * @param {Record<string, any>} [attrs]
 * @param {...(Node | string | null | undefined | false)} children
 * @returns {HTMLElement}
 */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = String(v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

let fieldSeq = 0;
/** A labelled form field. @param {string} label @param {HTMLElement} control */
function field(label, control) {
  const id = control.id || `f${++fieldSeq}`;
  control.id = id;
  return h("div", {}, h("label", { for: id, text: label }), control);
}

/** @param {string} text */
const words = (text) => text.replaceAll("_", " ");
const main = () => /** @type {HTMLElement} */ (document.getElementById("main"));

/** @param {unknown} error */
function showError(error) {
  const box = /** @type {HTMLElement} */ (document.getElementById("alert"));
  if (error instanceof ProblemError) {
    const fields = Object.entries(error.fieldErrors).map(([f, m]) => `${f}: ${m}`).join("; ");
    box.textContent = `${error.problem.detail}${fields ? ` (${fields})` : ""} [${error.code}]`;
  } else {
    box.textContent = String(error instanceof Error ? error.message : error);
  }
  box.hidden = false;
}
function clearError() {
  const box = /** @type {HTMLElement} */ (document.getElementById("alert"));
  box.hidden = true;
  box.textContent = "";
}

/** Runs an action from a button or form, showing its problem if it fails. @param {() => Promise<void>} fn */
async function act(fn) {
  clearError();
  try {
    await fn();
  } catch (e) {
    showError(e);
  }
}

// ---------------------------------------------------------------------------------------------
// Shell: sign-in, navigation

async function start() {
  try {
    state.me = await pl.ok(pl.api.GET("/v1/auth/me", {}));
  } catch (e) {
    if (e instanceof ProblemError && e.status === 401) return renderSignIn();
    throw e;
  }
  renderShell();
  window.addEventListener("hashchange", route);
  route();
}

function renderSignIn() {
  document.getElementById("nav")?.setAttribute("hidden", "");
  const who = /** @type {HTMLElement} */ (document.getElementById("who"));
  who.replaceChildren();
  const user = h("input", { name: "username", autocomplete: "username", required: true });
  const pass = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const form = h("form", { class: "card signin", "aria-labelledby": "signin-title" },
    h("h2", { id: "signin-title", text: "Sign in" }),
    field("Username", user), field("Password", pass),
    h("p", {}, h("button", { type: "submit", text: "Sign in" })));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    void act(async () => {
      await pl.signIn(/** @type {HTMLInputElement} */ (user).value, /** @type {HTMLInputElement} */ (pass).value);
      location.hash = "";
      await start();
    });
  });
  main().replaceChildren(form);
  user.focus();
}

function renderShell() {
  const me = /** @type {Me} */ (state.me);
  const nav = /** @type {HTMLElement} */ (document.getElementById("nav"));
  nav.replaceChildren(...screensOf(me).map((s) => h("a", { href: `#/${s}`, "data-screen": s, text: SCREEN_NAMES[s] })));
  nav.hidden = false;
  const who = /** @type {HTMLElement} */ (document.getElementById("who"));
  who.replaceChildren(h("span", { text: `${me.username ?? me.subject} (${words(me.role)})` }),
    h("button", { class: "secondary", type: "button", text: "Sign out", onclick: () => act(async () => {
      await pl.signOut();
      location.hash = "";
      renderSignIn();
    }) }));
}

/** @param {Me} me @returns {Array<keyof typeof SCREEN_NAMES>} */
function screensOf(me) {
  return /** @type {any} */ (ROLE_SCREENS)[me.role] ?? [];
}

function route() {
  for (const fn of state.cleanup.splice(0)) fn();
  clearError();
  const me = /** @type {Me} */ (state.me);
  const allowed = screensOf(me);
  let screen = /** @type {any} */ (location.hash.replace("#/", ""));
  if (!allowed.includes(screen)) screen = allowed[0];
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("data-screen") === screen) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const screens = { board: renderBoard, tablet: renderTablet, desk: renderDesk };
  void act(async () => {
    if (screen) await screens[/** @type {"board" | "tablet" | "desk"} */ (screen)]();
    else main().replaceChildren(h("p", { text: "Your role has no screen here." }));
  });
}

// ---------------------------------------------------------------------------------------------
// Escalation board

/** @param {number} seconds */
function clock(seconds) {
  const s = Math.abs(Math.round(seconds));
  const text = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  return seconds < 0 ? `overdue ${text}` : text;
}

async function renderBoard() {
  const me = /** @type {Me} */ (state.me);
  /** @type {Map<string, Escalation>} */
  const open = new Map();
  /** @type {Map<string, string>} */
  const units = new Map();
  const facilities = await pl.ok(pl.api.GET("/v1/facilities", { params: { query: { limit: 200 } } }));
  for (const f of facilities.items) {
    const list = await pl.ok(pl.api.GET("/v1/facilities/{facility_id}/housing-units", {
      params: { path: { facility_id: f.id } } }));
    for (const u of list) units.set(u.id, `${f.code} ${u.code}`);
  }
  const list = h("ul", { class: "plain", id: "escalations", "aria-live": "polite", "aria-label": "Open escalations" });
  const watch = h("section", { class: "card", "aria-labelledby": "watch-title" },
    h("h3", { id: "watch-title", text: "Watch log" }), h("p", { class: "muted", text: "Choose an escalation's watch log." }));
  const oncall = h("section", { class: "card", "aria-labelledby": "oncall-title" }, h("h3", { id: "oncall-title", text: "On call now" }));
  const live = h("span", { class: "muted", id: "live-state", text: "connecting…" });
  main().replaceChildren(
    h("div", { class: "row" }, h("h2", { text: "Escalation board" }), live),
    h("div", { class: "grid" }, h("section", { "aria-label": "Escalations" }, list), h("div", {}, oncall, watch)));

  const draw = () => {
    const items = [...open.values()].filter((e) => e.status !== "resolved")
      .sort((a, b) => Date.parse(a.ack_deadline) - Date.parse(b.ack_deadline));
    list.replaceChildren(...items.map((e) => escalationCard(e, units, me, refresh, showWatch)));
    if (!items.length) list.append(h("li", { class: "muted", text: "No open escalation." }));
    tick();
  };
  const tick = () => {
    for (const el of list.querySelectorAll("[data-deadline]")) {
      const status = el.getAttribute("data-status");
      if (status === "acknowledged") { el.textContent = "acknowledged"; continue; }
      const left = (Date.parse(el.getAttribute("data-deadline") ?? "") - Date.now()) / 1000;
      el.textContent = clock(left);
      el.classList.toggle("breached", left < 0);
    }
  };
  /** @param {string} id */
  const refresh = async (id) => {
    const e = await pl.ok(pl.api.GET("/v1/escalations/{escalation_id}", { params: { path: { escalation_id: id } } }));
    if ("tier" in e) open.set(e.id, /** @type {Escalation} */ (e));
    draw();
  };
  /** @param {Escalation} e */
  const showWatch = async (e) => {
    const log = await pl.ok(pl.api.GET("/v1/escalations/{escalation_id}/watch", { params: { path: { escalation_id: e.id } } }));
    watch.replaceChildren(h("h3", { id: "watch-title", text: `Watch log: ${words(e.category)}` }),
      h("p", { text: log.cadence_minutes ? `Staff cadence: every ${log.cadence_minutes} minutes` : "No staff cadence set." }),
      h("h4", { text: `Observations (${log.observations.length})` }),
      h("ul", { class: "plain" }, ...log.observations.map((o) => h("li", {},
        `${new Date(o.observed_at).toLocaleTimeString()} — ${words(o.seen)} (${o.observer_kind}${o.late ? ", written late" : ""})`))),
      h("h4", { text: `Gaps (${log.gaps.length})` }),
      h("ul", { class: "plain" }, ...log.gaps.map((g) => h("li", { class: "gap" },
        `${new Date(g.start).toLocaleTimeString()}–${new Date(g.end).toLocaleTimeString()}: ${g.minutes} min without a staff observation`))));
  };

  let cursor = undefined;
  for await (const e of pl.paginate((c) => pl.ok(pl.api.GET("/v1/escalations", { params: { query: { sort: "deadline", limit: 200, cursor: c } } })))) {
    if ("tier" in e) open.set(e.id, /** @type {Escalation} */ (e));
    if (open.size >= 500) break;
  }
  void cursor;
  draw();
  const timer = setInterval(tick, 1000);
  const stream = pl.stream({
    types: ["escalation.created", "escalation.acknowledged", "escalation.assigned", "escalation.resolved",
      "escalation.reopened", "escalation.tier_changed", "escalation.breached", "escalation.subject_linked"],
    onEvent: (ev) => {
      const id = /** @type {any} */ (ev.data).data?.id;
      if (typeof id === "string") void act(() => refresh(id));
    },
    onState: (s) => { live.textContent = s === "open" ? "live" : s; },
  });
  state.cleanup.push(() => clearInterval(timer), () => stream.close());

  const who = await onCallNow(facilities.items, me);
  oncall.append(...who);
}

/**
 * @param {Escalation} e @param {Map<string, string>} units @param {Me} me
 * @param {(id: string) => Promise<void>} refresh @param {(e: Escalation) => Promise<void>} showWatch
 */
function escalationCard(e, units, me, refresh, showWatch) {
  const unit = e.location_unit_id ? units.get(e.location_unit_id) ?? "unit" : e.location_text ?? "—";
  const title = `${e.tier} — ${words(e.category)}`;
  const ifMatch = (/** @type {(etag: string) => Promise<unknown>} */ write) => act(async () => {
    await pl.ifMatch(
      () => pl.withEtag(pl.api.GET("/v1/escalations/{escalation_id}", { params: { path: { escalation_id: e.id } } })),
      (_cur, etag) => write(etag));
    await refresh(e.id);
  });
  const params = (/** @type {string} */ etag) => ({ path: { escalation_id: e.id }, header: { "if-match": etag } });
  const buttons = [];
  if (may(me, "acknowledge") && (e.status === "open" || e.status === "reopened")) {
    buttons.push(h("button", { type: "button", "aria-label": `Acknowledge: ${title}`, text: "Acknowledge",
      onclick: () => ifMatch((etag) => pl.ok(pl.api.POST("/v1/escalations/{escalation_id}/acknowledge",
        /** @type {any} */ ({ params: params(etag), body: {} })))) }));
  }
  if (may(me, "assign") && e.status !== "resolved") {
    buttons.push(h("button", { type: "button", class: "secondary", "aria-label": `Assign to me: ${title}`, text: "Assign to me",
      onclick: () => ifMatch((etag) => pl.ok(pl.api.POST("/v1/escalations/{escalation_id}/assign",
        /** @type {any} */ ({ params: params(etag), body: { user_id: me.subject } })))) }));
  }
  if (may(me, "resolve") && e.status === "acknowledged") {
    const outcome = h("input", { name: "outcome" });
    const form = h("form", { class: "row" }, field(`Outcome for ${title}`, outcome), h("button", { type: "submit", text: "Resolve" }));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void ifMatch((etag) => pl.ok(pl.api.POST("/v1/escalations/{escalation_id}/resolve",
        /** @type {any} */ ({ params: params(etag), body: { outcome: /** @type {HTMLInputElement} */ (outcome).value } }))));
    });
    buttons.push(form);
  }
  if (may(me, "observe") && e.status !== "resolved") {
    buttons.push(h("button", { type: "button", class: "secondary", "aria-label": `Checked: seen well: ${title}`,
      text: "Checked: seen well", onclick: () => act(async () => {
        await pl.ok(pl.api.POST("/v1/escalations/{escalation_id}/observations", /** @type {any} */ ({
          params: { path: { escalation_id: e.id } }, body: { observed_at: new Date().toISOString(), seen: "well" } })));
        await showWatch(e);
      }) }));
  }
  buttons.push(h("button", { type: "button", class: "secondary", "aria-label": `Watch log: ${title}`, text: "Watch log",
    onclick: () => act(() => showWatch(e)) }));
  return h("li", { class: "card esc", "data-tier": e.tier, "data-id": e.id },
    h("div", { class: "row" }, h("span", { class: `tier tier-${e.tier}`, text: e.tier }),
      h("strong", { text: words(e.category) }),
      h("span", { class: "status", text: words(e.status) })),
    h("p", {}, `Unit: ${unit} · `, "Acknowledge within: ",
      h("span", { class: "countdown", "data-deadline": e.ack_deadline, "data-status": e.status, role: "timer" }),
      e.assigned_to ? ` · assigned` : ""),
    h("div", { class: "row" }, ...buttons));
}

/** @param {S["FacilityRead"][]} facilities @param {Me} me */
async function onCallNow(facilities, me) {
  const out = [];
  for (const f of facilities.slice(0, 4)) {
    for (const network of me.networks.length ? me.networks : ["incarcerated"]) {
      try {
        const r = await pl.ok(pl.api.GET("/v1/on-call", { params: { query: { facility_id: f.id, network: /** @type {any} */ (network) } } }));
        out.push(h("h4", { text: `${f.name} (${words(network)})` }),
          h("ul", { class: "plain" }, ...r.levels.map((l) => h("li", {},
            `${l.level}. ${words(l.name)}: `, l.staffed ? l.people.map((p) => p.display_name).join(", ") : h("strong", { class: "gap", text: "nobody" })))));
      } catch (e) {
        if (!(e instanceof ProblemError)) throw e;
        out.push(h("p", { class: "muted", text: `${f.name}: ${e.problem.detail}` }));
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Peer tablet

async function renderTablet() {
  const me = /** @type {Me} */ (state.me);
  const pairings = await pl.ok(pl.api.GET("/v1/pairings", { params: { query: { status: /** @type {any} */ ("active"), limit: 100 } } }));
  const mine = pairings.items.filter((p) => p.supporter_id === me.participant_id);
  const name = (/** @type {S["PairingRead"]} */ p) => p.recipient?.preferred_name ?? "the person you support";

  const pairing = h("select", { name: "pairing" }, ...mine.map((p) => h("option", { value: p.id, text: name(p) })));
  const started = h("input", { type: "datetime-local", name: "started", value: localNow(-30) });
  const minutes = h("input", { type: "number", name: "minutes", min: 1, max: 480, value: 30 });
  const before = h("select", { name: "before" }, ...[1, 2, 3, 4, 5].map((n) => h("option", { value: n, text: String(n) })));
  const after = h("select", { name: "after" }, ...[1, 2, 3, 4, 5].map((n) => h("option", { value: n, text: String(n), selected: n === 3 })));
  const note = h("textarea", { name: "note" });
  const done = h("p", { role: "status", "aria-live": "polite" });
  const form = h("form", { class: "card", "aria-labelledby": "log-title" }, h("h3", { id: "log-title", text: "Log a session" }),
    field("With", pairing), field("Started", started), field("Minutes", minutes),
    field("Wellbeing before (1–5)", before), field("Wellbeing after (1–5)", after),
    field("Confidential note", note), h("p", {}, h("button", { type: "submit", text: "Save session" })), done);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    void act(async () => {
      const p = /** @type {S["PairingRead"]} */ (mine.find((x) => x.id === /** @type {HTMLSelectElement} */ (pairing).value));
      const at = new Date(/** @type {HTMLInputElement} */ (started).value).toISOString();
      const session = await pl.ok(pl.api.POST("/v1/support-sessions", /** @type {any} */ ({
        body: { kind: "one_to_one", scheduled_at: at, pairing_id: p.id } })));
      await pl.ok(pl.api.POST("/v1/support-sessions/{session_id}/complete", /** @type {any} */ ({
        params: { path: { session_id: session.id } },
        body: { actual_start: at, duration_minutes: Number(/** @type {HTMLInputElement} */ (minutes).value),
          note: /** @type {HTMLTextAreaElement} */ (note).value || null,
          wellbeing: [{ participant_id: p.recipient_id, before: Number(/** @type {HTMLSelectElement} */ (before).value),
            after: Number(/** @type {HTMLSelectElement} */ (after).value) }] } })));
      done.textContent = `Session with ${name(p)} saved.`;
      /** @type {HTMLTextAreaElement} */ (note).value = "";
    });
  });

  const about = h("select", { name: "about" }, h("option", { value: "", text: "A place (nobody named)" }),
    ...mine.map((p) => h("option", { value: p.recipient_id, text: name(p) })));
  const category = h("select", { name: "category" }, ...CATEGORIES.map((c) => h("option", { value: c, text: words(c) })));
  const tier = h("select", { name: "tier" }, ...TIERS.map((t) => h("option", { value: t, text: t })));
  const where = h("input", { name: "where" });
  const what = h("textarea", { name: "what", required: true });
  const raised = h("p", { role: "status", "aria-live": "polite" });
  const raise = h("form", { class: "card", "aria-labelledby": "raise-title" }, h("h3", { id: "raise-title", text: "Raise an escalation" }),
    field("About", about), field("Category", category), field("Tier", tier), field("Where (optional)", where),
    field("What you saw", what), h("p", {}, h("button", { type: "submit", text: "Raise escalation" })), raised);
  raise.addEventListener("submit", (ev) => {
    ev.preventDefault();
    void act(async () => {
      const pid = /** @type {HTMLSelectElement} */ (about).value;
      const r = await pl.ok(pl.api.POST("/v1/escalations", {
        params: { header: { "Idempotency-Key": pl.newKey() } },
        body: { category: /** @type {any} */ (/** @type {HTMLSelectElement} */ (category).value),
          tier: /** @type {any} */ (/** @type {HTMLSelectElement} */ (tier).value),
          description: /** @type {HTMLTextAreaElement} */ (what).value,
          participant_id: pid || null, location_text: /** @type {HTMLInputElement} */ (where).value || null } }));
      raised.textContent = `Raised: ${words(r.status)}. Staff have been alerted.`;
    });
  });

  main().replaceChildren(h("h2", { text: "Peer tablet" }),
    h("div", { class: "grid" },
      h("section", { class: "card", "aria-labelledby": "pairs-title" }, h("h3", { id: "pairs-title", text: "My pairings" }),
        mine.length ? h("ul", { class: "plain", id: "my-pairings" }, ...mine.map((p) => h("li", {}, `${name(p)} — ${words(p.status)}`)))
          : h("p", { text: "No active pairing." })),
      form, raise));
}

/** @param {number} offsetMinutes */
function localNow(offsetMinutes) {
  const d = new Date(Date.now() + offsetMinutes * 60_000);
  d.setSeconds(0, 0);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60_000).toISOString().slice(0, 16);
}

// ---------------------------------------------------------------------------------------------
// Coordinator's desk

async function renderDesk() {
  const q = h("input", { name: "q", type: "search" });
  const results = h("ul", { class: "plain", id: "results", "aria-live": "polite" });
  const detail = h("section", { class: "card", "aria-labelledby": "detail-title", id: "detail" },
    h("h3", { id: "detail-title", text: "Candidates and training" }), h("p", { class: "muted", text: "Search, then choose a person." }));
  const search = h("form", { class: "card", role: "search", "aria-labelledby": "search-title" },
    h("h3", { id: "search-title", text: "Participant search" }), field("Name or identifier", q),
    h("p", {}, h("button", { type: "submit", text: "Search" })), results);
  search.addEventListener("submit", (ev) => {
    ev.preventDefault();
    void act(async () => {
      const page = await pl.ok(pl.api.GET("/v1/participants", { params: { query: { q: /** @type {HTMLInputElement} */ (q).value, limit: 25 } } }));
      results.replaceChildren(...page.items.map((p) => h("li", { class: "row" },
        h("span", { text: `${p.preferred_name ?? p.legal_name} (${p.program_roles.map(words).join(", ") || "no program role"})` }),
        h("button", { type: "button", class: "secondary", "aria-label": `Open ${p.preferred_name ?? p.legal_name}`, text: "Open",
          onclick: () => act(() => openPerson(p, detail)) }))));
      if (!page.items.length) results.append(h("li", { class: "muted", text: "Nobody found." }));
    });
  });
  const reports = h("section", { class: "card", "aria-labelledby": "reports-title", id: "report" },
    h("h3", { id: "reports-title", text: "Program report" }));
  main().replaceChildren(h("h2", { text: "Coordinator's desk" }), h("div", { class: "grid" }, search, detail), reports);
  const me = /** @type {Me} */ (state.me);
  if (me.scopes.includes("reports:read")) await renderReport(reports);
  else reports.append(h("p", { class: "muted", text: "Your role does not read program reports." }));
}

const SVG = "http://www.w3.org/2000/svg";
/** @param {string} tag @param {Record<string, string | number>} attrs @param {...Node} children */
function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  el.append(...children);
  return el;
}

/** The program report's monthly figures (GET /v1/reports/program), as bar charts. @param {HTMLElement} box */
async function renderReport(box) {
  const now = new Date();
  const month = (/** @type {number} */ back) => {
    const d = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - back, 1));
    return d.toISOString().slice(0, 7);
  };
  const report = await pl.ok(pl.api.GET("/v1/reports/program", { params: { query: { from: month(5), to: month(0) } } }));
  /** @type {Map<string, S["Figure"][]>} */
  const series = new Map();
  for (const f of report.figures) {
    if (f.breakdown || f.period.includes("..")) continue;
    const key = `${f.facility} · ${words(f.network)} · ${words(f.section)}: ${words(f.figure)}`;
    series.set(key, [...(series.get(key) ?? []), f]);
  }
  const charts = [...series.entries()].filter(([, fs]) => fs.some((f) => (f.value ?? 0) > 0)).slice(0, 8);
  box.append(h("p", { class: "muted", text: `${report.from} to ${report.to}; counts under ${report.min_cell} people are suppressed.` }));
  if (!charts.length) box.append(h("p", { text: "No figures to chart for these months yet." }));
  const grid = h("div", { class: "grid" });
  for (const [title, figures] of charts) {
    figures.sort((a, b) => a.period.localeCompare(b.period));
    const max = Math.max(1, ...figures.map((f) => f.value ?? 0));
    const barW = 36, height = 110;
    const bars = figures.map((f, i) => {
      const v = f.value ?? 0;
      const hgt = Math.round((v / max) * (height - 30));
      return svg("g", {},
        svg("rect", { x: i * (barW + 8), y: height - 18 - hgt, width: barW, height: hgt, class: "bar-rect" }),
        svg("text", { x: i * (barW + 8) + barW / 2, y: height - 4, "text-anchor": "middle", "font-size": 10 }, document.createTextNode(f.period.slice(5))),
        svg("text", { x: i * (barW + 8) + barW / 2, y: height - 22 - hgt, "text-anchor": "middle", "font-size": 11 },
          document.createTextNode(f.suppressed ? "–" : String(Math.round(v * 10) / 10))));
    });
    const summary = figures.map((f) => `${f.period}: ${f.suppressed ? "suppressed" : f.value ?? "none"}`).join(", ");
    grid.append(h("figure", { class: "chart" }, h("figcaption", { text: title }),
      svg("svg", { viewBox: `0 0 ${figures.length * (barW + 8)} ${height}`, width: figures.length * (barW + 8), height, role: "img", "aria-label": `${title}. ${summary}` }, ...bars)));
  }
  box.append(grid, h("p", {}, h("a", { href: `/v1/reports/program.html?month=${month(1)}${report.facilities.length ? `&facility=${encodeURIComponent(report.facilities[0])}` : ""}`, text: "Printable report (last month)" })));
}

/** @param {S["ParticipantRead"]} person @param {HTMLElement} box */
async function openPerson(person, box) {
  const who = person.preferred_name ?? person.legal_name;
  /** @type {Array<HTMLElement | string>} */
  const parts = [h("h3", { id: "detail-title", tabindex: "-1", text: who })];
  if (person.program_roles.includes("supporter")) {
    const c = await pl.ok(pl.api.GET("/v1/participants/{participant_id}/certification", { params: { path: { participant_id: person.id } } }));
    parts.push(h("h4", { text: "Training status" }), h("p", { id: "training", text: c.certified
      ? `Certified until ${c.until ?? "—"}`
      : `Not certified: ${[c.missing.courses.length ? `${c.missing.courses.length} course(s) to complete` : "",
        c.missing.code_of_conduct ? "code of conduct to sign" : "", c.missing.expired ? "certificate expired" : "",
        c.missing.refresher_hours ? `${c.missing.refresher_hours} refresher hours` : ""].filter(Boolean).join(", ")}` }));
  }
  if (person.program_roles.includes("recipient")) {
    const list = await pl.ok(pl.api.GET("/v1/pairings/candidates", { params: { query: { recipient_id: person.id, limit: 10 } } }));
    const status = h("p", { role: "status", "aria-live": "polite" });
    parts.push(h("h4", { text: `Candidates (${list.eligible_total} eligible)` }),
      h("ul", { class: "plain", id: "candidates" }, ...list.eligible.map((c) => {
        const s = c.score;
        const reasons = s ? [s.shared_language ? "shares a language" : "", s.same_housing_unit ? "same housing unit" : "",
          s.previous_supporter ? "supported them before" : "", `caseload ${c.caseload}`].filter(Boolean).join(", ") : `caseload ${c.caseload}`;
        return h("li", { class: "row" }, h("span", { text: `${c.preferred_name ?? "supporter"}: ${reasons}` }),
          h("button", { type: "button", "aria-label": `Propose and activate: ${c.preferred_name ?? "supporter"}`, text: "Propose and activate",
            onclick: () => act(async () => {
              const p = await pl.ok(pl.api.POST("/v1/pairings", /** @type {any} */ ({ body: { supporter_id: c.supporter_id, recipient_id: person.id } })));
              const active = await pl.ifMatch(
                () => pl.withEtag(pl.api.GET("/v1/pairings/{pairing_id}", { params: { path: { pairing_id: p.id } } })),
                (_cur, etag) => pl.ok(pl.api.POST("/v1/pairings/{pairing_id}/activate", /** @type {any} */ ({
                  params: { path: { pairing_id: p.id }, header: { "if-match": etag } }, body: {} }))));
              status.textContent = `Pairing with ${c.preferred_name ?? "supporter"} is ${words(active.status)}.`;
            }) }));
      })),
      (list.ineligible ?? []).length ? h("details", {}, h("summary", { text: "Not eligible, and why" }),
        h("ul", {}, ...(list.ineligible ?? []).map((c) => h("li", { text: `${c.preferred_name ?? "supporter"}: ${(c.refusals ?? []).map((r) => r.detail).join("; ")}` })))) : "",
      status);
  }
  box.replaceChildren(...parts);
  /** @type {HTMLElement} */ (parts[0]).focus();
}

void start().catch(showError);
