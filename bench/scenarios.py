"""The bench's scenarios, each declared once: what it asks (the load's requests, built from the
seed), how its answer is checked before the load, what the in-process round-trip count sends,
and the targets its figures are judged against. `bench/run.py` runs the registry in order.

Adding one: append a `Scenario` to SCENARIOS (the order is the run's and the report's). See
bench/README.md, "Adding a scenario".
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol

from app.services.pagination import encode_cursor
from bench.seed import FACILITY_CODE, UNIT_CODES, Seeded


@dataclass(frozen=True)
class Request:
    """One HTTP request: sent raw by the load generator and the answer check, through httpx
    (in-process) by the round-trip count. A scenario with `auth` adds the bearer token."""

    method: str
    path: str
    body: dict[str, Any] | None = None  # sent as JSON


def get(path: str) -> Request:
    return Request("GET", path)


@dataclass(frozen=True)
class Verdict:
    lines: list[str]  # printed under the table, in order
    ratios: dict[str, float]  # into results.json "ratios"
    by_cpu: dict[str, float] = field(default_factory=dict)  # into "ratios"."by_server_cpu"


class Target(Protocol):
    # The report prints the targets of one `order` (in scenario order) before the next's.
    order: ClassVar[int]

    def judge(self, sc: Scenario, results: dict[str, dict[str, Any]],
              concurrency: int) -> Verdict | None:
        """The verdict from the figures of the scenarios measured (`results`, by name; `sc` is
        among them), or None when a scenario it needs did not run."""
        ...


@dataclass(frozen=True)
class Ratio:
    """`num`'s `metric` over `den`'s, in the same run, against `goal` (">= 0.20": the operator
    and the bound; None: printed for information). A throughput ratio is also given from the
    server CPU per request, which is less sensitive to what else shares the cores."""

    order: ClassVar[int] = 0
    label: str
    key: str  # its name in results.json
    num: str
    den: str
    metric: str  # "rps", "p50_ms", "p99_ms"
    goal: str | None = None

    def __post_init__(self) -> None:
        assert self.goal is None or self.goal.split()[0] in (">=", "<="), self.goal

    def judge(self, sc: Scenario, results: dict[str, dict[str, Any]],
              concurrency: int) -> Verdict | None:
        if self.num not in results or self.den not in results:
            return None
        a, b = results[self.num], results[self.den]
        v = a[self.metric] / b[self.metric]
        if self.goal is None:
            return Verdict([f"  {self.label:<40} {v:7.3f}"], {self.key: v})
        op, bound = self.goal.split()
        ok = v >= float(bound) if op == ">=" else v <= float(bound)
        by_cpu, extra = {}, ""
        if self.metric == "rps":
            by_cpu[self.label] = b["server_cpu_ms_per_req"] / a["server_cpu_ms_per_req"]
            extra = f"   (by server CPU/req: {by_cpu[self.label]:.3f})"
        return Verdict([f"  {self.label:<40} {v:7.3f}  target {self.goal:<8} "
                        f"{'PASS' if ok else 'FAIL'}{extra}"], {self.key: v}, by_cpu)


@dataclass(frozen=True)
class Latency:
    """p99 under `ms` (with `p50`, p50 as well), at the scenario's own connection count."""

    order: ClassVar[int] = 1
    ms: float
    p50: bool = False

    def judge(self, sc: Scenario, results: dict[str, dict[str, Any]],
              concurrency: int) -> Verdict | None:
        res, conc = results[sc.name], sc.concurrency or concurrency
        ratios = {f"{sc.name}_p99_ms": res["p99_ms"]}
        verdict = "PASS" if res["p99_ms"] < self.ms and (
            not self.p50 or res["p50_ms"] < self.ms) else "FAIL"
        if self.p50:
            label = f"{sc.name} p50/p99 ms ({conc} conn)"
            return Verdict([f"  {label:<40} {res['p50_ms']:.1f}/{res['p99_ms']:.1f}  target < "
                            f"{self.ms:g} ms {verdict}   (server CPU "
                            f"{res['server_cpu_ms_per_req']:.1f} ms/req, db CPU "
                            f"{res['db_cpu_ms_per_req']:.1f})"], ratios)
        label = f"{sc.name} p99 ms ({conc} conn)"
        return Verdict([f"  {label:<40} {res['p99_ms']:.1f}  target < {self.ms:g} ms "
                        f"{verdict}   (p50 {res['p50_ms']:.1f} ms; server CPU "
                        f"{res['server_cpu_ms_per_req']:.2f} ms/req, db CPU "
                        f"{res['db_cpu_ms_per_req']:.2f})"], ratios)


@dataclass(frozen=True)
class CostVs:
    """p50 latency and server CPU per request, each under `limit` times `base`'s (same run);
    the database CPU ratio for information."""

    order: ClassVar[int] = 2
    base: str
    limit: float

    def judge(self, sc: Scenario, results: dict[str, dict[str, Any]],
              concurrency: int) -> Verdict | None:
        if self.base not in results:
            return None
        name, res, base = sc.name, results[sc.name], results[self.base]
        lines: list[str] = []
        ratios: dict[str, float] = {}
        for what, key in (("p50 latency", "p50_ms"), ("server CPU/req", "server_cpu_ms_per_req")):
            v = res[key] / base[key]
            ratios[f"{name}_vs_{self.base}_{key}"] = v
            label = f"{name} / {self.base} {what}"
            lines.append(f"  {label:<50} {v:7.3f}  target < {self.limit:.1f}  "
                         f"{'PASS' if v < self.limit else 'FAIL'}   ({res[key]:.3f} vs "
                         f"{base[key]:.3f} {'ms' if key == 'p50_ms' else 'ms/req'})")
        v = res["db_cpu_ms_per_req"] / max(base["db_cpu_ms_per_req"], 1e-9)
        ratios[f"{name}_vs_{self.base}_db_cpu"] = v
        lines.append(f"  {name + ' / ' + self.base + ' db CPU/req':<50} {v:7.3f}  (for "
                     f"information: {res['db_cpu_ms_per_req']:.3f} vs "
                     f"{base['db_cpu_ms_per_req']:.3f} ms/req)")
        return Verdict(lines, ratios)


Builder = Callable[[Seeded], Any]


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str | Callable[[Seeded], str]  # printed as it runs
    # The load's requests, sent in turn on every connection (and rotated on from where the
    # previous round stopped); the first is the one the check sends.
    load: Callable[[Seeded], list[Request]]
    server: str = "app"  # "app" | "baseline"
    auth: bool = True  # the bearer token on every request (the app's)
    expect: int = 200  # the check's status
    # The check of the first request's answer (parsed JSON, the seed, its size in bytes); it
    # raises (assert) when wrong.
    check: Callable[[Any, Seeded, int], None] | None = None
    # The checked request changed the data: the load starts after it (each move still moves).
    check_writes: bool = False
    # The round-trip count's (warm-up, measured) requests, in-process; default: the checked
    # request twice. The warm-up opens the pool connection, so the measured one is steady state.
    trip: Callable[[Seeded], tuple[Request, Request]] | None = None
    trips_as: str = ""  # the same request as that scenario's: its count, not listed again
    needs: str = ""  # the round trips the request's shape needs, printed beside the count
    concurrency: int | None = None  # None: BENCH_CONCURRENCY
    group: str = ""  # BENCH_ONLY matches the name or the group
    targets: tuple[Target, ...] = ()
    sessions: bool = False  # needs the sessions seed (BENCH_SESSIONS): seeded when it runs
    breach: bool = False  # the breach check runs after the load when this scenario runs

    def picked(self, only: set[str]) -> bool:
        return not only or self.name in only or self.group in only

    def describe(self, seeded: Seeded) -> str:
        return self.what if isinstance(self.what, str) else self.what(seeded)

    def trip_requests(self, seeded: Seeded) -> tuple[Request, Request]:
        if self.trip is not None:
            return self.trip(seeded)
        first = self.load(seeded)[0]
        return first, first


def unloaded(sc: Scenario) -> Scenario:
    """The same request, one at a time: the answer time without queueing behind the others (at
    32 connections on one worker, p50 is mostly queueing: about 32 x the service time). Runs
    with BENCH_ONLY=<the scenario's name>; its answer is checked for the status only."""
    return replace(sc, name=f"{sc.name}_c1", what="the same, 1 connection (unloaded answer time)",
                   concurrency=1, group=sc.name, check=None, trips_as=sc.name, breach=False)


# --- requests --------------------------------------------------------------------------------

DASHBOARD = "/v1/escalations?status=open&sort=deadline&limit=50"


def _read_ids(s: Seeded) -> list[Any]:
    """2,000 random participants (the same for naive_read and auth_read)."""
    rng = random.Random(7)  # noqa: S311
    return [s.ids[rng.randrange(len(s.ids))] for _ in range(2000)]


def _page1000(s: Seeded) -> str:
    return encode_cursor("participant", s.ids[999 * 50 - 1])  # row 49,950 in id order


def _upsert(s: Seeded, i: int, unit: int) -> Request:
    return Request("PUT", f"/v1/participants/by-external-id/jms/{s.ext(i)}", {
        "network": "incarcerated", "legal_name": s.names[i], "facility_code": FACILITY_CODE,
        "housing_unit_code": UNIT_CODES[unit], "custody_status": "in_custody",
        "program_roles": ["supporter", "recipient"] if s.is_supporter(i) else ["recipient"]})


def _upsert_change(s: Seeded) -> list[Request]:
    """Rows disjoint from the no-op ones and the pages; each pass over them moves every person
    to another unit than the pass before."""
    n, nu = len(s.ids), len(UNIT_CODES)
    rows = range(n // 2 + n // 10, n)
    return ([_upsert(s, i, (s.unit_of(i) + 1) % nu) for i in rows]
            + [_upsert(s, i, (s.unit_of(i) + 2) % nu) for i in rows])


def _upsert_change_trip(s: Seeded) -> tuple[Request, Request]:
    """Two of the people the load moves, each to the unit its passes never send them to (+3),
    so both requests are moves whatever the load left."""
    n, nu = len(s.ids), len(UNIT_CODES)
    return (_upsert(s, n - 3, (s.unit_of(n - 3) + 3) % nu),
            _upsert(s, n - 5, (s.unit_of(n - 5) + 3) % nu))


def _candidates(s: Seeded) -> Request:
    assert s.candidates is not None
    return get(f"/v1/pairings/candidates?recipient_id={s.candidates.recipient_id}")


def _ss(s: Seeded) -> Any:
    assert s.sessions is not None
    return s.sessions


# --- answer checks ---------------------------------------------------------------------------

def _check_page1(data: Any, s: Seeded, size: int) -> None:
    assert len(data["items"]) == 50, "list_page1"
    assert data["next_cursor"] == encode_cursor("participant", s.ids[49]), "list_page1"
    assert data["items"][0]["id"] == str(s.ids[0]), "list_page1"


def _check_page1000(data: Any, s: Seeded, size: int) -> None:
    assert len(data["items"]) == 50, "list_page1000"
    assert data["items"][0]["id"] == str(s.ids[49950]), "list_page1000"


def _check_version(name: str, version: int, wrong: str) -> Callable[[Any, Seeded, int], None]:
    def check(data: Any, s: Seeded, size: int) -> None:
        assert data["version"] == version, f"{name}: {wrong}"
    return check


def _check_candidates(data: Any, s: Seeded, size: int) -> None:
    """The answer for the seeded recipient: the best 25 of each list, and the totals."""
    c = s.candidates
    assert c is not None
    elig, inel = data["eligible"], data["ineligible"] or []
    why: dict[str, int] = {}
    for x in inel:
        for r in x["refusals"]:
            why[r["code"]] = why.get(r["code"], 0) + 1
    print(f"  candidates check: {data['eligible_total']:,} eligible (expected "
          f"{c.expected_eligible:,} = {len(c.supporter_ids):,} supporters - {len(c.full)} at the "
          f"caseload cap - {len(c.keep_apart)} keep-apart), {data['ineligible_total']} "
          f"ineligible {why}; top {len(elig)} returned; {size / 1024:,.0f} KiB", flush=True)
    assert data["eligible_total"] == c.expected_eligible, "candidates: eligible count"
    assert data["eligible_total"] + data["ineligible_total"] == len(c.supporter_ids), \
        "candidates: supporters missing"
    assert why == {"caseload_full": len(c.full), "keep_apart": len(c.keep_apart)}, why
    assert all(x["eligible"] and x["score"] for x in elig), "candidates: eligible without score"
    totals = [x["score"]["total"] for x in elig]
    assert totals == sorted(totals, reverse=True), "candidates: not ranked"
    prev = {str(i) for i in c.previous}
    assert all(x["score"]["previous_supporter"] == (2 if x["supporter_id"] in prev else 0)
               for x in elig), "candidates: previous supporters"


def _check_sessions_page(data: Any, s: Seeded, size: int) -> None:
    """The seeded recipient's page: all their sessions, in id order, each with them in it."""
    name, ss = "sessions_by_participant", _ss(s)
    got = [x["id"] for x in data["items"]]
    assert got == [str(i) for i in ss.session_ids], f"{name}: not the recipient's sessions"
    assert data["next_cursor"] is None, name
    who = str(ss.recipient_id)
    assert all(any(a["participant_id"] == who for a in x["attendees"])
               and len(x["attendees"]) == 2 for x in data["items"]), f"{name}: attendees"
    print(f"  sessions_by_participant check: {len(got)} sessions of the recipient, "
          f"2 attendees each", flush=True)


def _check_summary(data: Any, s: Seeded, size: int) -> None:
    """Their pairing's outcomes as the seed computed them."""
    ss = _ss(s)
    want = {"pairing_id": str(ss.pairing_id), "sessions_held": ss.held,
            "sessions_attended": ss.attended, "average_wellbeing_change": ss.change}
    seen = {k: data[k] for k in want}
    assert seen == want, f"pairing_summary: {seen} != {want}"
    print(f"  pairing_summary check: {data}", flush=True)


def _check_dashboard(data: Any, s: Seeded, size: int) -> None:
    """The 50 most urgent open escalations, by deadline (then id), as the seed wrote them."""
    es = s.escalations
    assert es is not None
    items = data["items"]
    got = [x["id"] for x in items]
    deadlines = [x["ack_deadline"] for x in items]
    assert len(items) == 50, f"escalation_dashboard: {len(items)} items"
    assert all(x["status"] == "open" for x in items), "escalation_dashboard: not all open"
    assert [(d, i) for d, i in zip(deadlines, got, strict=True)] == sorted(
        (d, i) for d, i in zip(deadlines, got, strict=True)), "escalation_dashboard: not sorted"
    assert got == [str(i) for i in es.dashboard], "escalation_dashboard: not the 50 most urgent"
    print(f"  escalation_dashboard check: 50 of {es.open} open ({es.total:,} escalations), "
          f"by ack_deadline {deadlines[0]} .. {deadlines[-1]}", flush=True)


def _report_month() -> str:
    """The last whole month: the seed's sessions and escalations run up to today."""
    from datetime import UTC, datetime
    today = datetime.now(UTC)
    y, m = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
    return f"{y:04d}-{m:02d}"


REPORT = f"/v1/reports/program?from={_report_month()}&facility={FACILITY_CODE}"
REPORT_HTML = f"/v1/reports/program.html?month={_report_month()}&facility={FACILITY_CODE}"


def _check_report(data: Any, s: Seeded, size: int) -> None:
    """A month of the seeded facility: sessions held and escalations counted, none suppressed."""
    held = [f for f in data["figures"] if f["figure"] == "sessions_held"
            and f["network"] == "incarcerated" and f["breakdown"] is None]
    esc = [f for f in data["figures"] if f["figure"] == "escalations"
           and f["network"] == "incarcerated" and f["breakdown"] is None]
    assert held and held[0]["value"] > 10_000, f"program_report: sessions {held}"
    assert esc and esc[0]["value"] > 1_000 and not esc[0]["suppressed"], esc
    print(f"  program_report check: {data['from']}: {held[0]['value']:,.0f} sessions held, "
          f"{esc[0]['value']:,.0f} escalations; {len(data['figures'])} figures, "
          f"{size / 1024:,.0f} KiB", flush=True)


REPORT_TARGET_MS = 1000.0  # the issue: "answers in under 1 s"

_report_sc = Scenario(
    # 1,000,000 sessions and 50,000 escalations in the first facility (bench/seed.py).
    "program_report", f"GET {REPORT} (1M sessions, 50,000 escalations)",
    lambda s: [get(REPORT)], check=_check_report, sessions=True, concurrency=1,
    needs="~25: each section's grouped queries for each network (principal cached)",
    targets=(Latency(REPORT_TARGET_MS, p50=True),))


# --- the registry ----------------------------------------------------------------------------

CANDIDATES_TARGET_MS = 100.0  # the issue: "well under 100 ms with 2,000 supporters"
DASHBOARD_TARGET_MS = 50.0  # the issue: "the open dashboard answers at p99 under 50 ms"
SESSIONS_TARGET = 2.0  # the issue: both "stay under 2x the cost of a plain read"

_candidates_sc = Scenario(
    # 2,000 certified supporters in facility BENCH2 (bench/seed.py seed_candidates).
    "candidates", "GET /v1/pairings/candidates?recipient_id=... (2,000 supporters)",
    lambda s: [_candidates(s)], check=_check_candidates,
    needs="3: recipient, facility cap, the ranking (facts, eligibility and score in one "
          "statement; principal cached)",
    targets=(Latency(CANDIDATES_TARGET_MS, p50=True),))

_dashboard_sc = Scenario(
    # 50,000 escalations in the first facility, 500 open (bench/seed.py seed_escalations).
    "escalation_dashboard", f"GET {DASHBOARD} (50,000 escalations, 500 open)",
    lambda s: [get(DASHBOARD)], check=_check_dashboard, needs="1: the page (principal cached)",
    targets=(Latency(DASHBOARD_TARGET_MS),), breach=True)

SCENARIOS: list[Scenario] = [
    Scenario("bare", "GET /bare (async def, small dict)", lambda s: [get("/bare")],
             server="baseline", auth=False, needs="0"),
    Scenario("naive_read", "GET /naive/{id} (sync def, Session.get, no auth)",
             lambda s: [get(f"/naive/{i}") for i in _read_ids(s)],
             server="baseline", auth=False, needs="1: the row",
             trip=lambda s: (get(f"/naive/{s.ids[1]}"), get(f"/naive/{s.ids[2]}"))),
    Scenario("auth_read", "GET /v1/participants/{id} (bearer token)",
             lambda s: [get(f"/v1/participants/{i}") for i in _read_ids(s)],
             trip=lambda s: (get(f"/v1/participants/{s.ids[1]}"),
                             get(f"/v1/participants/{s.ids[2]}")),
             needs="1: the row (the principal comes from the per-token cache)",
             targets=(Ratio("auth read / bare throughput", "auth_read_vs_bare_rps",
                            "auth_read", "bare", "rps", ">= 0.20"),
                      Ratio("auth read / naive read throughput", "auth_read_vs_naive_rps",
                            "auth_read", "naive_read", "rps", ">= 2.0"))),
    Scenario("list_page1", "GET /v1/participants?limit=50",
             lambda s: [get("/v1/participants?limit=50")], check=_check_page1,
             needs="1: the page (principal cached)"),
    Scenario("list_page1000", "GET /v1/participants?limit=50&cursor=<page 1000>",
             lambda s: [get(f"/v1/participants?limit=50&cursor={_page1000(s)}")],
             check=_check_page1000, needs="1: the page (principal cached)",
             targets=(Ratio("page 1000 / page 1 p50 latency", "page1000_vs_page1_p50",
                            "list_page1000", "list_page1", "p50_ms", "<= 1.2"),
                      Ratio("page 1 / page 1000 throughput (cost)", "page1_vs_page1000_rps",
                            "list_page1", "list_page1000", "rps", "<= 1.2"),
                      Ratio("page 1000 / page 1 p99 latency", "page1000_vs_page1_p99",
                            "list_page1000", "list_page1", "p99_ms"))),
    Scenario("upsert_noop", "PUT /v1/participants/by-external-id/jms/{v} (same body)",
             lambda s: [_upsert(s, i, s.unit_of(i)) for i in range(min(len(s.ids), 20000))],
             check=_check_version("upsert_noop", 1, "the same body changed the record"),
             trip=lambda s: (_upsert(s, 3, s.unit_of(3)), _upsert(s, 5, s.unit_of(5))),
             needs="2-3: row by external id (locked), facility+unit; principal cached"),
    Scenario("upsert_change", "PUT .../by-external-id/jms/{v} (housing unit moves)",
             _upsert_change, check_writes=True,
             check=_check_version("upsert_change", 2, "the move did not change the record"),
             trip=_upsert_change_trip,
             needs="<= 6 with BEGIN: the row by external id (locked as it is read), "
                   "facility+unit, UPDATE, the keep-apart check, audit chain + COMMIT"),
    _candidates_sc,
    unloaded(_candidates_sc),
    # 2,000 typical pairings (and their recipients), rotated as auth_read rotates its ids; the
    # first is the checked one.
    Scenario("sessions_by_participant",
             lambda s: f"GET /v1/support-sessions?participant_id=...&limit=50 "
                       f"({len(_ss(s).session_ids)} sessions)",
             lambda s: [get(f"/v1/support-sessions?participant_id={r}&limit=50")
                        for r in [_ss(s).recipient_id, *_ss(s).load_recipients]],
             check=_check_sessions_page, sessions=True,
             trip=lambda s: (
                 get(f"/v1/support-sessions?limit=50&participant_id={_ss(s).load_recipients[0]}"),
                 get(f"/v1/support-sessions?limit=50&participant_id={_ss(s).recipient_id}")),
             needs="1: the page with its attendees (principal cached)",
             targets=(CostVs("auth_read", SESSIONS_TARGET),)),
    Scenario("pairing_summary",
             lambda s: f"GET /v1/pairings/{{id}}/summary ({len(_ss(s).session_ids)} sessions)",
             lambda s: [get(f"/v1/pairings/{p}/summary")
                        for p in [_ss(s).pairing_id, *_ss(s).load_pairings]],
             check=_check_summary, sessions=True,
             trip=lambda s: (get(f"/v1/pairings/{_ss(s).load_pairings[0]}/summary"),
                             get(f"/v1/pairings/{_ss(s).pairing_id}/summary")),
             needs="1: the pairing with its aggregates (principal cached)",
             targets=(CostVs("auth_read", SESSIONS_TARGET),)),
    _dashboard_sc,
    unloaded(_dashboard_sc),
    _report_sc,
    Scenario("program_report_html", f"GET {REPORT_HTML} (the printable page)",
             lambda s: [get(REPORT_HTML)], sessions=True, concurrency=1,
             needs="the same queries, rendered", targets=(Latency(REPORT_TARGET_MS, p50=True),)),
]

assert len({sc.name for sc in SCENARIOS}) == len(SCENARIOS), "scenario names must be unique"


@dataclass(frozen=True)
class TopologyScenario:
    """A scenario that runs the production topology itself (several API and worker processes,
    a process killed on purpose) instead of one request's load against one server: its module
    runs it (`python -m <module>`), prints its figures and exits non-zero when a check fails.
    `make bench` runs each after the request scenarios; BENCH_ONLY picks them by name too."""

    name: str
    what: str
    module: str

    def picked(self, only: set[str]) -> bool:
        return not only or self.name in only


TOPOLOGY_SCENARIOS: list[TopologyScenario] = [
    TopologyScenario("scale_out", "2 API processes + 2 workers, 60 s of bounded mixed load, a "
                     "worker SIGKILLed halfway and restarted: breaches once within 10 s, "
                     "webhooks at least once in order per record, idempotent POSTs once, audit "
                     "chain intact", "bench.scaleout"),
]
