/** Problem answers (RFC 9457, `application/problem+json`) as typed errors. */
import type { components } from "./schema";

export type Problem = components["schemas"]["Problem"] & {
  error?: string;
  error_description?: string;
};

/** The stable `code`s the API answers with today (from its source). New codes may appear:
 * the union stays open (`string & {}`) so a newer server never breaks a build. */
export const PROBLEM_CODES = [
  "bad_request", "validation_error", "unauthorized", "forbidden", "insufficient_scope",
  "csrf_failed", "not_found", "conflict", "precondition_failed", "version_mismatch",
  "rule_violation", "too_many_requests", "rate_limited", "login_throttled", "payload_too_large",
  "unsupported_media_type", "invalid_cursor", "invalid_request", "invalid_grant", "invalid_client",
  "invalid_scope", "unsupported_grant_type", "idempotency_key_missing", "idempotency_key_reused",
  "idempotency_key_in_flight", "idempotency_outcome_unknown", "invalid_stream_ticket",
  "invalid_transition", "transition_not_allowed", "assignee_not_eligible", "clinician_required",
  "follow_up_required", "observed_before_raise", "observed_in_future", "place_required",
  "unknown_facility", "unknown_housing_unit", "unknown_participant", "unknown_topic",
  "participant_not_supporter", "participant_not_allowed", "participant_archived",
  "participant_merged", "pairing_not_active", "keep_apart_exists", "network_mismatch",
  "network_not_allowed", "network_required", "session_not_held", "not_an_attendee",
  "not_your_page", "external_id_taken", "username_taken", "too_many_rows",
] as const;

export type KnownProblemCode = (typeof PROBLEM_CODES)[number];
export type ProblemCode = KnownProblemCode | (string & {});

export class ProblemError extends Error {
  readonly status: number;
  readonly code: ProblemCode;
  readonly problem: Problem;
  readonly requestId: string | null;
  readonly retryAfter: number | null;

  constructor(problem: Problem, response?: Response) {
    super(`${problem.status} ${problem.code}: ${problem.detail}`);
    this.name = "ProblemError";
    this.problem = problem;
    this.status = problem.status;
    this.code = problem.code;
    this.requestId = problem.request_id ?? response?.headers.get("X-Request-ID") ?? null;
    const after = response?.headers.get("Retry-After");
    this.retryAfter = after != null && after !== "" ? Number(after) : null;
  }

  /** True when the code is one of these (narrows for a `switch`). */
  is<C extends KnownProblemCode>(...codes: C[]): this is ProblemError & { code: C } {
    return (codes as string[]).includes(this.code);
  }

  /** The field errors of a 422, by field name. */
  get fieldErrors(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const e of this.problem.errors ?? []) out[e.field] = e.message;
    return out;
  }
}

/** Any answer that is not 2xx as a ProblemError (a body that is not problem+json becomes one). */
export async function problemOf(response: Response, body?: unknown): Promise<ProblemError> {
  let parsed: unknown = body;
  if (parsed === undefined) {
    try {
      parsed = await response.clone().json();
    } catch {
      parsed = undefined;
    }
  }
  const p = (parsed ?? {}) as Partial<Problem>;
  const problem: Problem = {
    type: p.type ?? "about:blank",
    title: p.title ?? response.statusText ?? "Error",
    status: p.status ?? response.status,
    detail: p.detail ?? p.error_description ?? `HTTP ${response.status}`,
    code: p.code ?? p.error ?? `http_${response.status}`,
    request_id: p.request_id ?? null,
    errors: p.errors ?? null,
    ...(p.error ? { error: p.error, error_description: p.error_description } : {}),
  };
  return new ProblemError(problem, response);
}
