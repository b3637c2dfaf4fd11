/**
 * The peerlink client: the generated types (src/schema.d.ts, from openapi/openapi.json) and a
 * thin wrapper on openapi-fetch that does what every frontend would otherwise hand-write:
 * sign-in and refresh (browser session cookies, or bearer tokens for scripts), an
 * Idempotency-Key on each POST, If-Match with a re-read on 412, problems as typed errors,
 * cursor iteration, 429 backoff on Retry-After, and the live stream.
 */
import createClient from "openapi-fetch";
import type { components, paths } from "./schema";
import { ProblemError, problemOf } from "./problems";

export type { components, paths } from "./schema";
export { PROBLEM_CODES, ProblemError, problemOf } from "./problems";
export type { KnownProblemCode, Problem, ProblemCode } from "./problems";
export type Schemas = components["schemas"];

export const CSRF_COOKIE = "__Host-peerlink-csrf";
const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);
const NO_REFRESH = ["/v1/session", "/v1/auth/token", "/v1/auth/revoke"];

export interface PeerlinkOptions {
  /** Where the API is: "" (the default) for the page's own origin. */
  baseUrl?: string;
  /** `cookie`: the browser session (same origin, tokens in httpOnly cookies; the default in
   * a browser). `bearer`: tokens held by this client (scripts, tests, other origins). */
  auth?: "cookie" | "bearer";
  fetch?: (request: Request) => Promise<Response>;
  /** How many times a 429 is retried after its Retry-After (default 3). */
  maxRetries?: number;
  /** Longest wait for one Retry-After, in seconds (default 30). */
  maxRetryAfter?: number;
  sleep?: (ms: number) => Promise<void>;
  newKey?: () => string;
  /** Reads cookies (the CSRF cookie); defaults to document.cookie in a browser. */
  cookies?: () => string;
  EventSource?: EventSourceLike;
}

export interface EventSourceInstance {
  onopen: ((ev: unknown) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: string; lastEventId: string; type: string }) => void) | null;
  addEventListener(type: string, listener: (ev: { data: string; lastEventId: string; type: string }) => void): void;
  close(): void;
}
export type EventSourceLike = new (url: string) => EventSourceInstance;

export interface StreamEvent {
  id: string;
  type: string;
  data: Schemas["EventRead"] | Record<string, unknown>;
}

export interface StreamOptions {
  types?: string[];
  after?: string;
  onEvent: (event: StreamEvent) => void;
  onState?: (state: "open" | "reconnecting" | "closed") => void;
}

export interface Page<T> {
  items: T[];
  next_cursor?: string | null;
}

const defaultSleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const defaultKey = () => globalThis.crypto.randomUUID();

/** Seconds of a Retry-After (delta-seconds or an HTTP date), at least 0. */
export function retryAfterSeconds(value: string | null, now = Date.now()): number {
  if (!value) return 1;
  const n = Number(value);
  if (Number.isFinite(n)) return Math.max(0, n);
  const at = Date.parse(value);
  return Number.isNaN(at) ? 1 : Math.max(0, (at - now) / 1000);
}

function readCookie(all: string, name: string): string | null {
  for (const part of all.split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k === name) return decodeURIComponent(v.join("="));
  }
  return null;
}

export function createPeerlink(options: PeerlinkOptions = {}) {
  const baseUrl = options.baseUrl ?? "";
  const auth = options.auth ?? (typeof document !== "undefined" ? "cookie" : "bearer");
  const baseFetch = options.fetch ?? ((r: Request) => globalThis.fetch(r));
  const sleep = options.sleep ?? defaultSleep;
  const newKey = options.newKey ?? defaultKey;
  const maxRetries = options.maxRetries ?? 3;
  const maxRetryAfter = options.maxRetryAfter ?? 30;
  const cookies = options.cookies ?? (() => (typeof document !== "undefined" ? document.cookie : ""));
  const tokens: { access?: string; refresh?: string; csrf?: string } = {};
  let refreshing: Promise<boolean> | null = null;

  function csrf(): string | undefined {
    return readCookie(cookies(), CSRF_COOKIE) ?? tokens.csrf;
  }

  function decorate(request: Request): Request {
    const headers = new Headers(request.headers);
    if (auth === "bearer" && tokens.access && !headers.has("Authorization")) {
      headers.set("Authorization", `Bearer ${tokens.access}`);
    }
    if (auth === "cookie" && UNSAFE.has(request.method)) {
      const value = csrf();
      if (value) headers.set("X-CSRF-Token", value);
    }
    return new Request(request, { headers });
  }

  /** Every request: Idempotency-Key on POST (kept across retries), auth, 429 backoff, one
   * refresh and retry on 401. */
  async function send(input: Request): Promise<Response> {
    let base = input;
    if (base.method === "POST" && !base.headers.has("Idempotency-Key")) {
      const headers = new Headers(base.headers);
      headers.set("Idempotency-Key", newKey());
      base = new Request(base, { headers });
    }
    const body = UNSAFE.has(base.method) ? await base.clone().arrayBuffer() : undefined;
    let retries = 0;
    let refreshed = false;
    for (;;) {
      const attempt = decorate(new Request(base, body !== undefined ? { body } : {}));
      const response = await baseFetch(attempt);
      if (response.status === 429 && retries < maxRetries) {
        const wait = retryAfterSeconds(response.headers.get("Retry-After"));
        if (wait <= maxRetryAfter) {
          retries += 1;
          await sleep(wait * 1000);
          continue;
        }
      }
      const path = new URL(base.url, "http://x").pathname;
      if (response.status === 401 && !refreshed && !NO_REFRESH.some((p) => path.startsWith(p))) {
        refreshed = true;
        if (await refresh()) continue;
      }
      return response;
    }
  }

  const api = createClient<paths>({
    baseUrl,
    fetch: send,
    credentials: "same-origin",
  });

  async function form(path: string, fields: Record<string, string>): Promise<Response> {
    return send(new Request(baseUrl + path, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams(fields).toString(),
    }));
  }

  async function signIn(username: string, password: string, scope?: string): Promise<void> {
    if (auth === "cookie") {
      const r = await api.POST("/v1/session", { body: { username, password, scope: scope ?? null } });
      if (!r.data) throw await problemOf(r.response, r.error);
      tokens.csrf = r.data.csrf_token;
      return;
    }
    const r = await form("/v1/auth/token", {
      grant_type: "password", username, password, ...(scope ? { scope } : {}),
    });
    if (!r.ok) throw await problemOf(r);
    const t = (await r.json()) as Schemas["TokenResponse"];
    tokens.access = t.access_token;
    tokens.refresh = t.refresh_token ?? undefined;
  }

  /** Bearer tokens obtained elsewhere (client_credentials, a test's own token). */
  function useTokens(access: string, refresh?: string): void {
    tokens.access = access;
    tokens.refresh = refresh;
  }

  /** New tokens (rotated); false when the session is over. Concurrent callers share one. */
  function refresh(): Promise<boolean> {
    // The promise is stored before it can settle: an attempt that ends at once (no session)
    // must not leave a settled promise behind for every later caller.
    if (!refreshing) refreshing = rotate().finally(() => { refreshing = null; });
    return refreshing;
  }

  async function rotate(): Promise<boolean> {
    if (auth === "cookie") {
      if (!csrf()) return false; // no session cookie to refresh: sign in
      const r = await api.POST("/v1/session/refresh", {});
      if (!r.data) return false;
      tokens.csrf = r.data.csrf_token;
      return true;
    }
    if (!tokens.refresh) return false;
    const r = await form("/v1/auth/token", { grant_type: "refresh_token", refresh_token: tokens.refresh });
    if (!r.ok) return false;
    const t = (await r.json()) as Schemas["TokenResponse"];
    tokens.access = t.access_token;
    tokens.refresh = t.refresh_token ?? undefined;
    return true;
  }

  async function signOut(): Promise<void> {
    if (auth === "cookie") {
      await api.POST("/v1/session/logout", {});
    } else {
      for (const token of [tokens.refresh, tokens.access]) {
        if (token) await form("/v1/auth/revoke", { token });
      }
    }
    tokens.access = tokens.refresh = tokens.csrf = undefined;
  }

  /** The answer's data, or its problem thrown as a ProblemError. */
  async function ok<T>(call: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
    const r = await call;
    if (r.response.ok && r.data !== undefined) return r.data as T;
    if (r.response.ok) return undefined as T;
    throw await problemOf(r.response, r.error);
  }

  /** The answer's data and its ETag. */
  async function withEtag<T>(call: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<{ value: T; etag: string }> {
    const r = await call;
    if (!r.response.ok || r.data === undefined) throw await problemOf(r.response, r.error);
    return { value: r.data as T, etag: r.response.headers.get("ETag") ?? "" };
  }

  /** Optimistic concurrency: read (value and ETag), write with `If-Match`; on 412 read again
   * and retry the write on the fresh value (`attempts` writes at most). */
  async function ifMatch<T, R>(read: () => Promise<{ value: T; etag: string }>,
                               write: (current: T, etag: string) => Promise<R>,
                               attempts = 3): Promise<R> {
    for (let i = 1; ; i++) {
      const { value, etag } = await read();
      try {
        return await write(value, etag);
      } catch (e) {
        if (e instanceof ProblemError && e.status === 412 && i < attempts) continue;
        throw e;
      }
    }
  }

  /** Every item of a cursor-paginated list, page after page. */
  async function* paginate<T>(page: (cursor: string | undefined) => Promise<Page<T>>): AsyncGenerator<T> {
    let cursor: string | undefined;
    do {
      const p = await page(cursor);
      yield* p.items;
      cursor = p.next_cursor ?? undefined;
    } while (cursor);
  }

  async function ticket(): Promise<string> {
    const t = await ok(api.POST("/v1/stream/tickets", {}));
    return t.ticket;
  }

  /** The live stream: a single-use ticket, then EventSource; when the stream ends (token
   * expiry, a slow reader, a network cut) it takes a new ticket and resumes after the last
   * event received, so nothing is lost. */
  function stream(opts: StreamOptions): { close(): void } {
    const ES = options.EventSource ?? (globalThis as unknown as { EventSource?: EventSourceLike }).EventSource;
    if (!ES) throw new Error("No EventSource here: pass options.EventSource");
    let last = opts.after;
    let source: EventSourceInstance | null = null;
    let closed = false;
    let delay = 500;
    const deliver = (ev: { data: string; lastEventId: string; type: string }) => {
      if (ev.lastEventId) last = ev.lastEventId;
      let data: StreamEvent["data"];
      try {
        data = JSON.parse(ev.data);
      } catch {
        return;
      }
      opts.onEvent({ id: ev.lastEventId, type: ev.type, data });
    };
    const open = async () => {
      if (closed) return;
      let t: string;
      try {
        t = await ticket();
      } catch (e) {
        if (e instanceof ProblemError && (e.status === 401 || e.status === 403)) {
          closed = true;
          opts.onState?.("closed");
          return;
        }
        opts.onState?.("reconnecting");
        await sleep(delay);
        delay = Math.min(delay * 2, 15_000);
        return open();
      }
      const q = new URLSearchParams({ ticket: t });
      if (last) q.set("after", last);
      if (opts.types?.length) q.set("types", opts.types.join(","));
      const es = new ES(`${baseUrl}/v1/stream?${q}`);
      source = es;
      es.onopen = () => {
        delay = 500;
        opts.onState?.("open");
      };
      es.onmessage = deliver;
      for (const type of opts.types ?? []) es.addEventListener(type, deliver);
      es.onerror = () => {
        es.close();
        if (closed) return;
        opts.onState?.("reconnecting");
        void sleep(delay).then(open);
        delay = Math.min(delay * 2, 15_000);
      };
    };
    void open();
    return {
      close() {
        closed = true;
        source?.close();
        opts.onState?.("closed");
      },
    };
  }

  return { api, ok, withEtag, ifMatch, paginate, signIn, useTokens, refresh, signOut, stream, ticket, newKey };
}

export type Peerlink = ReturnType<typeof createPeerlink>;
