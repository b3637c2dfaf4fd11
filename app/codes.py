"""Every machine `code` a problem+json answer can carry, one line each: the registry the
contract's `ProblemCode` enum is built from (main.build_openapi), and that
tests/test_codes.py holds against every code raised anywhere in app/ (read from the source).

A new code: add one line `"my_code": "What it means to a client.",` in its group below
(lowercase snake case; the description is what an integrator reads).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

PROBLEM_CODES: dict[str, str] = {
    # --- any operation: HTTP, authentication, input, concurrency, limits --------------------
    "bad_request": "The request is malformed.",
    "unauthorized": "Missing, invalid, expired or revoked credentials.",
    "forbidden": "The caller may not do this.",
    "insufficient_scope": "The token lacks a scope the operation needs.",
    "not_found": "No such record, or one outside the caller's facilities or network.",
    "method_not_allowed": "The path does not answer this method (see Allow).",
    "not_acceptable": "No representation matches Accept.",
    "conflict": "Conflicts with the record's current state.",
    "precondition_failed": "If-Match does not match the current version.",
    "version_mismatch": "The record changed since it was read (If-Match); read it again.",
    "payload_too_large": "The request body is too large.",
    "unsupported_media_type": "The body's media type is not one the operation takes.",
    "validation_error": "Invalid fields; `errors` lists each (never echoing the value).",
    "rule_violation": "The request breaks a domain rule.",
    "invalid_cursor": "The cursor is not one this list gave.",
    "too_many_requests": "Too many requests (see Retry-After).",
    "rate_limited": "The caller's request budget is spent (see Retry-After and RateLimit).",
    "overloaded": "A routine request waited too long for the API process (crisis work comes "
                  "first); nothing was done: retry after Retry-After.",
    "http_error": "Another HTTP error.",
    "internal_error": "Something went wrong on the server; quote the request id.",
    # --- Idempotency-Key --------------------------------------------------------------------
    "idempotency_key_missing": "This operation requires an Idempotency-Key header.",
    "idempotency_key_reused": "The Idempotency-Key was used with another request body.",
    "idempotency_key_in_flight": "The first request with this key is still running.",
    "idempotency_outcome_unknown": "The first request was applied but its answer was lost.",
    "idempotency_response_not_kept": "The first request's answer was not kept; look it up.",
    # --- sign-in (OAuth 2.0 token and revocation endpoints, RFC 6749 section 5.2) ----------
    "invalid_request": "The token request is malformed.",
    "invalid_client": "Client authentication failed.",
    "invalid_grant": "The credentials, or the refresh token, are invalid or revoked.",
    "invalid_scope": "A requested scope is unknown or not granted to this account.",
    "login_throttled": "Too many failed sign-ins; wait (see Retry-After).",
    "unsupported_grant_type": "The token endpoint does not take this grant (the password grant "
                              "is off in production: browsers sign in through /v1/session).",
    "csrf_failed": "A browser session's write without a matching X-CSRF-Token, or from "
                   "another origin; nothing was done.",
    "invalid_stream_ticket": "The stream ticket is unknown, used or expired.",
    # --- accounts ---------------------------------------------------------------------------
    "username_taken": "Another account has this username.",
    "role_not_for_users": "This role is for API clients, not people.",
    "admin_needs_all_facilities": "An admin account covers every facility.",
    "participant_required": "A peer supporter account must be linked to a participant.",
    "participant_not_allowed": "Only a peer supporter account is linked to a participant.",
    "participant_not_supporter": "The linked participant does not hold the supporter role.",
    "scope_not_allowed": "A requested scope cannot be granted to this kind of account.",
    "self_deactivation": "An account cannot deactivate itself.",
    # --- facilities and participants --------------------------------------------------------
    "facility_code_taken": "Another facility has this code.",
    "housing_unit_code_taken": "Another housing unit of the facility has this code.",
    "unknown_facility": "No such facility within the caller's scope.",
    "unknown_housing_unit": "No such housing unit in the facility.",
    "unknown_participant": "No such participant within the caller's scope.",
    "network_not_allowed": "The caller does not work in this network.",
    "network_required": "The network must be given.",
    "network_immutable": "A participant's network cannot change.",
    "network_mismatch": "The people or records belong to different networks.",
    "wrong_network_field": "A field of the other network (custody or employment) was sent.",
    "external_id_taken": "Another participant has this external id.",
    "participant_merged": "The participant was merged into another record.",
    "participant_archived": "The participant's record is archived.",
    "merge_self": "A record cannot be merged into itself.",
    # --- keep-apart orders ------------------------------------------------------------------
    "keep_apart_exists": "An open order already stands between these people.",
    "keep_apart_same_person": "An order needs two different people.",
    "keep_apart_people_changed": "An order's two people cannot change.",
    "already_open": "The order is already open.",
    "already_closed": "The order is already closed.",
    # --- pairings (DOMAIN rules 1-4) ---------------------------------------------------------
    "not_eligible": "This pairing or meeting is not possible.",
    "keep_apart": "A keep-apart order stands between the people (told only to those who may "
                  "read orders).",
    "self_pairing": "A person cannot support themselves.",
    "not_a_supporter": "The person does not hold the supporter role.",
    "not_a_recipient": "The person does not hold the recipient role.",
    "archived": "The person's record is archived.",
    "not_in_custody": "The person is not in custody.",
    "not_employed": "The person is not currently employed.",
    "supporter_unavailable": "The supporter is not available.",
    "supporter_not_certified": "The supporter is not certified.",
    "supporter_escalation": "An open high or imminent escalation concerns the supporter.",
    "different_facility": "The people are at different facilities.",
    "caseload_full": "The supporter's caseload is full.",
    "recipient_already_paired": "The recipient already has an active or paused pairing.",
    "invalid_transition": "The record's state does not allow this move.",
    "transition_not_allowed": "The caller may not make this move.",
    # --- support sessions and training ------------------------------------------------------
    "pairing_not_active": "One-to-one sessions happen within an active pairing.",
    "not_a_group": "The session is not a group session.",
    "group_full": "The group session has no free place.",
    "already_attending": "The person already attends the session.",
    "not_an_attendee": "The person does not attend the session.",
    "facilitator_not_eligible": "The facilitator may not lead this group.",
    "unknown_topic": "No such session topic.",
    "topic_exists": "A topic with this code exists.",
    "session_not_held": "The session did not take place (complete it first).",
    "course_retired": "The course is retired.",
    "enrollment_open": "The person already has an open enrollment in the course.",
    # --- escalations, observations, on-call --------------------------------------------------
    "clinician_required": "Only a clinician may do this.",
    "assignee_not_eligible": "The assignee may not work this escalation.",
    "follow_up_required": "A follow-up plan is required to resolve at this tier.",
    "place_required": "A housing unit or place must be given.",
    "observed_in_future": "An observation cannot be dated in the future.",
    "observed_before_raise": "An observation cannot predate the escalation.",
    "not_your_page": "The page was sent to someone else.",
    "invalid_time": "The instant needs its UTC offset.",
    "invalid_change": "This change to a shift or override is not allowed.",
    "network_out_of_scope": "The caller does not manage this network.",
    "unknown_level": "The level is not in the facility's escalation chain.",
    "unknown_user": "No such account.",
    "holder_inactive": "The account is not active.",
    "holder_role": "This account's role may not hold this level.",
    "holder_network": "This account's role does not work in this network.",
    "holder_facility": "The account does not cover this facility.",
    # --- webhooks ---------------------------------------------------------------------------
    "unknown_event_type": "No such event type (see the EventType enum).",
    "event_type_not_allowed": "The owner may not see events of this type.",
    "owner_not_allowed": "The caller may not create an endpoint for this owner.",
    "unknown_client": "No such API client.",
    "client_lacks_webhooks_scope": "The API client lacks the webhooks scope.",
    "endpoint_disabled": "The endpoint is disabled.",
    "delivery_pending": "The delivery is still pending.",
    "webhook_url_invalid": "The URL is not a valid absolute URL.",
    "webhook_url_not_https": "The URL must use https.",
    "webhook_url_unresolvable": "The URL's host does not resolve.",
    "webhook_url_address_refused": "The URL resolves to an address that is not allowed.",
    # --- imports ----------------------------------------------------------------------------
    "empty_file": "The file has no rows.",
    "invalid_encoding": "The file is not UTF-8.",
    "invalid_header": "The CSV header does not match the template.",
    "malformed_csv": "The file is not well-formed CSV or NDJSON.",
    "too_many_rows": "The file has more rows than an import takes.",
    "principal_inactive": "The account that submitted the import job is no longer active.",
    # --- referrals --------------------------------------------------------------------------
    "source_not_allowed": "The caller's role cannot refer with this source.",
    "person_not_present": "The person is archived, released, transferred or separated.",
    "match_not_for_person": "The pairing or group session given is not this person's.",
    "match_closed": "The pairing or session given has ended.",
    "not_the_referrer": "Only the person who made the referral may do this.",
    # --- reports ----------------------------------------------------------------------------
    "invalid_month": "Months are written YYYY-MM.",
    "invalid_range": "The range ends before it starts.",
    "range_too_long": "The report covers more months than allowed.",
}

# The codes any operation may answer with a status it documents (middleware, dependencies,
# the handlers): listed on each operation with the codes its own code raises.
BY_STATUS: dict[str, tuple[str, ...]] = {
    "401": ("unauthorized",),
    "403": ("insufficient_scope",),
    "404": ("not_found",),
    "412": ("version_mismatch",),
    "413": ("payload_too_large",),
    "415": ("unsupported_media_type",),
    "422": ("validation_error",),
    "429": ("rate_limited",),
    "500": ("internal_error",),
    "503": ("overloaded",),
}
IDEMPOTENT_POST = ("idempotency_key_reused", "idempotency_key_in_flight",
                   "idempotency_outcome_unknown", "idempotency_response_not_kept")


def schema() -> dict[str, object]:
    """The contract's ProblemCode: the registry as an enum, each code with its description."""
    return {"type": "string", "title": "ProblemCode",
            "description": "Every `code` a problem+json answer can carry. New codes may be "
                           "added in a minor version: treat an unknown one by its status.",
            "enum": list(PROBLEM_CODES),
            "x-enum-descriptions": list(PROBLEM_CODES.values())}


def operation_codes(module: str, function: str, statuses: Iterator[str] | list[str],
                    idempotency_key: str | None) -> list[str]:
    """The codes an operation can answer: those its statuses bring (BY_STATUS), its
    Idempotency-Key's (`idempotency_key`: "optional" or "required" on a POST that takes one),
    and those raised by its endpoint and what the endpoint calls (read from the source)."""
    codes = {c for s in statuses for c in BY_STATUS.get(s, ())}
    if idempotency_key:
        codes |= set(IDEMPOTENT_POST)
    if idempotency_key == "required":
        codes.add("idempotency_key_missing")
    codes |= source().reachable_codes(module, function) & PROBLEM_CODES.keys()
    return sorted(codes)


# --- where codes are raised, read from the source -------------------------------------------
# A code is raised as `code="..."` (a DomainError, flush_unique...), as the argument named
# `code` of any function or class of app/ (problem_response, Refusal, refusal...), as a class's
# `code` attribute, or as the first of a `(code, detail, status)` refusal tuple.

_ROOT = Path(__file__).resolve().parent
_SNAKE = re.compile(r"[a-z][a-z0-9_]*")


@dataclass
class _Source:
    """app/'s modules parsed once: each function's codes and the functions it calls."""

    trees: dict[str, ast.Module] = field(default_factory=dict)
    params: dict[str, list[list[str]]] = field(default_factory=dict)
    found: dict[str, str] = field(default_factory=dict)  # code -> first place it is raised
    patterns: dict[str, str] = field(default_factory=dict)  # f-string codes, as regexes
    _memo: dict[tuple[str, str], Any] = field(default_factory=dict)

    @classmethod
    def read(cls, root: Path = _ROOT) -> _Source:
        src = cls()
        for path in sorted(root.rglob("*.py")):
            module = ".".join(("app", *path.relative_to(root).with_suffix("").parts))
            src.trees[module.removesuffix(".__init__")] = ast.parse(path.read_text())
        for tree in src.trees.values():
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    args = [a.arg for a in (*node.args.posonlyargs, *node.args.args)]
                    src.params.setdefault(node.name, []).append(
                        [a for a in args if a not in ("self", "cls")])
                elif isinstance(node, ast.ClassDef):
                    init = next((s for s in node.body if isinstance(s, ast.FunctionDef)
                                 and s.name == "__init__"), None)
                    fields = ([a.arg for a in init.args.args][1:] if init else
                              [s.target.id for s in node.body if isinstance(s, ast.AnnAssign)
                               and isinstance(s.target, ast.Name)])
                    src.params.setdefault(node.name, []).append(fields)
        for module, tree in src.trees.items():
            for code, line in src.codes_in(tree):
                src.found.setdefault(code, f"{module}:{line}")
        return src

    def codes_in(self, tree: ast.AST) -> Iterator[tuple[str, int]]:
        """The codes raised in this piece of source (f-string ones in `patterns`)."""
        for node in ast.walk(tree):
            for value in self._code_values(node):
                if isinstance(value, ast.Constant) and isinstance(value.value, str) \
                        and _SNAKE.fullmatch(value.value):
                    yield value.value, node.lineno
                elif isinstance(value, ast.JoinedStr):
                    rx = "".join(re.escape(str(v.value)) if isinstance(v, ast.Constant)
                                 else "[a-z_]+" for v in value.values)
                    self.patterns.setdefault(rx, str(node.lineno))

    def _code_values(self, node: ast.AST) -> Iterator[ast.expr]:
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) \
                else None
            yield from (kw.value for kw in node.keywords if kw.arg == "code")
            for params in self.params.get(name or "", []):
                if "code" in params and params.index("code") < len(node.args):
                    yield node.args[params.index("code")]
        elif isinstance(node, ast.ClassDef):
            for s in node.body:
                if not isinstance(s, ast.Assign):
                    continue
                for t in s.targets:
                    if isinstance(t, ast.Name) and t.id == "code":
                        yield s.value
                    elif isinstance(t, ast.Tuple) and isinstance(s.value, ast.Tuple):
                        yield from (v for el, v in zip(t.elts, s.value.elts, strict=False)
                                    if isinstance(el, ast.Name) and el.id == "code")
        elif isinstance(node, ast.Tuple) and len(node.elts) == 3:
            status = node.elts[2]
            if isinstance(status, ast.Constant) and isinstance(status.value, int) \
                    and 400 <= status.value < 600:
                yield node.elts[0]
        elif isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values, strict=False):
                if isinstance(k, ast.Constant) and isinstance(k.value, int) \
                        and 400 <= k.value < 600 and isinstance(v, ast.Tuple) and v.elts:
                    yield v.elts[0]

    # --- what an operation can reach ---------------------------------------------------------
    def _defs(self, module: str) -> dict[str, ast.AST]:
        if ("defs", module) in self._memo:
            return self._memo["defs", module]  # type: ignore[no-any-return]
        tree = self.trees.get(module)
        out = self._memo["defs", module] = {n.name: n for n in (tree.body if tree else [])
                if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)}
        return out

    def _names(self, module: str) -> dict[str, tuple[str, str | None]]:
        """What each imported name of a module stands for: (module, name) or (module, None)."""
        if ("names", module) in self._memo:
            return self._memo["names", module]  # type: ignore[no-any-return]
        out: dict[str, tuple[str, str | None]] = {}
        self._memo["names", module] = out
        for node in self.trees[module].body:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    out[a.asname or a.name] = (sub, None) if sub in self.trees \
                        else (node.module, a.name)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        out[a.asname] = (a.name, None)
        return out

    def resolve(self, module: str, name: str, depth: int = 0) -> tuple[str, ast.AST] | None:
        if module not in self.trees or depth > 5:
            return None
        found = self._defs(module).get(name)
        if found is not None:
            return module, found
        target = self._names(module).get(name)
        if target and target[1] is not None:
            return self.resolve(target[0], target[1], depth + 1)
        return None

    def reachable_codes(self, module: str, name: str) -> set[str]:
        """The codes raised by this function and by the functions of app/ it calls, followed
        through plain names and module attributes (`svc.propose`), not through methods of
        objects: what an operation can answer, as far as the source says."""
        seen: set[tuple[str, str]] = set()
        codes: set[str] = set()
        todo = [(module, name)]
        while todo:
            mod, fn = todo.pop()
            if (mod, fn) in seen:
                continue
            seen.add((mod, fn))
            hit = self.resolve(mod, fn)
            if hit is None:
                continue
            own, calls = self._function(*hit)
            codes |= own
            todo += calls
        return codes

    def _function(self, module: str, node: ast.AST) -> tuple[set[str], list[tuple[str, str]]]:
        """A function's own codes, and the (module, name) of each function it calls."""
        key = ("fn", f"{module}:{id(node)}")
        if key not in self._memo:
            names = self._names(module)
            calls: list[tuple[str, str]] = []
            if isinstance(node, ast.ClassDef):  # a class: its methods (walked below) and bases
                calls += [(module, b.id) for b in node.bases if isinstance(b, ast.Name)
                          and names.get(b.id, ("",))[0] != "app.errors"]  # not DomainError's
            for call in ast.walk(node):
                if not isinstance(call, ast.Call):
                    continue
                f = call.func
                if isinstance(f, ast.Name):
                    calls.append((module, f.id))
                elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                    alias = names.get(f.value.id)
                    if alias and alias[1] is None:
                        calls.append((alias[0], f.attr))
            own = {c for c, _ in self.codes_in(node)}
            for value in (v for n in ast.walk(node) for v in self._code_values(n)):
                if isinstance(value, ast.JoinedStr):  # f"already_{state}": the codes it fits
                    rx = "".join(re.escape(str(v.value)) if isinstance(v, ast.Constant)
                                 else "[a-z_]+" for v in value.values)
                    own |= {c for c in PROBLEM_CODES
                            if re.fullmatch(rx, c) and c not in self.found}
            self._memo[key] = (own, calls)
        return self._memo[key]  # type: ignore[no-any-return]


@cache
def source() -> _Source:
    return _Source.read()
