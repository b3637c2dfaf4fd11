"""Domain errors the services raise, and their problem+json rendering.

RFC 9457 body: type, title, status, detail, plus a stable machine `code`, the request id,
and for 422 a list of field errors that never echo what was submitted. The handlers that
answer with these (and audit denials) are app/handlers.py, installed by the app factory.
"""

from __future__ import annotations

from typing import Any

from asgi_correlation_id import correlation_id
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM = "application/problem+json"
TYPE_BASE = "https://peerlink.example/problems/"


class DomainError(Exception):
    status = 400
    code = "bad_request"
    title = "Bad request"

    def __init__(self, detail: str | None = None, *, code: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        if code:
            self.code = code
        self.headers = headers or {}
        self.extra = extra
        self.audited = False  # set when the service already wrote this refusal's audit row


class NotFound(DomainError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(DomainError):
    status, code, title = 409, "conflict", "Conflict"


class PreconditionFailed(DomainError):
    status, code, title = 412, "precondition_failed", "Precondition failed"


class RuleViolation(DomainError):
    status, code, title = 422, "rule_violation", "Request breaks a rule"


class Unauthorized(DomainError):
    status, code, title = 401, "unauthorized", "Authentication required"

    def __init__(self, detail: str = "Missing, invalid or expired credentials", **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": 'Bearer realm="peerlink"'})
        super().__init__(detail, **kw)


class Forbidden(DomainError):
    status, code, title = 403, "forbidden", "Forbidden"


class TooManyRequests(DomainError):
    status, code, title = 429, "too_many_requests", "Too many requests"


class FieldError(BaseModel):
    field: str
    message: str
    type: str


class Problem(BaseModel):
    """problem+json body (RFC 9457), documented on every operation."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    request_id: str | None = None
    errors: list[FieldError] | None = None


def problem_response(status: int, code: str, title: str, detail: str,
                     headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {
        "type": TYPE_BASE + code, "title": title, "status": status, "detail": detail,
        "code": code, "request_id": correlation_id.get(),
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM)


_HTTP_CODES = {
    400: ("bad_request", "Bad request"), 401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Forbidden"), 404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"), 406: ("not_acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"), 412: ("precondition_failed", "Precondition failed"),
    413: ("payload_too_large", "Request body too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    429: ("too_many_requests", "Too many requests"),
}


def field_error(err: Any) -> dict[str, str]:
    """One pydantic error as {field, message, type}, without the submitted value."""
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
    msg = str(err.get("msg", "invalid"))
    # pydantic puts the offending input in some messages; keep only the rule.
    if err.get("type") == "extra_forbidden":
        msg = "unknown field"
    elif "`" in msg or "found" in msg:
        msg = msg.split(":")[0].split(",")[0]  # drop the quoted fragment of the input
    return {"field": ".".join(loc) or "body", "message": msg, "type": err.get("type", "")}


def _field_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    return [field_error(err) for err in exc.errors()]


# 422 refusals that are really authorisation: reaching for a facility, network or person
# outside the caller's scope.
AUDITED_REFUSALS = frozenset({"network_not_allowed", "unknown_facility", "unknown_participant",
                              "not_eligible", "not_found"})


def is_denial(exc: DomainError) -> bool:
    """A refusal the audit trail records: 401, 403, a 404 on a scoped record, or a 422 that
    reaches outside the caller's scope."""
    return exc.status in (401, 403, 404) or exc.code in AUDITED_REFUSALS


def domain_problem(exc: DomainError) -> JSONResponse:
    return problem_response(exc.status, exc.code, exc.title, exc.detail, exc.headers, **exc.extra)


def validation_problem(exc: RequestValidationError) -> JSONResponse:
    return problem_response(422, "validation_error", "Invalid request",
                            "The request has invalid fields; see errors.",
                            errors=_field_errors(exc))


def http_problem(exc: StarletteHTTPException) -> JSONResponse:
    code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
    detail = exc.detail if isinstance(exc.detail, str) and exc.status_code != 500 else title
    return problem_response(exc.status_code, code, title, detail,
                            dict(exc.headers) if exc.headers else None)


def internal_problem() -> JSONResponse:
    """A 500 that tells nothing but the request id to quote."""
    return problem_response(500, "internal_error", "Internal server error",
                            "Something went wrong on our side; quote the request id.",
                            headers={"X-Request-ID": correlation_id.get() or ""})
