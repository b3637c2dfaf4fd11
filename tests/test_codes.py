"""Problem codes: one registry (app/codes.py), read against the source, so that a code raised
anywhere in app/ cannot be left out of the contract's ProblemCode enum."""

from __future__ import annotations

import ast
import re

from app.codes import PROBLEM_CODES, _Source, source
from app.main import create_app

# Raised only through a value computed at run time (what the source cannot show as a literal).
COMPUTED = {"http_error": "errors.http_problem's fallback for an HTTP status it has no code for"}


def test_every_code_raised_in_the_source_is_registered():
    found = source().found
    assert len(found) > 100  # the reader still finds them
    missing = {code: where for code, where in found.items() if code not in PROBLEM_CODES}
    assert not missing, f"register these in app/codes.py PROBLEM_CODES: {missing}"
    for pattern in source().patterns:  # f"already_{to.value}": some registered code fits it
        assert any(re.fullmatch(pattern, c) for c in PROBLEM_CODES), pattern


def test_every_registered_code_is_raised_somewhere():
    src = source()
    stale = [c for c in PROBLEM_CODES if c not in src.found and c not in COMPUTED
             and not any(re.fullmatch(p, c) for p in src.patterns)]
    assert not stale, f"registered but raised nowhere: {stale}"


def test_codes_are_snake_case_and_described():
    for code, description in PROBLEM_CODES.items():
        assert re.fullmatch(r"[a-z][a-z0-9_]*", code), code
        assert description.strip() and description[0].isupper(), code


def test_the_reader_sees_every_way_a_code_is_raised():
    """A new way to raise a code is still read: each form the services use, in a snippet."""
    snippet = '''
class Gone(DomainError):
    status, code, title = 410, "form_class", "Gone"
def refusal(principal, code, detail): ...
def f(principal):
    raise RuleViolation("x", code="form_keyword")
    raise refusal(principal, "form_positional", "detail")
    found = [("form_tuple", "detail", 422)]
    problem_response(409, "form_response", "Conflict", "detail")
    raise Conflict("x", code=f"form_{state}")
'''
    src = _Source()
    src.trees["app.snippet"] = ast.parse(snippet)
    for node in ast.walk(src.trees["app.snippet"]):
        if isinstance(node, ast.FunctionDef):
            src.params[node.name] = [[a.arg for a in node.args.args]]
    src.params["problem_response"] = [["status", "code", "title", "detail"]]
    codes = {c for c, _ in src.codes_in(src.trees["app.snippet"])}
    assert codes == {"form_class", "form_keyword", "form_positional", "form_tuple",
                     "form_response"}
    assert list(src.patterns) == ["form_[a-z_]+"]


def test_the_contract_enumerates_the_codes_and_each_operation_lists_its_own(settings):
    spec = create_app(settings).openapi()
    enum = spec["components"]["schemas"]["ProblemCode"]
    assert enum["enum"] == list(PROBLEM_CODES)
    assert enum["x-enum-descriptions"] == list(PROBLEM_CODES.values())
    ops = {op["operationId"]: op for item in spec["paths"].values() for op in item.values()}
    for name, op in ops.items():
        listed = op["x-problem-codes"]
        assert set(listed) <= set(PROBLEM_CODES), name
        problems = [s for s, r in op["responses"].items()
                    if "application/problem+json" in r.get("content", {})]
        assert listed or not problems, name
        if "401" in op["responses"]:
            assert "unauthorized" in listed, name
    # read from what each endpoint calls: its own rules' codes, not another resource's
    assert {"caseload_full", "keep_apart", "self_pairing"} <= set(ops["propose_pairing"]
                                                                  ["x-problem-codes"])
    assert "group_full" not in ops["propose_pairing"]["x-problem-codes"]
    assert "version_mismatch" in ops["end_pairing"]["x-problem-codes"]
    assert "idempotency_key_reused" in ops["propose_pairing"]["x-problem-codes"]
    assert "idempotency_key_reused" not in ops["list_pairings"]["x-problem-codes"]
