"use strict";
// Herald's dashboard: one page, a view per hash route, each reading the
// ordinary /v1 API. Every value reaches the page through textContent or
// an attribute, never as markup.
(function () {
  const Charts = window.HeraldCharts;
  const meta = (name) => (document.querySelector(`meta[name="${name}"]`) || {}).content || "";
  const AUTH = meta("herald-auth");
  const CSRF = meta("herald-csrf");
  const main = document.getElementById("main");
  let cleanups = [];

  // ---- building the DOM, formatting values ------------------------------

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "class") node.className = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const fmt = {
    n: (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString()),
    pct: (v) => (v === null || v === undefined ? "–" : (v * 100).toFixed(v < 0.01 && v > 0 ? 2 : 1) + "%"),
    ms: (v) => (v === null || v === undefined ? "–" : v + " ms"),
    bytes: (v) => {
      if (v === null || v === undefined) return "–";
      const units = ["B", "KiB", "MiB", "GiB", "TiB"];
      let i = 0;
      while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
      return (i ? v.toFixed(1) : v) + " " + units[i];
    },
    time: (iso) => (iso ? new Date(iso).toLocaleString() : "–"),
    duration: (ms) => {
      if (ms === null || ms === undefined) return "–";
      const s = Math.round(ms / 1000);
      if (s < 60) return s + " s";
      if (s < 3600) return Math.round(s / 60) + " min";
      if (s < 86400) return (s / 3600).toFixed(1) + " h";
      return (s / 86400).toFixed(1) + " d";
    },
  };

  function badge(text, kind) {
    return h("span", { class: "badge " + (kind || "") }, text);
  }

  function statusBadge(status) {
    const kinds = { succeeded: "ok", sent: "ok", pending: "warn", queued: "warn", deferred: "warn", failed: "bad", bounced: "bad" };
    return badge(status, kinds[status] || "");
  }

  function kv(pairs) {
    return h("dl", { class: "kv" }, pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v === null || v === undefined ? "–" : v)]));
  }

  function table(headers, rows, onClick) {
    return h("div", { class: "table-wrap" },
      h("table", {},
        h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
        h("tbody", {}, rows.length
          ? rows.map((r) => h("tr", { class: onClick ? "clickable" : null, onclick: onClick ? () => onClick(r.key) : null }, r.cells.map((c) => h("td", {}, c))))
          : h("tr", {}, h("td", { colspan: headers.length, class: "muted" }, "Nothing here.")))));
  }

  function notice(text, bad) {
    return h("p", { class: "notice" + (bad ? " bad" : ""), role: bad ? "alert" : "status" }, text);
  }

  function pre(value) {
    return h("pre", {}, typeof value === "string" ? value : JSON.stringify(value, null, 2));
  }

  function link(href, text) {
    return h("a", { href }, text);
  }

  // A datetime-local value (local time) as RFC 3339, or "" when empty.
  function rfc3339(local) {
    if (!local) return "";
    const d = new Date(local);
    return isNaN(d) ? "" : d.toISOString();
  }

  // ---- the API ----------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.error && body.error.message) || "HTTP " + status);
      this.status = status;
      this.code = body && body.error && body.error.code;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (CSRF) headers["X-CSRF-Token"] = CSRF;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (resp.status === 401 && AUTH === "session") {
      // The session ended (expiry, restart, revoked key): back to sign-in.
      location.reload();
      throw new ApiError(401, null);
    }
    const text = await resp.text();
    let parsed = null;
    if (text) {
      try { parsed = JSON.parse(text); } catch (_) { parsed = text; }
    }
    if (!resp.ok) throw new ApiError(resp.status, parsed);
    return parsed;
  }

  const get = (path) => api("GET", path);
  const post = (path, body) => api("POST", path, body === undefined ? {} : body);

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) q.set(k, v);
    const s = q.toString();
    return s ? "?" + s : "";
  }

  // Runs `action` from a button, showing its outcome in `out`.
  async function act(button, out, action) {
    button.disabled = true;
    out.replaceChildren();
    try {
      const result = await action();
      if (result instanceof Node) out.appendChild(result);
    } catch (e) {
      out.appendChild(notice(e.message, true));
    } finally {
      button.disabled = false;
    }
  }

  function every(ms, fn) {
    const id = setInterval(fn, ms);
    cleanups.push(() => clearInterval(id));
  }

  // ---- views ------------------------------------------------------------

  const views = {};

  views.overview = async function (root) {
    const body = h("div", { class: "stack" });
    root.append(h("h1", {}, "Overview"), body);
    async function draw() {
      const o = await get("/v1/admin/overview");
      body.replaceChildren(...overviewCards(o));
    }
    await draw();
    every(10000, () => draw().catch(() => {}));
  };

  function overviewCards(o) {
    const ms = (iso) => new Date(iso).getTime();
    const epm = o.events_per_minute;
    const total = epm.reduce((a, p) => a + p.count, 0);
    const per = o.deliveries.per_minute;
    const hour = o.deliveries.last_hour;
    const card = (title, figure, ...rest) => h("section", { class: "card" },
      h("div", { class: "spread" }, h("h2", {}, title), figure ? h("span", { class: "figure" }, figure) : null), ...rest);

    const events = card("Events per minute", fmt.n(total), h("p", { class: "muted" }, "received in the last hour"),
      Charts.bars({ label: "Events per minute, last hour", points: epm.map((p) => [ms(p.at), p.count]), color: "var(--c1)", name: "events" }));
    const success = card("Delivery success rate", fmt.pct(hour.success_rate),
      h("p", { class: "muted" }, fmt.n(hour.attempts) + " attempts in the last hour"),
      Charts.line({
        label: "Delivery success rate per minute", yMax: 1, yFormat: (v) => Math.round(v * 100) + "%",
        series: [{ name: "success rate", color: "var(--ok)", points: per.map((p) => [ms(p.at), p.success_rate]) }],
        empty: "no attempts in the last hour",
      }));
    const latency = card("Delivery latency", hour.latency_ms.p50 === null ? "" : "p50 " + fmt.ms(hour.latency_ms.p50),
      h("p", { class: "muted" }, "p95 " + fmt.ms(hour.latency_ms.p95) + " · p99 " + fmt.ms(hour.latency_ms.p99) + " over the hour"),
      Charts.line({
        label: "Delivery latency percentiles per minute", yFormat: (v) => Math.round(v) + " ms",
        series: [
          { name: "p50", color: "var(--c1)", points: per.map((p) => [ms(p.at), p.latency_ms.p50]) },
          { name: "p95", color: "var(--c2)", points: per.map((p) => [ms(p.at), p.latency_ms.p95]) },
          { name: "p99", color: "var(--c3)", points: per.map((p) => [ms(p.at), p.latency_ms.p99]) },
        ],
        empty: "no attempts in the last hour",
      }));
    const q = o.queues;
    const depth = (x) => fmt.n(x.depth) + (x.depth_capped ? "+" : "");
    const lag = (x) => (x.oldest_due_at ? (x.oldest_due_lag_ms > 0 ? fmt.duration(x.oldest_due_lag_ms) + " overdue" : "next due " + fmt.time(x.oldest_due_at)) : "empty");
    const queues = card("Queues", null,
      h("div", { class: "grid" },
        h("div", {}, h("div", { class: "muted" }, "Webhook deliveries"), h("div", { class: "figure", "data-queue": "webhooks" }, depth(q.webhooks)), h("div", { class: "muted" }, "oldest: " + lag(q.webhooks))),
        h("div", {}, h("div", { class: "muted" }, "Mail messages"), h("div", { class: "figure", "data-queue": "mail" }, depth(q.mail)), h("div", { class: "muted" }, "oldest: " + lag(q.mail)))),
      Charts.line({
        label: "Queue depth while this dashboard was open",
        series: [
          { name: "webhooks", color: "var(--c1)", points: o.history.map((s) => [ms(s.at), s.webhooks_depth]) },
          { name: "mail", color: "var(--c4)", points: o.history.map((s) => [ms(s.at), s.mail_depth]) },
        ],
      }),
      h("p", { class: "muted" }, "Depth is sampled while a dashboard is open."));

    const t = o.stream_thresholds;
    const mail = card("Mail by stream", null,
      h("p", { class: "muted" }, "Last 24 hours; deferred and queued are the messages waiting now."),
      h("div", { class: "grid" }, h("div", {}, Charts.groups({
        label: "Mail sent, deferred, bounced and complained per stream",
        groups: o.streams.map((s) => ({
          label: s.stream,
          values: [
            { name: "sent", value: s.window_24h.sent, color: "var(--c1)" },
            { name: "deferred", value: s.deferred.count, color: "var(--c2)" },
            { name: "bounced", value: s.window_24h.hard_bounces, color: "var(--c3)" },
            { name: "complained", value: s.window_24h.complaints, color: "var(--c4)" },
          ],
        })),
      })),
      h("div", {}, ...o.streams.map((s) => h("div", {},
        h("h3", {}, s.stream, " ", s.paused ? badge("paused", "bad") : s.warning ? badge("warning", "warn") : badge("healthy", "ok")),
        h("div", { class: "muted" }, "bounce rate " + fmt.pct(s.window_24h.bounce_rate)),
        Charts.gauge({
          label: "Bounce rate of " + s.stream, value: s.window_24h.bounce_rate,
          marks: [{ value: t.bounce_warn_rate, label: "warn " + fmt.pct(t.bounce_warn_rate), color: "var(--warn)" },
            { value: t.bounce_pause_rate, label: "pause " + fmt.pct(t.bounce_pause_rate), color: "var(--bad)" }],
        }),
        h("div", { class: "muted" }, "complaint rate " + fmt.pct(s.window_24h.complaint_rate)),
        Charts.gauge({
          label: "Complaint rate of " + s.stream, value: s.window_24h.complaint_rate,
          marks: [{ value: t.complaint_warn_rate, label: "warn " + fmt.pct(t.complaint_warn_rate), color: "var(--warn)" },
            { value: t.complaint_pause_rate, label: "pause " + fmt.pct(t.complaint_pause_rate), color: "var(--bad)" }],
        }))))),
      h("p", { class: "muted" }, `Rates are judged once a window holds ${t.min_sends} messages.`));
    return [h("div", { class: "grid" }, events, success, latency, queues), mail];
  }

  views.events = async function (root) {
    const f = {
      type: h("input", { name: "type", placeholder: "invoice.paid" }),
      tenant: h("input", { name: "tenant", placeholder: "acme" }),
      user: h("input", { name: "user", placeholder: "tracked user id" }),
      since: h("input", { name: "since", type: "datetime-local" }),
      until: h("input", { name: "until", type: "datetime-local" }),
    };
    const live = h("button", { type: "button", class: "secondary" }, "Live tail");
    const out = h("div");
    const status = h("p", { class: "muted" });
    const form = h("form", { class: "filters" },
      Object.entries(f).map(([k, input]) => h("label", {}, k, input)),
      h("button", { type: "submit" }, "Search"), live);
    root.append(h("h1", {}, "Events"), form, status, out);

    let rows = [];
    let tail = null;
    let timer = null;
    const MAX_ROWS = 200;

    function render() {
      out.replaceChildren(table(["seq", "received", "type", "tenant", "source", "id"],
        rows.map((e) => ({ key: e, cells: [e.seq, fmt.time(e.received_at), e.type, e.tenant || "–", e.source, h("span", { class: "mono" }, e.id)] })),
        (e) => { out.insertBefore(h("div", { class: "card" }, h("h3", {}, e.id), pre(e.data)), out.firstChild); }));
    }

    function filterParams() {
      return { type: f.type.value.trim(), tenant: f.tenant.value.trim(), since: rfc3339(f.since.value), until: rfc3339(f.until.value) };
    }

    async function search(e) {
      if (e) e.preventDefault();
      stopTail();
      status.textContent = "Searching…";
      try {
        const user = f.user.value.trim();
        let page;
        if (user) {
          const params = { tenant: f.tenant.value.trim(), limit: 100 };
          page = await get("/v1/users/" + encodeURIComponent(user) + "/events" + query(params));
        } else {
          page = await get("/v1/events" + query({ ...filterParams(), limit: 100 }));
        }
        rows = page.events || [];
        status.textContent = rows.length + " events" + (page.next_cursor ? " (first page)" : "");
        render();
      } catch (err) {
        status.textContent = "";
        out.replaceChildren(notice(err.message, true));
      }
    }

    function stopTail() {
      if (timer) clearInterval(timer);
      timer = null;
      live.textContent = "Live tail";
    }

    async function poll() {
      // A few pages a round at most, so a burst cannot stall the page.
      for (let i = 0; i < 5; i++) {
        // The first read starts a minute back, found by the log's time search.
        const start = tail ? { after: tail } : { since: new Date(Date.now() - 60000).toISOString() };
        const page = await get("/v1/events" + query({ type: f.type.value.trim(), tenant: f.tenant.value.trim(), ...start, limit: 500 }));
        tail = page.tail_cursor;
        rows = page.events.slice().reverse().concat(rows).slice(0, MAX_ROWS);
        if (!page.next_cursor) break;
      }
      status.textContent = "Following the log (newest first, last " + MAX_ROWS + " kept) · " + new Date().toLocaleTimeString();
      render();
    }

    async function startTail() {
      status.textContent = "Starting the tail…";
      tail = null;
      rows = [];
      live.textContent = "Stop tail";
      await poll();
      timer = setInterval(() => poll().catch((e) => { status.textContent = e.message; }), 2000);
    }

    form.addEventListener("submit", search);
    live.addEventListener("click", () => (timer ? stopTail() : startTail().catch((e) => { status.textContent = e.message; })));
    cleanups.push(stopTail);
    await search();
  };

  views.endpoints = async function (root) {
    const list = h("div", { class: "stack" });
    root.append(h("h1", {}, "Endpoints"), list);
    const { endpoints } = await get("/v1/endpoints");
    if (!endpoints.length) list.append(notice("No endpoint is registered."));
    for (const ep of endpoints) list.append(endpointCard(ep));
  };

  function endpointCard(ep) {
    const health = h("div", {}, h("p", { class: "muted" }, "Loading health…"));
    const failures = h("div");
    const out = h("div");
    const card = h("section", { class: "card", "data-endpoint": ep.id },
      h("div", { class: "spread" }, h("h2", { class: "mono" }, ep.url), ep.enabled ? badge("enabled", "ok") : badge("disabled" + (ep.disabled_reason ? ": " + ep.disabled_reason : ""), "bad")),
      kv([["id", h("span", { class: "mono" }, ep.id)], ["tenant", ep.tenant], ["event types", ep.event_types.length ? ep.event_types.join(", ") : "all"], ["sources", ep.sources.join(", ")], ["description", ep.description]]),
      health, failures);
    const toggle = h("button", { type: "button", class: "secondary" }, ep.enabled ? "Disable" : "Enable");
    toggle.addEventListener("click", () => act(toggle, out, async () => {
      const updated = await post(`/v1/endpoints/${encodeURIComponent(ep.id)}/${ep.enabled ? "disable" : "enable"}`);
      card.replaceWith(endpointCard(updated));
    }));
    const rotate = h("button", { type: "button", class: "secondary" }, "Rotate secret");
    rotate.addEventListener("click", () => {
      if (!confirm("Issue a new signing secret? The old one keeps signing for 24 hours.")) return;
      act(rotate, out, async () => {
        const r = await post(`/v1/endpoints/${encodeURIComponent(ep.id)}/rotate-secret`, { grace_secs: 86400 });
        return h("div", { class: "notice" }, "New secret (shown once here): ", h("code", {}, r.secret));
      });
    });
    const test = h("button", { type: "button", class: "secondary" }, "Send a test");
    test.addEventListener("click", () => act(test, out, async () => {
      const r = await post(`/v1/endpoints/${encodeURIComponent(ep.id)}/test`);
      const ok = r.status_code >= 200 && r.status_code < 300;
      return h("div", { class: "notice" + (ok ? "" : " bad") },
        kv([["status", String(r.status_code)], ["latency", fmt.ms(r.latency_ms)], ["error", r.error], ["response", r.response ? pre(r.response) : null]]));
    }));
    card.append(h("div", { class: "row" }, toggle, rotate, test, link("#/dead-letters?endpoint=" + encodeURIComponent(ep.id), "Dead letters")), out);

    get(`/v1/endpoints/${encodeURIComponent(ep.id)}/stats`).then((s) => {
      const hr = s.last_hour;
      const rate = hr.attempts ? hr.succeeded / hr.attempts : null;
      health.replaceChildren(h("div", { class: "grid three" },
        h("div", {}, h("div", { class: "muted" }, "success, last hour"), h("div", { class: "figure" }, fmt.pct(rate), h("small", {}, " of " + fmt.n(hr.attempts)))),
        h("div", {}, h("div", { class: "muted" }, "latency p50 / p95 / p99"), h("div", {}, `${fmt.ms(hr.latency_ms.p50)} / ${fmt.ms(hr.latency_ms.p95)} / ${fmt.ms(hr.latency_ms.p99)}`)),
        h("div", {}, h("div", { class: "muted" }, "deliveries"), h("div", {}, `${fmt.n(s.deliveries.pending)} pending · ${fmt.n(s.deliveries.succeeded)} ok · ${fmt.n(s.deliveries.failed)} failed`))));
    }).catch((e) => health.replaceChildren(notice(e.message, true)));

    get(`/v1/deliveries${query({ endpoint: ep.id, status: "failed", limit: 5 })}`).then((page) => {
      if (!page.deliveries.length) return;
      failures.replaceChildren(h("h3", {}, "Failed deliveries"), table(["delivery", "event", "last answer", "when"],
        page.deliveries.map((d) => {
          const last = d.attempts[d.attempts.length - 1] || {};
          return { key: d.id, cells: [link("#/deliveries/" + encodeURIComponent(d.id), d.id), d.event_type, last.status_code ? String(last.status_code) : (last.error_kind || last.error || "–"), fmt.time(last.at)] };
        })));
    }).catch(() => {});
    return card;
  }

  views.delivery = async function (root, id) {
    const body = h("div", { class: "stack" });
    root.append(h("h1", {}, "Delivery ", h("span", { class: "mono" }, id)), body);
    async function draw(d) {
      const out = h("div");
      const retry = h("button", { type: "button" }, "Retry now");
      retry.addEventListener("click", () => act(retry, out, async () => {
        await post(`/v1/deliveries/${encodeURIComponent(id)}/retry`);
        await draw(await get(`/v1/deliveries/${encodeURIComponent(id)}`));
      }));
      body.replaceChildren(
        h("section", { class: "card" },
          kv([["status", statusBadge(d.status)], ["endpoint", h("span", { class: "mono" }, d.endpoint_id)], ["event", h("span", { class: "mono" }, d.event_id)], ["type", d.event_type], ["created", fmt.time(d.created_at)], ["next attempt", fmt.time(d.next_attempt_at)], ["attempts", String(d.attempts.length)]]),
          h("div", { class: "row" }, retry), out),
        ...d.attempts.map((a) => h("section", { class: "card attempt", "data-attempt": a.attempt },
          h("div", { class: "spread" }, h("h2", {}, "Attempt " + a.attempt), badge(a.status_code ? String(a.status_code) : "no answer", a.status_code >= 200 && a.status_code < 300 ? "ok" : "bad")),
          kv([["at", fmt.time(a.at)], ["latency", fmt.ms(a.latency_ms)], ["trigger", a.trigger], ["error", a.error_kind ? a.error_kind + ": " + (a.error || "") : a.error]]),
          h("h3", {}, "Request headers"),
          table(["name", "value"], (a.request_headers || []).map((x) => ({ key: x.name, cells: [h("span", { class: "mono" }, x.name), h("span", { class: "mono" }, x.value)] }))),
          h("h3", {}, "Response excerpt"),
          a.response ? pre(a.response) : h("p", { class: "muted" }, "empty"))));
    }
    await draw(await get(`/v1/deliveries/${encodeURIComponent(id)}`));
  };

  views["dead-letters"] = async function (root, _id, params) {
    const endpoint = h("input", { name: "endpoint", placeholder: "ep_…", value: params.get("endpoint") || "" });
    const form = h("form", { class: "filters" }, h("label", {}, "endpoint", endpoint), h("button", { type: "submit" }, "Filter"));
    const listing = h("div");
    const recoverEndpoint = h("input", { name: "recover-endpoint", placeholder: "ep_…", required: true, value: params.get("endpoint") || "" });
    const recoverSince = h("input", { name: "since", type: "datetime-local", required: true });
    const recoverOut = h("div");
    const recoverButton = h("button", { type: "submit" }, "Recover");
    const recover = h("form", { class: "filters" }, h("label", {}, "endpoint", recoverEndpoint), h("label", {}, "failed since", recoverSince), recoverButton);
    root.append(h("h1", {}, "Dead letters"), form, listing,
      h("section", { class: "card" }, h("h2", {}, "Recover an endpoint"), h("p", { class: "muted" }, "Queue again every failed delivery of the endpoint created since the time."), recover, recoverOut));

    async function load() {
      listing.replaceChildren(h("p", { class: "muted" }, "Loading…"));
      try {
        const page = await get("/v1/dead-letters" + query({ endpoint: endpoint.value.trim(), limit: 100 }));
        listing.replaceChildren(table(["delivery", "endpoint", "event type", "attempts", "last answer", ""],
          page.deliveries.map((d) => {
            const last = d.attempts[d.attempts.length - 1] || {};
            const out = h("span");
            const retry = h("button", { type: "button", class: "secondary", "data-retry": d.id }, "Retry");
            retry.addEventListener("click", () => act(retry, out, async () => {
              await post(`/v1/deliveries/${encodeURIComponent(d.id)}/retry`);
              location.hash = "#/deliveries/" + encodeURIComponent(d.id);
            }));
            return { key: d.id, cells: [link("#/deliveries/" + encodeURIComponent(d.id), d.id), h("span", { class: "mono" }, d.endpoint_id), d.event_type, String(d.attempts.length), last.status_code ? String(last.status_code) : (last.error_kind || "–"), h("span", {}, retry, out)] };
          })),
          page.next_cursor ? h("p", { class: "muted" }, "Showing the oldest 100.") : null);
      } catch (e) {
        listing.replaceChildren(notice(e.message, true));
      }
    }
    form.addEventListener("submit", (e) => { e.preventDefault(); load(); });
    recover.addEventListener("submit", (e) => {
      e.preventDefault();
      act(recoverButton, recoverOut, async () => {
        const r = await post(`/v1/endpoints/${encodeURIComponent(recoverEndpoint.value.trim())}/recover`, { since: rfc3339(recoverSince.value) });
        await load();
        return notice(`${fmt.n(r.requeued)} deliveries queued again` + (r.more ? "; run it again for more." : "."));
      });
    });
    await load();
  };

  views.emails = async function (root, id) {
    if (id) return emailView(root, id);
    const to = h("input", { name: "to", type: "email", placeholder: "bob@example.net" });
    const stream = h("input", { name: "stream", placeholder: "transactional" });
    const status = h("select", { name: "status" }, ["", "queued", "deferred", "sent", "failed", "bounced"].map((s) => h("option", { value: s }, s || "any")));
    const form = h("form", { class: "filters" }, h("label", {}, "recipient", to), h("label", {}, "stream", stream), h("label", {}, "status", status), h("button", { type: "submit" }, "Search"));
    const out = h("div");
    root.append(h("h1", {}, "Emails"), form, out);
    async function load(e) {
      if (e) e.preventDefault();
      try {
        const page = await get("/v1/emails" + query({ to: to.value.trim().toLowerCase(), stream: stream.value.trim(), status: status.value, limit: 100 }));
        out.replaceChildren(table(["message", "to", "subject", "stream", "status", "queued"],
          page.emails.map((m) => ({ key: m.id, cells: [link("#/emails/" + encodeURIComponent(m.id), m.id), m.to, m.subject, m.stream, statusBadge(m.status), fmt.time(m.created_at)] })),
          (key) => { location.hash = "#/emails/" + encodeURIComponent(key); }));
      } catch (err) {
        out.replaceChildren(notice(err.message, true));
      }
    }
    form.addEventListener("submit", load);
    await load();
  };

  async function emailView(root, id) {
    const m = await get("/v1/emails/" + encodeURIComponent(id));
    const steps = [h("li", { class: "queued" }, h("strong", {}, "queued"), " · ", fmt.time(m.created_at), h("div", { class: "muted" }, `from ${m.from} to ${m.to} via ${m.stream}`))];
    for (const a of m.attempts || []) {
      const kind = a.outcome === "sent" ? "ok" : a.outcome === "deferred" ? "warn" : "bad";
      steps.push(h("li", { class: "relay " + kind },
        h("strong", {}, "relay: " + a.outcome), " · ", fmt.time(a.at), " · ", fmt.ms(a.latency_ms),
        h("div", { class: "mono" }, [a.code, a.text].filter((x) => x !== null && x !== undefined && x !== "").join(" "))));
    }
    for (const f of m.feedback || []) {
      const kind = ["hard_bounce", "complaint", "esp_suppressed", "policy_block"].includes(f.kind) ? "bad" : f.kind === "delivered" ? "ok" : "warn";
      const raw = h("details", {}, h("summary", {}, "raw event"), pre(f.raw));
      steps.push(h("li", { class: "esp " + kind },
        h("strong", {}, `${f.provider}: ${f.kind}`), " · ", fmt.time(f.occurred_at || f.received_at),
        f.detail ? h("div", { class: "muted" }, f.detail) : null, raw));
    }
    if (m.next_attempt_at) steps.push(h("li", { class: "warn" }, "next attempt ", fmt.time(m.next_attempt_at)));
    root.append(h("h1", {}, "Email ", h("span", { class: "mono" }, m.id)),
      h("section", { class: "card" },
        kv([["status", statusBadge(m.status)], ["to", m.to], ["subject", m.subject], ["stream", m.stream], ["tenant", m.tenant], ["Message-ID", m.message_id], ["flagged", m.flagged ? "yes" : "no"]])),
      h("section", { class: "card" }, h("h2", {}, "Timeline"), h("ol", { class: "timeline" }, steps)));
  }

  views.suppressions = async function (root) {
    const search = h("input", { name: "search", placeholder: "part of an address" });
    const stream = h("input", { name: "stream", placeholder: "any stream" });
    const reason = h("select", { name: "reason" }, ["", "hard_bounce", "complaint", "unsubscribe", "soft_bounce_limit", "manual", "esp_suppressed"].map((s) => h("option", { value: s }, s || "any")));
    const tenant = h("input", { name: "tenant", placeholder: "global list" });
    const form = h("form", { class: "filters" }, h("label", {}, "address contains", search), h("label", {}, "stream", stream), h("label", {}, "reason", reason), h("label", {}, "tenant", tenant), h("button", { type: "submit" }, "Search"));
    const out = h("div");
    const addAddress = h("input", { name: "address", type: "email", required: true, placeholder: "bob@example.net" });
    const addStream = h("input", { name: "add-stream", placeholder: "every stream" });
    const addButton = h("button", { type: "submit" }, "Suppress");
    const addOut = h("div");
    const add = h("form", { class: "filters" }, h("label", {}, "address", addAddress), h("label", {}, "stream", addStream), addButton);
    root.append(h("h1", {}, "Suppressions"), form, out, h("section", { class: "card" }, h("h2", {}, "Add an address"), add, addOut));

    async function load(e) {
      if (e) e.preventDefault();
      try {
        const needle = search.value.trim().toLowerCase();
        const found = [];
        let after = null;
        // A few pages, filtered here: the list has no address search.
        for (let i = 0; i < 10; i++) {
          const page = await get("/v1/suppressions" + query({ stream: stream.value.trim(), reason: reason.value, tenant: tenant.value.trim(), after, limit: 1000 }));
          found.push(...page.suppressions.filter((s) => !needle || s.address.includes(needle)));
          after = page.next_cursor;
          if (!after || found.length >= 200) break;
        }
        out.replaceChildren(table(["address", "stream", "reason", "tenant", "since", ""],
          found.slice(0, 200).map((s) => {
            const res = h("span");
            const remove = h("button", { type: "button", class: "danger" }, "Remove");
            remove.addEventListener("click", () => act(remove, res, async () => {
              await api("DELETE", "/v1/suppressions/" + encodeURIComponent(s.address) + query({ stream: s.stream || "", tenant: s.tenant || "" }));
              await load();
            }));
            return { key: s.address, cells: [s.address, s.stream || "every stream", s.reason + (s.detail ? " (" + s.detail + ")" : ""), s.tenant || "global", fmt.time(s.created_at), h("span", {}, remove, res)] };
          })));
      } catch (err) {
        out.replaceChildren(notice(err.message, true));
      }
    }
    form.addEventListener("submit", load);
    add.addEventListener("submit", (e) => {
      e.preventDefault();
      act(addButton, addOut, async () => {
        const body = { reason: "manual" };
        if (addStream.value.trim()) body.stream = addStream.value.trim();
        await api("PUT", "/v1/suppressions/" + encodeURIComponent(addAddress.value.trim()) + query({ tenant: tenant.value.trim() }), body);
        addAddress.value = "";
        await load();
        return notice("Suppressed.");
      });
    });
    await load();
  };

  views.streams = async function (root) {
    const list = h("div", { class: "grid" });
    root.append(h("h1", {}, "Streams"), list);
    async function load() {
      const { streams } = await get("/v1/streams");
      list.replaceChildren(...streams.map((s) => {
        const out = h("div");
        const toggle = h("button", { type: "button", class: s.paused ? "" : "danger" }, s.paused ? "Resume" : "Pause");
        toggle.addEventListener("click", () => act(toggle, out, async () => {
          await post(`/v1/streams/${encodeURIComponent(s.stream)}/${s.paused ? "resume" : "pause"}`);
          await load();
        }));
        const w = (x) => `${fmt.n(x.sent)} sent · ${fmt.n(x.hard_bounces)} bounced (${fmt.pct(x.bounce_rate)}) · ${fmt.n(x.complaints)} complaints (${fmt.pct(x.complaint_rate)})`;
        return h("section", { class: "card", "data-stream": s.stream },
          h("div", { class: "spread" }, h("h2", {}, s.stream), s.paused ? badge("paused", "bad") : s.warning ? badge("warning: " + s.warning, "warn") : badge("healthy", "ok")),
          kv([["last 24 h", w(s.window_24h)], ["last 1,000", w(s.window_last_1000)], ["paused", s.paused ? (s.pause_reason || "by hand") + " at " + fmt.time(s.paused_at) : "no"],
            ["warm-up", s.warmup ? `step ${s.warmup.step}: ${fmt.n(s.warmup.sent_today)} of ${fmt.n(s.warmup.cap)} today` : "off"]]),
          h("div", { class: "row" }, toggle), out);
      }));
    }
    await load();
  };

  // Table sizes walk every page of the file (hundreds of milliseconds on a
  // large one), so the view opens with the size on disk (the redb file's,
  // or the database's on PostgreSQL) and its growth, and counts the tables
  // only when asked. What is not in Herald's tables is free pages in a
  // file, and the database's own catalogs and other objects in a database.
  views.storage = async function (root) {
    const o = await get("/v1/admin/overview");
    const hist = o.history;
    let growth = "not enough samples yet";
    if (hist.length >= 2) {
      const a = hist[0], b = hist[hist.length - 1];
      const hours = (new Date(b.at) - new Date(a.at)) / 3600000;
      if (hours > 0) growth = fmt.bytes(Math.round((b.file_bytes - a.file_bytes) / hours)) + " per hour over " + fmt.duration(hours * 3600000);
    }
    const fileFacts = h("div", {});
    const tablesBody = h("div", {}, h("p", { class: "muted" }, "Counting the tables reads every table's size: a while on a large store."));
    const count = h("button", { type: "button", id: "count-tables" }, "Count tables");
    count.addEventListener("click", async () => {
      count.disabled = true;
      tablesBody.replaceChildren(h("p", { class: "muted" }, "Counting…"));
      try {
        const s = await get("/v1/admin/storage");
        const tables = s.tables.slice().sort((x, y) => y.stored_bytes - x.stored_bytes);
        const top = Math.max(1, ...tables.map((t) => t.stored_bytes));
        fileFacts.replaceChildren(kv([["stored", fmt.bytes(s.stored_bytes)], ["not in Herald's tables", fmt.bytes(Math.max(0, s.file_bytes - tables.reduce((a, t) => a + t.stored_bytes + t.metadata_bytes + t.fragmented_bytes, 0)))], ["schema", String(s.schema_version)]]));
        tablesBody.replaceChildren(table(["table", "rows", "stored", "", "oldest"], tables.map((t) => {
          const bar = h("div", { class: "meter" });
          bar.style.width = Math.max(1, (t.stored_bytes / top) * 100) + "%";
          return { key: t.name, cells: [h("span", { class: "mono" }, t.name), fmt.n(t.rows), fmt.bytes(t.stored_bytes), h("div", { class: "meter-track hide-narrow" }, bar), t.oldest ? fmt.time(t.oldest.at) : "–"] };
        })));
      } catch (e) {
        tablesBody.replaceChildren(notice(e.message, true));
      } finally {
        count.disabled = false;
      }
    });
    root.append(h("h1", {}, "Storage"),
      h("div", { class: "grid" },
        h("section", { class: "card" }, h("h2", {}, "On disk"), h("div", { class: "figure", "data-file-bytes": o.file_bytes }, fmt.bytes(o.file_bytes)),
          kv([["growth", growth]]), fileFacts),
        h("section", { class: "card" }, h("h2", {}, "Size over time"),
          Charts.line({ label: "Size on disk while this dashboard was open", yFormat: fmt.bytes, series: [{ name: "size on disk", color: "var(--c1)", points: hist.map((x) => [new Date(x.at).getTime(), x.file_bytes]) }] }),
          h("p", { class: "muted" }, "Sampled while a dashboard is open."))),
      h("section", { class: "card" }, h("div", { class: "row" }, h("h2", {}, "Tables"), count), tablesBody));
  };

  // ---- routing ----------------------------------------------------------

  async function route() {
    for (const stop of cleanups) stop();
    cleanups = [];
    const hash = location.hash.replace(/^#\/?/, "") || "overview";
    const [path, search] = hash.split("?");
    const [name, ...rest] = path.split("/");
    const id = rest.length ? decodeURIComponent(rest.join("/")) : null;
    const viewName = name === "deliveries" ? "delivery" : name;
    const view = views[viewName] || views.overview;
    for (const a of document.querySelectorAll("#nav a")) {
      a.classList.toggle("active", a.getAttribute("href") === "#/" + (name === "deliveries" ? "dead-letters" : name));
    }
    const root = h("div", { class: "view", "data-view": viewName });
    main.replaceChildren(root);
    try {
      await view(root, id, new URLSearchParams(search || ""));
    } catch (e) {
      root.append(notice(e.message, true));
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (AUTH === "open") document.getElementById("open-note").hidden = false;
    if (AUTH === "session") {
      const out = document.getElementById("sign-out");
      out.hidden = false;
      out.addEventListener("click", async () => {
        try { await post("/admin/logout"); } finally { location.reload(); }
      });
    }
    window.addEventListener("hashchange", route);
    route();
  });
})();
