// node_modules/openapi-fetch/dist/index.mjs
var PATH_PARAM_RE = /\{[^{}]+\}/g;
var supportsRequestInitExt = () => {
  return typeof process === "object" && Number.parseInt(process?.versions?.node?.substring(0, 2)) >= 18 && process.versions.undici;
};
function randomID() {
  return Math.random().toString(36).slice(2, 11);
}
function createClient(clientOptions) {
  let {
    baseUrl = "",
    Request: CustomRequest = globalThis.Request,
    fetch: baseFetch = globalThis.fetch,
    querySerializer: globalQuerySerializer,
    bodySerializer: globalBodySerializer,
    pathSerializer: globalPathSerializer,
    headers: baseHeaders,
    requestInitExt = void 0,
    ...baseOptions
  } = { ...clientOptions };
  requestInitExt = supportsRequestInitExt() ? requestInitExt : void 0;
  baseUrl = removeTrailingSlash(baseUrl);
  const globalMiddlewares = [];
  async function coreFetch(schemaPath, fetchOptions) {
    const {
      baseUrl: localBaseUrl,
      fetch = baseFetch,
      Request: Request2 = CustomRequest,
      headers,
      params = {},
      parseAs = "json",
      querySerializer: requestQuerySerializer,
      bodySerializer = globalBodySerializer ?? defaultBodySerializer,
      pathSerializer: requestPathSerializer,
      body,
      middleware: requestMiddlewares = [],
      ...init
    } = fetchOptions || {};
    let finalBaseUrl = baseUrl;
    if (localBaseUrl) {
      finalBaseUrl = removeTrailingSlash(localBaseUrl) ?? baseUrl;
    }
    let querySerializer = typeof globalQuerySerializer === "function" ? globalQuerySerializer : createQuerySerializer(globalQuerySerializer);
    if (requestQuerySerializer) {
      querySerializer = typeof requestQuerySerializer === "function" ? requestQuerySerializer : createQuerySerializer({
        ...typeof globalQuerySerializer === "object" ? globalQuerySerializer : {},
        ...requestQuerySerializer
      });
    }
    const pathSerializer = requestPathSerializer || globalPathSerializer || defaultPathSerializer;
    const serializedBody = body === void 0 ? void 0 : bodySerializer(
      body,
      // Note: we declare mergeHeaders() both here and below because it’s a bit of a chicken-or-egg situation:
      // bodySerializer() needs all headers so we aren’t dropping ones set by the user, however,
      // the result of this ALSO sets the lowest-priority content-type header. So we re-merge below,
      // setting the content-type at the very beginning to be overwritten.
      // Lastly, based on the way headers work, it’s not a simple “present-or-not” check becauase null intentionally un-sets headers.
      mergeHeaders(baseHeaders, headers, params.header)
    );
    const finalHeaders = mergeHeaders(
      // with no body, we should not to set Content-Type
      serializedBody === void 0 || // if serialized body is FormData; browser will correctly set Content-Type & boundary expression
      serializedBody instanceof FormData ? {} : {
        "Content-Type": "application/json"
      },
      baseHeaders,
      headers,
      params.header
    );
    const finalMiddlewares = [...globalMiddlewares, ...requestMiddlewares];
    const requestInit = {
      redirect: "follow",
      ...baseOptions,
      ...init,
      body: serializedBody,
      headers: finalHeaders
    };
    let id;
    let options;
    let request = new Request2(
      createFinalURL(schemaPath, { baseUrl: finalBaseUrl, params, querySerializer, pathSerializer }),
      requestInit
    );
    let response;
    for (const key in init) {
      if (!(key in request)) {
        request[key] = init[key];
      }
    }
    if (finalMiddlewares.length) {
      id = randomID();
      options = Object.freeze({
        baseUrl: finalBaseUrl,
        fetch,
        parseAs,
        querySerializer,
        bodySerializer,
        pathSerializer
      });
      for (const m of finalMiddlewares) {
        if (m && typeof m === "object" && typeof m.onRequest === "function") {
          const result = await m.onRequest({
            request,
            schemaPath,
            params,
            options,
            id
          });
          if (result) {
            if (result instanceof Request2) {
              request = result;
            } else if (result instanceof Response) {
              response = result;
              break;
            } else {
              throw new Error("onRequest: must return new Request() or Response() when modifying the request");
            }
          }
        }
      }
    }
    if (!response) {
      try {
        response = await fetch(request, requestInitExt);
      } catch (error2) {
        let errorAfterMiddleware = error2;
        if (finalMiddlewares.length) {
          for (let i = finalMiddlewares.length - 1; i >= 0; i--) {
            const m = finalMiddlewares[i];
            if (m && typeof m === "object" && typeof m.onError === "function") {
              const result = await m.onError({
                request,
                error: errorAfterMiddleware,
                schemaPath,
                params,
                options,
                id
              });
              if (result) {
                if (result instanceof Response) {
                  errorAfterMiddleware = void 0;
                  response = result;
                  break;
                }
                if (result instanceof Error) {
                  errorAfterMiddleware = result;
                  continue;
                }
                throw new Error("onError: must return new Response() or instance of Error");
              }
            }
          }
        }
        if (errorAfterMiddleware) {
          throw errorAfterMiddleware;
        }
      }
      if (finalMiddlewares.length) {
        for (let i = finalMiddlewares.length - 1; i >= 0; i--) {
          const m = finalMiddlewares[i];
          if (m && typeof m === "object" && typeof m.onResponse === "function") {
            const result = await m.onResponse({
              request,
              response,
              schemaPath,
              params,
              options,
              id
            });
            if (result) {
              if (!(result instanceof Response)) {
                throw new Error("onResponse: must return new Response() when modifying the response");
              }
              response = result;
            }
          }
        }
      }
    }
    const contentLength = response.headers.get("Content-Length");
    if (response.status === 204 || request.method === "HEAD" || contentLength === "0" && !response.headers.get("Transfer-Encoding")?.includes("chunked")) {
      return response.ok ? { data: void 0, response } : { error: void 0, response };
    }
    if (response.ok) {
      const getResponseData = async () => {
        if (parseAs === "stream") {
          return response.body;
        }
        if (parseAs === "json" && !contentLength) {
          const raw = await response.text();
          return raw ? JSON.parse(raw) : void 0;
        }
        return await response[parseAs]();
      };
      return { data: await getResponseData(), response };
    }
    let error = await response.text();
    try {
      error = JSON.parse(error);
    } catch {
    }
    return { error, response };
  }
  return {
    request(method, url, init) {
      return coreFetch(url, { ...init, method: method.toUpperCase() });
    },
    /** Call a GET endpoint */
    GET(url, init) {
      return coreFetch(url, { ...init, method: "GET" });
    },
    /** Call a PUT endpoint */
    PUT(url, init) {
      return coreFetch(url, { ...init, method: "PUT" });
    },
    /** Call a POST endpoint */
    POST(url, init) {
      return coreFetch(url, { ...init, method: "POST" });
    },
    /** Call a DELETE endpoint */
    DELETE(url, init) {
      return coreFetch(url, { ...init, method: "DELETE" });
    },
    /** Call a OPTIONS endpoint */
    OPTIONS(url, init) {
      return coreFetch(url, { ...init, method: "OPTIONS" });
    },
    /** Call a HEAD endpoint */
    HEAD(url, init) {
      return coreFetch(url, { ...init, method: "HEAD" });
    },
    /** Call a PATCH endpoint */
    PATCH(url, init) {
      return coreFetch(url, { ...init, method: "PATCH" });
    },
    /** Call a TRACE endpoint */
    TRACE(url, init) {
      return coreFetch(url, { ...init, method: "TRACE" });
    },
    /** Register middleware */
    use(...middleware) {
      for (const m of middleware) {
        if (!m) {
          continue;
        }
        if (typeof m !== "object" || !("onRequest" in m || "onResponse" in m || "onError" in m)) {
          throw new Error("Middleware must be an object with one of `onRequest()`, `onResponse() or `onError()`");
        }
        globalMiddlewares.push(m);
      }
    },
    /** Unregister middleware */
    eject(...middleware) {
      for (const m of middleware) {
        const i = globalMiddlewares.indexOf(m);
        if (i !== -1) {
          globalMiddlewares.splice(i, 1);
        }
      }
    }
  };
}
function serializePrimitiveParam(name, value, options) {
  if (value === void 0 || value === null) {
    return "";
  }
  if (typeof value === "object") {
    throw new Error(
      "Deeply-nested arrays/objects aren\u2019t supported. Provide your own `querySerializer()` to handle these."
    );
  }
  return `${name}=${options?.allowReserved === true ? value : encodeURIComponent(value)}`;
}
function serializeObjectParam(name, value, options) {
  if (!value || typeof value !== "object") {
    return "";
  }
  const values = [];
  const joiner = {
    simple: ",",
    label: ".",
    matrix: ";"
  }[options.style] || "&";
  if (options.style !== "deepObject" && options.explode === false) {
    for (const k in value) {
      values.push(k, options.allowReserved === true ? value[k] : encodeURIComponent(value[k]));
    }
    const final2 = values.join(",");
    switch (options.style) {
      case "form": {
        return `${name}=${final2}`;
      }
      case "label": {
        return `.${final2}`;
      }
      case "matrix": {
        return `;${name}=${final2}`;
      }
      default: {
        return final2;
      }
    }
  }
  for (const k in value) {
    const finalName = options.style === "deepObject" ? `${name}[${k}]` : k;
    values.push(serializePrimitiveParam(finalName, value[k], options));
  }
  const final = values.join(joiner);
  return options.style === "label" || options.style === "matrix" ? `${joiner}${final}` : final;
}
function serializeArrayParam(name, value, options) {
  if (!Array.isArray(value)) {
    return "";
  }
  if (options.explode === false) {
    const joiner2 = { form: ",", spaceDelimited: "%20", pipeDelimited: "|" }[options.style] || ",";
    const final = (options.allowReserved === true ? value : value.map((v) => encodeURIComponent(v))).join(joiner2);
    switch (options.style) {
      case "simple": {
        return final;
      }
      case "label": {
        return `.${final}`;
      }
      case "matrix": {
        return `;${name}=${final}`;
      }
      // case "spaceDelimited":
      // case "pipeDelimited":
      default: {
        return `${name}=${final}`;
      }
    }
  }
  const joiner = { simple: ",", label: ".", matrix: ";" }[options.style] || "&";
  const values = [];
  for (const v of value) {
    if (options.style === "simple" || options.style === "label") {
      values.push(options.allowReserved === true ? v : encodeURIComponent(v));
    } else {
      values.push(serializePrimitiveParam(name, v, options));
    }
  }
  return options.style === "label" || options.style === "matrix" ? `${joiner}${values.join(joiner)}` : values.join(joiner);
}
function createQuerySerializer(options) {
  return function querySerializer(queryParams) {
    const search = [];
    if (queryParams && typeof queryParams === "object") {
      for (const name in queryParams) {
        const value = queryParams[name];
        if (value === void 0 || value === null) {
          continue;
        }
        if (Array.isArray(value)) {
          if (value.length === 0) {
            continue;
          }
          search.push(
            serializeArrayParam(name, value, {
              style: "form",
              explode: true,
              ...options?.array,
              allowReserved: options?.allowReserved || false
            })
          );
          continue;
        }
        if (typeof value === "object") {
          search.push(
            serializeObjectParam(name, value, {
              style: "deepObject",
              explode: true,
              ...options?.object,
              allowReserved: options?.allowReserved || false
            })
          );
          continue;
        }
        search.push(serializePrimitiveParam(name, value, options));
      }
    }
    return search.join("&");
  };
}
function defaultPathSerializer(pathname, pathParams) {
  let nextURL = pathname;
  for (const match of pathname.match(PATH_PARAM_RE) ?? []) {
    let name = match.substring(1, match.length - 1);
    let explode = false;
    let style = "simple";
    if (name.endsWith("*")) {
      explode = true;
      name = name.substring(0, name.length - 1);
    }
    if (name.startsWith(".")) {
      style = "label";
      name = name.substring(1);
    } else if (name.startsWith(";")) {
      style = "matrix";
      name = name.substring(1);
    }
    if (!pathParams || pathParams[name] === void 0 || pathParams[name] === null) {
      continue;
    }
    const value = pathParams[name];
    if (Array.isArray(value)) {
      nextURL = nextURL.replace(match, serializeArrayParam(name, value, { style, explode }));
      continue;
    }
    if (typeof value === "object") {
      nextURL = nextURL.replace(match, serializeObjectParam(name, value, { style, explode }));
      continue;
    }
    if (style === "matrix") {
      nextURL = nextURL.replace(match, `;${serializePrimitiveParam(name, value)}`);
      continue;
    }
    nextURL = nextURL.replace(match, style === "label" ? `.${encodeURIComponent(value)}` : encodeURIComponent(value));
  }
  return nextURL;
}
function defaultBodySerializer(body, headers) {
  if (body instanceof FormData) {
    return body;
  }
  if (headers) {
    const contentType = headers.get instanceof Function ? headers.get("Content-Type") ?? headers.get("content-type") : headers["Content-Type"] ?? headers["content-type"];
    if (contentType === "application/x-www-form-urlencoded") {
      return new URLSearchParams(body).toString();
    }
  }
  return JSON.stringify(body);
}
function createFinalURL(pathname, options) {
  let finalURL = `${options.baseUrl}${pathname}`;
  if (options.params?.path) {
    finalURL = options.pathSerializer(finalURL, options.params.path);
  }
  let search = options.querySerializer(options.params.query ?? {});
  if (search.startsWith("?")) {
    search = search.substring(1);
  }
  if (search) {
    finalURL += `?${search}`;
  }
  return finalURL;
}
function mergeHeaders(...allHeaders) {
  const finalHeaders = new Headers();
  for (const h of allHeaders) {
    if (!h || typeof h !== "object") {
      continue;
    }
    const iterator = h instanceof Headers ? h.entries() : Object.entries(h);
    for (const [k, v] of iterator) {
      if (v === null) {
        finalHeaders.delete(k);
      } else if (Array.isArray(v)) {
        for (const v2 of v) {
          finalHeaders.append(k, v2);
        }
      } else if (v !== void 0) {
        finalHeaders.set(k, v);
      }
    }
  }
  return finalHeaders;
}
function removeTrailingSlash(url) {
  if (url.endsWith("/")) {
    return url.substring(0, url.length - 1);
  }
  return url;
}

// src/problems.ts
var PROBLEM_CODES = [
  "bad_request",
  "validation_error",
  "unauthorized",
  "forbidden",
  "insufficient_scope",
  "csrf_failed",
  "not_found",
  "conflict",
  "precondition_failed",
  "version_mismatch",
  "rule_violation",
  "too_many_requests",
  "rate_limited",
  "login_throttled",
  "payload_too_large",
  "unsupported_media_type",
  "invalid_cursor",
  "invalid_request",
  "invalid_grant",
  "invalid_client",
  "invalid_scope",
  "unsupported_grant_type",
  "idempotency_key_missing",
  "idempotency_key_reused",
  "idempotency_key_in_flight",
  "idempotency_outcome_unknown",
  "invalid_stream_ticket",
  "invalid_transition",
  "transition_not_allowed",
  "assignee_not_eligible",
  "clinician_required",
  "follow_up_required",
  "observed_before_raise",
  "observed_in_future",
  "place_required",
  "unknown_facility",
  "unknown_housing_unit",
  "unknown_participant",
  "unknown_topic",
  "participant_not_supporter",
  "participant_not_allowed",
  "participant_archived",
  "participant_merged",
  "pairing_not_active",
  "keep_apart_exists",
  "network_mismatch",
  "network_not_allowed",
  "network_required",
  "session_not_held",
  "not_an_attendee",
  "not_your_page",
  "external_id_taken",
  "username_taken",
  "too_many_rows"
];
var ProblemError = class extends Error {
  status;
  code;
  problem;
  requestId;
  retryAfter;
  constructor(problem, response) {
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
  is(...codes) {
    return codes.includes(this.code);
  }
  /** The field errors of a 422, by field name. */
  get fieldErrors() {
    const out = {};
    for (const e of this.problem.errors ?? []) out[e.field] = e.message;
    return out;
  }
};
async function problemOf(response, body) {
  let parsed = body;
  if (parsed === void 0) {
    try {
      parsed = await response.clone().json();
    } catch {
      parsed = void 0;
    }
  }
  const p = parsed ?? {};
  const problem = {
    type: p.type ?? "about:blank",
    title: p.title ?? response.statusText ?? "Error",
    status: p.status ?? response.status,
    detail: p.detail ?? p.error_description ?? `HTTP ${response.status}`,
    code: p.code ?? p.error ?? `http_${response.status}`,
    request_id: p.request_id ?? null,
    errors: p.errors ?? null,
    ...p.error ? { error: p.error, error_description: p.error_description } : {}
  };
  return new ProblemError(problem, response);
}

// src/index.ts
var CSRF_COOKIE = "__Host-peerlink-csrf";
var UNSAFE = /* @__PURE__ */ new Set(["POST", "PUT", "PATCH", "DELETE"]);
var NO_REFRESH = ["/v1/session", "/v1/auth/token", "/v1/auth/revoke"];
var defaultSleep = (ms) => new Promise((r) => setTimeout(r, ms));
var defaultKey = () => globalThis.crypto.randomUUID();
function retryAfterSeconds(value, now = Date.now()) {
  if (!value) return 1;
  const n = Number(value);
  if (Number.isFinite(n)) return Math.max(0, n);
  const at = Date.parse(value);
  return Number.isNaN(at) ? 1 : Math.max(0, (at - now) / 1e3);
}
function readCookie(all, name) {
  for (const part of all.split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k === name) return decodeURIComponent(v.join("="));
  }
  return null;
}
function createPeerlink(options = {}) {
  const baseUrl = options.baseUrl ?? "";
  const auth = options.auth ?? (typeof document !== "undefined" ? "cookie" : "bearer");
  const baseFetch = options.fetch ?? ((r) => globalThis.fetch(r));
  const sleep = options.sleep ?? defaultSleep;
  const newKey = options.newKey ?? defaultKey;
  const maxRetries = options.maxRetries ?? 3;
  const maxRetryAfter = options.maxRetryAfter ?? 30;
  const cookies = options.cookies ?? (() => typeof document !== "undefined" ? document.cookie : "");
  const tokens = {};
  let refreshing = null;
  function csrf() {
    return readCookie(cookies(), CSRF_COOKIE) ?? tokens.csrf;
  }
  function decorate(request) {
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
  async function send(input) {
    let base = input;
    if (base.method === "POST" && !base.headers.has("Idempotency-Key")) {
      const headers = new Headers(base.headers);
      headers.set("Idempotency-Key", newKey());
      base = new Request(base, { headers });
    }
    const body = UNSAFE.has(base.method) ? await base.clone().arrayBuffer() : void 0;
    let retries = 0;
    let refreshed = false;
    for (; ; ) {
      const attempt = decorate(new Request(base, body !== void 0 ? { body } : {}));
      const response = await baseFetch(attempt);
      if (response.status === 429 && retries < maxRetries) {
        const wait = retryAfterSeconds(response.headers.get("Retry-After"));
        if (wait <= maxRetryAfter) {
          retries += 1;
          await sleep(wait * 1e3);
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
  const api = createClient({
    baseUrl,
    fetch: send,
    credentials: "same-origin"
  });
  async function form(path, fields) {
    return send(new Request(baseUrl + path, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams(fields).toString()
    }));
  }
  async function signIn(username, password, scope) {
    if (auth === "cookie") {
      const r2 = await api.POST("/v1/session", { body: { username, password, scope: scope ?? null } });
      if (!r2.data) throw await problemOf(r2.response, r2.error);
      tokens.csrf = r2.data.csrf_token;
      return;
    }
    const r = await form("/v1/auth/token", {
      grant_type: "password",
      username,
      password,
      ...scope ? { scope } : {}
    });
    if (!r.ok) throw await problemOf(r);
    const t = await r.json();
    tokens.access = t.access_token;
    tokens.refresh = t.refresh_token ?? void 0;
  }
  function useTokens(access, refresh2) {
    tokens.access = access;
    tokens.refresh = refresh2;
  }
  function refresh() {
    if (!refreshing) refreshing = rotate().finally(() => {
      refreshing = null;
    });
    return refreshing;
  }
  async function rotate() {
    if (auth === "cookie") {
      if (!csrf()) return false;
      const r2 = await api.POST("/v1/session/refresh", {});
      if (!r2.data) return false;
      tokens.csrf = r2.data.csrf_token;
      return true;
    }
    if (!tokens.refresh) return false;
    const r = await form("/v1/auth/token", { grant_type: "refresh_token", refresh_token: tokens.refresh });
    if (!r.ok) return false;
    const t = await r.json();
    tokens.access = t.access_token;
    tokens.refresh = t.refresh_token ?? void 0;
    return true;
  }
  async function signOut() {
    if (auth === "cookie") {
      await api.POST("/v1/session/logout", {});
    } else {
      for (const token of [tokens.refresh, tokens.access]) {
        if (token) await form("/v1/auth/revoke", { token });
      }
    }
    tokens.access = tokens.refresh = tokens.csrf = void 0;
  }
  async function ok(call) {
    const r = await call;
    if (r.response.ok && r.data !== void 0) return r.data;
    if (r.response.ok) return void 0;
    throw await problemOf(r.response, r.error);
  }
  async function withEtag(call) {
    const r = await call;
    if (!r.response.ok || r.data === void 0) throw await problemOf(r.response, r.error);
    return { value: r.data, etag: r.response.headers.get("ETag") ?? "" };
  }
  async function ifMatch(read, write, attempts = 3) {
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
  async function* paginate(page) {
    let cursor;
    do {
      const p = await page(cursor);
      yield* p.items;
      cursor = p.next_cursor ?? void 0;
    } while (cursor);
  }
  async function ticket() {
    const t = await ok(api.POST("/v1/stream/tickets", {}));
    return t.ticket;
  }
  function stream(opts) {
    const ES = options.EventSource ?? globalThis.EventSource;
    if (!ES) throw new Error("No EventSource here: pass options.EventSource");
    let last = opts.after;
    let source = null;
    let closed = false;
    let delay = 500;
    const deliver = (ev) => {
      if (ev.lastEventId) last = ev.lastEventId;
      let data;
      try {
        data = JSON.parse(ev.data);
      } catch {
        return;
      }
      opts.onEvent({ id: ev.lastEventId, type: ev.type, data });
    };
    const open = async () => {
      if (closed) return;
      let t;
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
        delay = Math.min(delay * 2, 15e3);
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
        delay = Math.min(delay * 2, 15e3);
      };
    };
    void open();
    return {
      close() {
        closed = true;
        source?.close();
        opts.onState?.("closed");
      }
    };
  }
  return { api, ok, withEtag, ifMatch, paginate, signIn, useTokens, refresh, signOut, stream, ticket, newKey };
}
export {
  CSRF_COOKIE,
  PROBLEM_CODES,
  ProblemError,
  createPeerlink,
  problemOf,
  retryAfterSeconds
};
