import { describe, expect, it } from "vitest";
import { createPeerlink, ProblemError, retryAfterSeconds, type EventSourceInstance } from "../src/index";

const BASE = "http://api.test";

type Handler = (req: Request, body: string) => Response | Promise<Response>;

function fakeServer(handler: Handler) {
  const seen: { method: string; path: string; headers: Headers; body: string }[] = [];
  const fetch = async (req: Request) => {
    const body = req.body ? await req.text() : "";
    const url = new URL(req.url);
    seen.push({ method: req.method, path: url.pathname + url.search, headers: req.headers, body });
    return handler(req, body);
  };
  return { seen, fetch };
}

const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": status >= 400 ? "application/problem+json" : "application/json", ...headers },
  });

const problem = (status: number, code: string, headers: Record<string, string> = {}) =>
  json(status, { type: "x", title: "t", status, detail: `d ${code}`, code, request_id: "r-1" }, headers);

const noSleep: number[] = [];
const sleep = async (ms: number) => {
  noSleep.push(ms);
};

describe("requests", () => {
  it("sends an Idempotency-Key on each POST and keeps it across 429 retries", async () => {
    let calls = 0;
    const s = fakeServer(() => (++calls < 3 ? problem(429, "rate_limited", { "Retry-After": "2" }) : json(201, { id: "e1" })));
    const pl = createPeerlink({ baseUrl: BASE, auth: "bearer", fetch: s.fetch, sleep, newKey: () => "k-1" });
    pl.useTokens("tok");
    noSleep.length = 0;
    const out = await pl.ok(pl.api.POST("/v1/escalations", { body: { tier: "imminent", summary: "x" } } as never));
    expect(out).toEqual({ id: "e1" });
    expect(s.seen).toHaveLength(3);
    expect(new Set(s.seen.map((r) => r.headers.get("Idempotency-Key")))).toEqual(new Set(["k-1"]));
    expect(s.seen.every((r) => r.headers.get("Authorization") === "Bearer tok")).toBe(true);
    expect(s.seen[2].body).toContain("imminent");
    expect(noSleep).toEqual([2000, 2000]);
  });

  it("gives up after maxRetries and throws the 429 as a typed problem", async () => {
    const s = fakeServer(() => problem(429, "rate_limited", { "Retry-After": "1" }));
    const pl = createPeerlink({ baseUrl: BASE, auth: "bearer", fetch: s.fetch, sleep, maxRetries: 2 });
    const err = await pl.ok(pl.api.GET("/v1/participants", {})).catch((e) => e);
    expect(err).toBeInstanceOf(ProblemError);
    expect(err.status).toBe(429);
    expect(err.code).toBe("rate_limited");
    expect(err.retryAfter).toBe(1);
    expect(err.requestId).toBe("r-1");
    expect(s.seen).toHaveLength(3);
  });

  it("does not add a key to GET and keeps a caller's own key", async () => {
    const s = fakeServer(() => json(200, { items: [], next_cursor: null }));
    const pl = createPeerlink({ baseUrl: BASE, auth: "bearer", fetch: s.fetch, sleep });
    await pl.ok(pl.api.GET("/v1/participants", {}));
    await pl.ok(pl.api.POST("/v1/pairings", { body: {} as never, params: { header: { "Idempotency-Key": "mine" } } as never }));
    expect(s.seen[0].headers.has("Idempotency-Key")).toBe(false);
    expect(s.seen[1].headers.get("Idempotency-Key")).toBe("mine");
  });

  it("reads Retry-After as seconds or as a date", () => {
    expect(retryAfterSeconds("3")).toBe(3);
    expect(retryAfterSeconds(new Date(10_000).toUTCString(), 4_000)).toBe(6);
    expect(retryAfterSeconds(null)).toBe(1);
  });
});

describe("sign-in and refresh", () => {
  it("browser session: posts the password, then sends the CSRF cookie's value on writes only", async () => {
    const s = fakeServer((req) =>
      new URL(req.url).pathname === "/v1/session"
        ? json(200, { csrf_token: "c-1", expires_in: 900, scope: "a" })
        : json(200, { items: [] }));
    let jar = "";
    const pl = createPeerlink({ baseUrl: BASE, auth: "cookie", fetch: s.fetch, sleep, cookies: () => jar });
    await pl.signIn("ann", "pw");
    expect(JSON.parse(s.seen[0].body)).toMatchObject({ username: "ann", password: "pw" });
    jar = "other=1; __Host-peerlink-csrf=c-2";
    await pl.api.GET("/v1/participants", {});
    await pl.api.POST("/v1/stream/tickets", {});
    expect(s.seen[1].headers.has("X-CSRF-Token")).toBe(false);
    expect(s.seen[1].headers.has("Authorization")).toBe(false);
    expect(s.seen[2].headers.get("X-CSRF-Token")).toBe("c-2");
  });

  it("bearer: a 401 refreshes once (rotating the refresh token) and retries", async () => {
    let access = "a1";
    const s = fakeServer((req, body) => {
      const path = new URL(req.url).pathname;
      if (path === "/v1/auth/token") {
        const f = new URLSearchParams(body);
        if (f.get("grant_type") === "password") return json(200, { access_token: "a1", refresh_token: "r1", expires_in: 900, scope: "" });
        expect(f.get("refresh_token")).toBe("r1");
        access = "a2";
        return json(200, { access_token: "a2", refresh_token: "r2", expires_in: 900, scope: "" });
      }
      return req.headers.get("Authorization") === `Bearer ${access}` && access === "a2"
        ? json(200, { subject: "u" })
        : problem(401, "unauthorized");
    });
    const pl = createPeerlink({ baseUrl: BASE, auth: "bearer", fetch: s.fetch, sleep });
    await pl.signIn("ann", "pw");
    const me = await pl.ok(pl.api.GET("/v1/auth/me", {}));
    expect(me).toEqual({ subject: "u" });
    expect(s.seen.map((r) => r.path)).toEqual(["/v1/auth/token", "/v1/auth/me", "/v1/auth/token", "/v1/auth/me"]);
  });

  it("browser session: a 401 refreshes with the CSRF cookie, and not at all without a session", async () => {
    let signedIn = false;
    const s = fakeServer((req) => {
      const path = new URL(req.url).pathname;
      if (path === "/v1/session/refresh") {
        signedIn = true;
        return json(200, { csrf_token: "c-3", expires_in: 900, scope: "" });
      }
      return signedIn ? json(200, { subject: "u" }) : problem(401, "unauthorized");
    });
    let jar = "";
    const pl = createPeerlink({ baseUrl: BASE, auth: "cookie", fetch: s.fetch, sleep, cookies: () => jar });
    const err = await pl.ok(pl.api.GET("/v1/auth/me", {})).catch((e) => e);
    expect(err.status).toBe(401);
    expect(s.seen.map((r) => r.path)).toEqual(["/v1/auth/me"]);
    jar = "__Host-peerlink-csrf=c-2";
    expect(await pl.ok(pl.api.GET("/v1/auth/me", {}))).toEqual({ subject: "u" });
    expect(s.seen.map((r) => r.path)).toEqual(["/v1/auth/me", "/v1/auth/me", "/v1/session/refresh", "/v1/auth/me"]);
    expect(s.seen[2].headers.get("X-CSRF-Token")).toBe("c-2");
  });

  it("a failed sign-in is a typed problem with the OAuth error", async () => {
    const s = fakeServer(() => json(400, { type: "x", title: "t", status: 400, detail: "Wrong", code: "invalid_grant", error: "invalid_grant", error_description: "Wrong" }));
    const pl = createPeerlink({ baseUrl: BASE, auth: "bearer", fetch: s.fetch, sleep });
    const err = await pl.signIn("ann", "bad").catch((e) => e);
    expect(err).toBeInstanceOf(ProblemError);
    expect(err.is("invalid_grant")).toBe(true);
  });
});

describe("If-Match and cursors", () => {
  it("re-reads on 412 and writes again on the fresh version", async () => {
    let version = 1;
    const s = fakeServer((req) => {
      if (req.method === "GET") return json(200, { id: "p", version }, { ETag: `"${version}"` });
      if (req.headers.get("If-Match") !== `"${version}"`) {
        version = 2;
        return problem(412, "precondition_failed");
      }
      return json(200, { id: "p", version: version + 1 });
    });
    const pl = createPeerlink({ baseUrl: BASE, auth: "bearer", fetch: s.fetch, sleep });
    let first = true;
    const out = await pl.ifMatch(
      () => pl.withEtag(pl.api.GET("/v1/participants/{participant_id}", { params: { path: { participant_id: "p" } } })),
      (_cur, etag) => pl.ok(pl.api.PATCH("/v1/participants/{participant_id}", {
        params: { path: { participant_id: "p" }, header: { "If-Match": first ? ((first = false), '"0"') : etag } } as never,
        body: {} as never,
      })),
    );
    expect(out).toMatchObject({ version: 3 });
    expect(s.seen.map((r) => r.method)).toEqual(["GET", "PATCH", "GET", "PATCH"]);
  });

  it("iterates every page of a list", async () => {
    const pages: Record<string, unknown> = {
      "": { items: [1, 2], next_cursor: "c2" },
      c2: { items: [3], next_cursor: null },
    };
    const s = fakeServer((req) => json(200, pages[new URL(req.url).searchParams.get("cursor") ?? ""]));
    const pl = createPeerlink({ baseUrl: BASE, auth: "bearer", fetch: s.fetch, sleep });
    const all: unknown[] = [];
    for await (const x of pl.paginate((cursor) => pl.ok(pl.api.GET("/v1/participants", { params: { query: { cursor } } })) as never)) all.push(x);
    expect(all).toEqual([1, 2, 3]);
  });
});

describe("the live stream", () => {
  it("opens with a ticket, delivers typed events, and resumes after the last id with a new ticket", async () => {
    let n = 0;
    const s = fakeServer(() => json(201, { ticket: `t${++n}`, expires_at: "x" }));
    const sources: FakeES[] = [];
    class FakeES implements EventSourceInstance {
      onopen: EventSourceInstance["onopen"] = null;
      onerror: EventSourceInstance["onerror"] = null;
      onmessage: EventSourceInstance["onmessage"] = null;
      listeners: Record<string, (ev: { data: string; lastEventId: string; type: string }) => void> = {};
      closed = false;
      constructor(public url: string) {
        sources.push(this);
      }
      addEventListener(type: string, l: (ev: { data: string; lastEventId: string; type: string }) => void) {
        this.listeners[type] = l;
      }
      close() {
        this.closed = true;
      }
    }
    const pl = createPeerlink({ baseUrl: BASE, auth: "cookie", fetch: s.fetch, sleep, EventSource: FakeES, cookies: () => "" });
    const got: string[] = [];
    const handle = pl.stream({ types: ["escalation.created"], onEvent: (e) => got.push(`${e.id}:${e.type}`) });
    await new Promise((r) => setTimeout(r, 0));
    expect(sources[0].url).toBe(`${BASE}/v1/stream?ticket=t1&types=escalation.created`);
    sources[0].listeners["escalation.created"]({ data: '{"id":"e"}', lastEventId: "41", type: "escalation.created" });
    sources[0].onerror?.({});
    expect(sources[0].closed).toBe(true);
    await new Promise((r) => setTimeout(r, 0));
    await new Promise((r) => setTimeout(r, 0));
    expect(sources[1].url).toBe(`${BASE}/v1/stream?ticket=t2&after=41&types=escalation.created`);
    expect(got).toEqual(["41:escalation.created"]);
    handle.close();
    expect(sources[1].closed).toBe(true);
    expect(s.seen.every((r) => r.path === "/v1/stream/tickets" && r.method === "POST")).toBe(true);
  });
});
