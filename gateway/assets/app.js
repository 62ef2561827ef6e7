// chit dashboard: plain JavaScript, no build step, served from the gateway
// binary. It reads the gateway's /v1 API with the bearer key the user gives
// once (kept in sessionStorage, so it goes with the tab), and polls the view
// on screen every POLL_MS, stopping while the tab is hidden.
//
// Every URL is relative ("v1/tasks"), so the page works at "/", at
// "/dashboard" and behind a proxy that mounts the gateway under a path.
// Text from the API only ever goes into the page as text (textContent),
// never as HTML.
"use strict";

(() => {
  const POLL_MS = 2000;
  const PAGE_SIZE = 50;
  const MAX_PAGE_SIZE = 1000; // the store's largest page
  const KEY_STORAGE = "chit.dashboard.key";

  // ---------------------------------------------------------------- helpers

  const $ = (id) => document.getElementById(id);

  /** An element with attributes and children (strings become text). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  const pad = (n, w = 2) => String(n).padStart(w, "0");

  /** `2026-01-02 03:04:05.678` in the browser's time zone. */
  function fmtTime(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }

  /** `45s`, `12m 03s`, `3h 12m`, `2d 04h`. */
  function fmtDuration(secs) {
    const s = Math.max(0, Math.floor(secs));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
    return `${Math.floor(s / 86400)}d ${pad(Math.floor((s % 86400) / 3600))}h`;
  }

  function ago(iso) {
    const t = new Date(iso).getTime();
    if (Number.isNaN(t)) return "";
    return `${fmtDuration((Date.now() - t) / 1000)} ago`;
  }

  /** A time element: relative text, the exact time on hover. */
  function timeAgo(iso) {
    return h("time", { datetime: iso, title: fmtTime(iso) }, ago(iso));
  }

  function short(text, n = 80) {
    const s = String(text ?? "");
    return s.length > n ? `${s.slice(0, n - 1)}…` : s;
  }

  function stateBadge(state, testid) {
    return h("span", { class: `badge state-${state}`, "data-testid": testid }, state.replace(/_/g, " "));
  }

  function setRows(tbody, rows, emptyEl) {
    tbody.replaceChildren(...rows);
    if (emptyEl) emptyEl.hidden = rows.length > 0;
  }

  // ------------------------------------------------------------------- API

  class AuthNeeded extends Error {}

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  const key = {
    get: () => sessionStorage.getItem(KEY_STORAGE) || "",
    set: (k) => sessionStorage.setItem(KEY_STORAGE, k),
    forget: () => sessionStorage.removeItem(KEY_STORAGE),
  };

  async function api(path, options = {}) {
    const k = key.get();
    if (!k) {
      askForKey();
      throw new AuthNeeded("no key");
    }
    const headers = { Accept: "application/json", Authorization: `Bearer ${k}` };
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(path, {
      method: options.method || "GET",
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      cache: "no-store",
    });
    if (res.status === 401) {
      key.forget();
      askForKey("The gateway refused that key (401). Enter a valid key.");
      throw new AuthNeeded("key refused");
    }
    let body = null;
    try {
      body = await res.json();
    } catch {
      body = null;
    }
    if (!res.ok) {
      const message = body && body.error && body.error.message ? body.error.message : res.statusText;
      throw new ApiError(res.status, `${res.status}: ${message}`);
    }
    return body;
  }

  const enc = encodeURIComponent;

  // --------------------------------------------------------------- key UI

  const keyDialog = $("key-dialog");

  /**
   * Shows the key prompt, with `message` when given. A prompt already open
   * is left as it is (a poll that finds no key must not clear what the
   * user is typing).
   */
  function askForKey(message) {
    const err = $("key-error");
    if (!keyDialog.open) {
      err.hidden = true;
      err.textContent = "";
      $("key-input").value = "";
      keyDialog.showModal();
      $("key-input").focus();
    }
    if (message) {
      err.hidden = false;
      err.textContent = message;
    }
  }

  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const k = $("key-input").value.trim();
    if (!k) return;
    key.set(k);
    keyDialog.close();
    refreshNow();
  });
  $("key-forget").addEventListener("click", () => {
    key.forget();
    askForKey("Key forgotten. Enter a key to go on.");
  });
  $("change-key").addEventListener("click", () => askForKey());

  // ---------------------------------------------------------- confirmation

  /** Resolves true when the user confirms. Cancel is the default button. */
  function confirmAction(title, text, okLabel) {
    const dialog = $("confirm-dialog");
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text;
    $("confirm-ok").textContent = okLabel;
    return new Promise((resolve) => {
      const done = (answer) => {
        form.removeEventListener("submit", onOk);
        cancel.removeEventListener("click", onCancel);
        dialog.removeEventListener("cancel", onCancel);
        if (dialog.open) dialog.close();
        resolve(answer);
      };
      const form = $("confirm-form");
      const cancel = $("confirm-cancel");
      const onOk = (e) => {
        e.preventDefault();
        done(true);
      };
      const onCancel = (e) => {
        e.preventDefault();
        done(false);
      };
      form.addEventListener("submit", onOk);
      cancel.addEventListener("click", onCancel);
      dialog.addEventListener("cancel", onCancel);
      dialog.showModal();
      cancel.focus();
    });
  }

  // --------------------------------------------------------------- routing

  /** `#/tasks?state=x`, `#/task/ID`, `#/queues`, `#/workers`, `#/dlq?type=x`. */
  function route() {
    const raw = location.hash.replace(/^#\/?/, "");
    const [path, query] = raw.split("?");
    const params = new URLSearchParams(query || "");
    const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
    switch (parts[0]) {
      case "task":
        if (parts[1]) return { view: "task", id: parts[1], params };
        break;
      case "queues":
      case "workers":
      case "dlq":
        return { view: parts[0], params };
      default:
        break;
    }
    return { view: "tasks", params };
  }

  let current = route();

  function showView() {
    current = route();
    for (const section of document.querySelectorAll("section.view")) {
      section.hidden = section.id !== `view-${current.view}`;
    }
    const navView = current.view === "task" ? "tasks" : current.view;
    for (const a of document.querySelectorAll("nav a[data-view]")) {
      if (a.dataset.view === navView) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    views[current.view].enter(current);
    refreshNow();
  }

  window.addEventListener("hashchange", showView);

  // ---------------------------------------------------------- known types

  const knownTypes = new Set();

  function learnTypes(types) {
    let grew = false;
    for (const t of types) {
      if (t && !knownTypes.has(t)) {
        knownTypes.add(t);
        grew = true;
      }
    }
    if (grew) {
      $("known-types").replaceChildren(...[...knownTypes].sort().map((t) => h("option", { value: t })));
    }
  }

  // ----------------------------------------------------------------- tasks

  const filters = $("task-filters");
  let taskLimit = PAGE_SIZE;

  function filterValues() {
    const f = new FormData(filters);
    return {
      state: f.get("state") || "",
      task_type: String(f.get("task_type") || "").trim(),
      since: f.get("since") || "",
    };
  }

  /** Filters go into the URL, so a filtered list can be shared. */
  function filtersChanged() {
    taskLimit = PAGE_SIZE;
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filterValues())) if (v) q.set(k, v);
    const hash = `#/tasks${q.toString() ? `?${q}` : ""}`;
    if (location.hash !== hash) history.replaceState(null, "", hash);
    refreshNow();
  }

  filters.addEventListener("change", filtersChanged);
  filters.addEventListener("submit", (e) => {
    e.preventDefault();
    filtersChanged();
  });
  let typeTimer = null;
  filters.elements.task_type.addEventListener("input", () => {
    clearTimeout(typeTimer);
    typeTimer = setTimeout(filtersChanged, 400);
  });
  filters.addEventListener("reset", () => setTimeout(filtersChanged, 0));
  $("tasks-more").addEventListener("click", () => {
    taskLimit = Math.min(taskLimit + PAGE_SIZE, MAX_PAGE_SIZE);
    refreshNow();
  });

  function taskRow(t) {
    return h("tr", { "data-testid": "task-row", "data-task-id": t.task_id, "data-state": t.state },
      h("td", {}, h("a", { href: `#/task/${enc(t.task_id)}`, class: "mono", "data-testid": "task-link" }, t.task_id)),
      h("td", { class: "mono" }, t.task_type),
      h("td", {}, stateBadge(t.state, "task-state")),
      h("td", { class: "num" }, t.attempts),
      h("td", { class: "mono" }, t.worker_id || "–"),
      h("td", {}, timeAgo(t.last_update)),
      h("td", { class: "error-cell", title: t.last_error || "" }, short(t.last_error || "", 90)));
  }

  const tasksView = {
    enter(r) {
      const p = r.params;
      filters.elements.state.value = p.get("state") || "";
      filters.elements.task_type.value = p.get("task_type") || "";
      filters.elements.since.value = p.get("since") || "";
    },
    async refresh() {
      const f = filterValues();
      const q = new URLSearchParams({ limit: String(taskLimit) });
      if (f.state) q.set("state", f.state);
      if (f.task_type) q.set("task_type", f.task_type);
      const page = await api(`v1/tasks?${q}`);
      // The list is newest update first, so a time filter is a cut-off:
      // once a row is older, so is every row after it.
      let tasks = page.tasks;
      let more = Boolean(page.next_cursor) && taskLimit < MAX_PAGE_SIZE;
      if (f.since) {
        const cutoff = Date.now() - Number(f.since) * 1000;
        const kept = tasks.filter((t) => new Date(t.last_update).getTime() >= cutoff);
        if (kept.length < tasks.length) more = false;
        tasks = kept;
      }
      learnTypes(tasks.map((t) => t.task_type));
      setRows($("task-rows"), tasks.map(taskRow), $("tasks-empty"));
      $("tasks-more").hidden = !more;
    },
  };

  // ------------------------------------------------------------ task chain

  let chainSignature = "";

  /** What each receipt is, beyond its type: redelivery, poll, replay, retry. */
  function annotate(chain) {
    const byId = new Map(chain.map((r) => [r.receipt_id, r]));
    const acceptedByParent = new Map();
    const notes = new Map();
    let polls = 0;
    let redeliveries = 0;
    let retries = 0;
    let replays = 0;
    for (const r of chain) {
      const list = [];
      const parent = byId.get((r.parent_receipt_ids || [])[0]);
      const b = r.body || {};
      if (r.receipt_type === "accepted") {
        const key = (r.parent_receipt_ids || []).join(",") || "(none)";
        const seen = acceptedByParent.get(key) || 0;
        acceptedByParent.set(key, seen + 1);
        // A second `accepted` under one parent is the same delivery taken
        // again (its first worker died or lost its connection); the broker
        // also flags a redelivered message itself.
        if (seen > 0 || b.redelivered === true) {
          redeliveries += 1;
          list.push({ text: "redelivery", cls: "warn", testid: "note-redelivery" });
        }
        if (parent && parent.receipt_type === "in_progress") list.push({ text: "next poll run", cls: "info" });
        if (typeof b.delivery_count === "number" && b.delivery_count > 0) {
          list.push({ text: `delivered before ${b.delivery_count}×`, cls: "warn" });
        }
      }
      if (r.receipt_type === "in_progress") {
        polls += 1;
        const poll = typeof b.poll === "number" ? b.poll : polls;
        const next = typeof b.delay_ms === "number" ? `, next run in ${b.delay_ms} ms` : "";
        list.push({ text: `poll ${poll}${next}`, cls: "info", testid: "note-poll" });
      }
      if (r.receipt_type === "retry_scheduled") {
        retries += 1;
        const d = typeof b.delay_ms === "number" ? ` in ${b.delay_ms} ms` : "";
        list.push({ text: `retry${d}`, cls: "warn", testid: "note-retry" });
      }
      if (r.receipt_type === "queued" && parent && parent.receipt_type === "dead_lettered") {
        replays += 1;
        list.push({ text: "replay", cls: "info", testid: "note-replay" });
      }
      if (r.receipt_type === "failure" && b.will_retry === false) list.push({ text: "final", cls: "bad" });
      notes.set(r.receipt_id, list);
    }
    return { notes, polls, redeliveries, retries, replays };
  }

  /** The body's fields, the important ones first; long text as a block. */
  function bodyDetails(body) {
    if (!body || typeof body !== "object" || Array.isArray(body)) {
      return body === undefined || body === null ? null : h("pre", { class: "detail-block" }, JSON.stringify(body, null, 2));
    }
    const first = ["error", "reason", "exit_code", "signal", "delay_ms", "next_attempt", "poll", "delivery", "delivery_count", "redelivered", "attempts", "dead_lettered_by", "queue"];
    // Empty fields (a null signal, an empty stderr tail) say nothing.
    const keys = Object.keys(body).filter((k) => body[k] !== null && body[k] !== "").sort((a, b) => {
      const ia = first.indexOf(a);
      const ib = first.indexOf(b);
      return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
    });
    if (keys.length === 0) return null;
    const dl = h("dl", { class: "detail" });
    for (const k of keys) {
      const v = body[k];
      let value;
      if (typeof v === "string") {
        value = v.length > 80 || v.includes("\n") ? h("pre", { class: "detail-block" }, v) : h("span", { class: "mono" }, v);
      } else {
        const text = JSON.stringify(v, null, 2);
        value = text.length > 80 || text.includes("\n") ? h("pre", { class: "detail-block" }, text) : h("span", { class: "mono" }, text);
      }
      dl.append(h("dt", {}, k.replace(/_/g, " ")), h("dd", { "data-field": k }, value));
    }
    return dl;
  }

  function artifactList(artifacts) {
    if (!artifacts || artifacts.length === 0) return null;
    return h("ul", { class: "artifacts", "aria-label": "Artifacts" },
      artifacts.map((a) => {
        const place = a.path || a.uri || a.description || "(no path)";
        const about = [a.content_type, typeof a.size === "number" ? `${a.size} bytes` : null].filter(Boolean).join(", ");
        return h("li", {}, h("span", { class: "mono" }, place), about ? ` (${about})` : "");
      }));
  }

  function renderChain(view) {
    const t = view.task;
    const chain = view.chain || [];
    $("task-id").textContent = t.task_id;
    const summary = $("task-summary");
    const item = (label, value) => [h("dt", {}, label), h("dd", {}, value)];
    summary.replaceChildren(
      ...item("State", stateBadge(t.state, "summary-state")),
      ...item("Type", h("span", { class: "mono" }, t.task_type)),
      ...item("Attempts", String(t.attempts)),
      ...item("Worker", h("span", { class: "mono" }, t.worker_id || "–")),
      ...item("First seen", fmtTime(t.first_seen)),
      ...item("Last update", fmtTime(t.last_update)),
      ...(t.last_error ? item("Last error", h("span", { class: "error-text" }, t.last_error)) : []),
    );

    // Re-draw the timeline only when a receipt came or went, so an open
    // detail or the reader's place is not lost on every poll.
    const signature = chain.map((r) => r.receipt_id).join(",");
    if (signature === chainSignature) return;
    chainSignature = signature;

    const { notes, polls, redeliveries, retries, replays } = annotate(chain);
    const attempts = new Set(chain.map((r) => r.attempt)).size;
    const stats = [`${chain.length} receipt${chain.length === 1 ? "" : "s"}`, `${attempts} attempt${attempts === 1 ? "" : "s"}`];
    if (redeliveries) stats.push(`${redeliveries} redeliver${redeliveries === 1 ? "y" : "ies"}`);
    if (polls) stats.push(`${polls} in-progress poll${polls === 1 ? "" : "s"}`);
    if (retries) stats.push(`${retries} retr${retries === 1 ? "y" : "ies"}`);
    if (replays) stats.push(`${replays} replay${replays === 1 ? "" : "s"}`);
    $("chain-stats").textContent = stats.join(" · ");

    const start = chain.length ? new Date(chain[0].created_at).getTime() : 0;
    const items = [];
    let lastAttempt = null;
    for (const r of chain) {
      if (r.attempt !== lastAttempt) {
        lastAttempt = r.attempt;
        items.push(h("li", { class: "attempt", "data-testid": "timeline-attempt", "aria-label": `Attempt ${r.attempt}` },
          h("span", {}, `Attempt ${r.attempt}`)));
      }
      const offset = (new Date(r.created_at).getTime() - start) / 1000;
      const rnotes = notes.get(r.receipt_id) || [];
      items.push(h("li", {
        class: `receipt type-${r.receipt_type}${rnotes.some((n) => n.text === "redelivery") ? " branch" : ""}`,
        "data-testid": "timeline-item",
        "data-receipt-type": r.receipt_type,
        "data-receipt-id": r.receipt_id,
      },
      h("div", { class: "receipt-head" },
        h("span", { class: `badge rtype-${r.receipt_type}`, "data-testid": "receipt-type" }, r.receipt_type.replace(/_/g, " ")),
        ...rnotes.map((n) => h("span", { class: `note ${n.cls}`, "data-testid": n.testid }, n.text)),
        h("time", { datetime: r.created_at, class: "mono" }, fmtTime(r.created_at)),
        h("span", { class: "muted" }, `+${offset.toFixed(3)} s`),
        h("span", { class: "muted" }, `attempt ${r.attempt}`),
        r.worker_id ? h("span", { class: "mono worker" }, r.worker_id) : null),
      bodyDetails(r.body),
      artifactList(r.artifacts),
      h("details", { class: "ids" },
        h("summary", {}, "ids"),
        h("dl", { class: "detail" },
          h("dt", {}, "receipt"), h("dd", { class: "mono" }, r.receipt_id),
          h("dt", {}, "parents"), h("dd", { class: "mono" }, (r.parent_receipt_ids || []).join(", ") || "–"),
          r.trace_id ? [h("dt", {}, "trace"), h("dd", { class: "mono" }, r.trace_id)] : null))));
    }
    $("timeline").replaceChildren(...items);
  }

  const taskView = {
    enter(r) {
      chainSignature = "";
      $("task-id").textContent = r.id;
      $("task-summary").replaceChildren();
      $("timeline").replaceChildren();
      $("chain-stats").textContent = "";
      $("task-missing").hidden = true;
    },
    async refresh() {
      try {
        const view = await api(`v1/tasks/${enc(current.id)}`);
        $("task-missing").hidden = true;
        renderChain(view);
      } catch (e) {
        if (e instanceof ApiError && e.status === 404) {
          // Right after a publish the sink may not have stored it yet.
          $("task-missing").hidden = false;
          $("task-missing").textContent = "No receipts stored for this task (yet). Waiting for them…";
          return;
        }
        throw e;
      }
    },
  };

  // ---------------------------------------------------------------- queues

  const queuesView = {
    enter() {},
    async refresh() {
      const q = await api("v1/queues");
      const notice = $("queues-notice");
      notice.hidden = q.available;
      notice.textContent = q.available ? "" : `Queue figures are not available: ${q.reason || "no management API"}.`;
      learnTypes(q.queues.map((c) => c.task_type));
      const num = (n, cls) => h("td", { class: `num${n > 0 && cls ? ` ${cls}` : ""}` }, String(n));
      setRows($("queue-rows"), q.queues.map((c) =>
        h("tr", { "data-testid": "queue-row", "data-task-type": c.task_type },
          h("th", { scope: "row", class: "mono" }, c.task_type),
          num(c.ready),
          num(c.unacked),
          num(c.depth),
          num(c.consumers),
          num(c.delayed),
          num(c.dead_letters, "bad-text"))), q.available ? $("queues-empty") : null);
      if (!q.available) $("queues-empty").hidden = true;
    },
  };

  // --------------------------------------------------------------- workers

  const workersView = {
    enter() {},
    async refresh() {
      const w = await api("v1/workers");
      learnTypes(w.workers.flatMap((x) => x.capabilities));
      setRows($("worker-rows"), w.workers.map((x) =>
        h("tr", { "data-testid": "worker-row", "data-worker-id": x.worker_id },
          h("th", { scope: "row", class: "mono" }, x.worker_id),
          h("td", {}, `${x.host} (pid ${x.pid})`),
          h("td", { class: "mono" }, x.capabilities.join(", ")),
          h("td", { class: "num" }, `${x.in_flight} / ${x.concurrency}`),
          h("td", {}, x.version),
          h("td", {}, fmtDuration(x.uptime_secs)),
          h("td", {}, `${fmtDuration(x.last_seen_secs_ago)} ago`))), $("workers-empty"));
    },
  };

  // ----------------------------------------------------------- dead letters

  let dlqType = "";
  let dlqListedTotal = null;
  let dlqBusy = false;

  function dlqResult(text, bad) {
    const el = $("dlq-result");
    el.textContent = text;
    el.classList.toggle("error", Boolean(bad));
  }

  function openDlq(type) {
    const hash = `#/dlq?type=${enc(type)}`;
    if (location.hash !== hash) location.hash = hash;
  }

  $("dlq-other").addEventListener("submit", (e) => {
    e.preventDefault();
    const t = String(new FormData(e.target).get("task_type") || "").trim();
    if (t) openDlq(t);
  });

  async function listDeadLetters() {
    const d = await api(`v1/dlq?task_type=${enc(dlqType)}&limit=100`);
    const q = d.queues[0];
    dlqListedTotal = q.total;
    $("dlq-total").textContent = `${q.total} waiting${q.total > q.dead_letters.length ? ` (first ${q.dead_letters.length} shown)` : ""}`;
    setRows($("dlq-rows"), q.dead_letters.map((l) =>
      h("tr", { "data-testid": "dlq-row", "data-task-id": l.task_id },
        h("td", {}, h("a", { href: `#/task/${enc(l.task_id)}`, class: "mono" }, l.task_id)),
        h("td", { class: "num" }, l.attempt),
        h("td", {}, l.dead_lettered_by),
        h("td", { class: "error-cell", title: l.last_error || "" }, short(l.last_error || "–", 90)),
        h("td", {}, h("details", {}, h("summary", {}, short(l.payload, 40)), h("pre", { class: "detail-block" }, l.payload))),
        h("td", {}, h("button", {
          type: "button",
          class: "small",
          "data-testid": "dlq-replay-one",
          "aria-label": `Replay task ${l.task_id}`,
          onclick: () => dlqAction("replay", [l.task_id]),
        }, "Replay")))), $("dlq-empty"));
    for (const b of [$("dlq-replay-all"), $("dlq-purge-all")]) b.disabled = q.total === 0;
  }

  async function dlqAction(action, taskIds) {
    if (dlqBusy) return;
    if (action === "purge") {
      const n = dlqListedTotal ?? "all";
      const ok = await confirmAction(
        `Purge dead letters of ${dlqType}?`,
        n === 1
          ? `This deletes the dead letter of ${dlqType} for good: its task will not run again, and its chain ends with a purged receipt.`
          : `This deletes ${n} dead letters of ${dlqType} for good: their tasks will not run again, and each chain ends with a purged receipt.`,
        "Purge",
      );
      if (!ok) {
        dlqResult("Purge cancelled.");
        return;
      }
    }
    dlqBusy = true;
    dlqResult(action === "purge" ? "Purging…" : "Replaying…");
    try {
      const body = taskIds ? { task_ids: taskIds } : {};
      const r = await api(`v1/dlq/${enc(dlqType)}/${action}`, { method: "POST", body });
      if (action === "purge") {
        dlqResult(`Purged ${r.purged} dead letter${r.purged === 1 ? "" : "s"}.`);
      } else {
        const missing = r.not_found && r.not_found.length ? ` (${r.not_found.length} no longer there)` : "";
        dlqResult(`Replayed ${r.replayed} task${r.replayed === 1 ? "" : "s"}${missing}.`);
      }
      await listDeadLetters();
      refreshNow(); // the counts of the summary too
    } catch (e) {
      if (e instanceof ApiError && e.status === 403) dlqResult("This key may not do that: replay and purge need a key with the admin scope.", true);
      else if (!(e instanceof AuthNeeded)) dlqResult(`Failed: ${e.message}`, true);
    } finally {
      dlqBusy = false;
    }
  }

  $("dlq-replay-all").addEventListener("click", () => dlqAction("replay", null));
  $("dlq-purge-all").addEventListener("click", () => dlqAction("purge", null));
  $("dlq-refresh").addEventListener("click", () => listDeadLetters().catch(showError));

  const dlqView = {
    enter(r) {
      const type = r.params.get("type") || "";
      dlqResult("");
      if (type !== dlqType) {
        dlqType = type;
        dlqListedTotal = null;
        $("dlq-rows").replaceChildren();
      }
      $("dlq-detail").hidden = !dlqType;
      $("dlq-type").textContent = dlqType;
    },
    async refresh() {
      const s = await api("v1/dlq");
      learnTypes(s.queues.map((q) => q.task_type));
      setRows($("dlq-summary-rows"), s.queues.map((q) =>
        h("tr", { "data-testid": "dlq-summary-row", "data-task-type": q.task_type, class: q.task_type === dlqType ? "selected" : "" },
          h("th", { scope: "row", class: "mono" }, q.task_type),
          h("td", { class: `num${q.total > 0 ? " bad-text" : ""}`, "data-testid": "dlq-count" }, String(q.total)),
          h("td", {}, h("button", {
            type: "button",
            class: "small quiet",
            "data-testid": "dlq-open",
            "aria-label": `Show dead letters of ${q.task_type}`,
            onclick: () => openDlq(q.task_type),
          }, "Show")))));
      // Listing hands every dead letter out and back (a delivery each), so
      // the letters are read again only when their count changes.
      if (dlqType && !dlqBusy) {
        const known = s.queues.find((q) => q.task_type === dlqType);
        if (dlqListedTotal === null || !known || known.total !== dlqListedTotal) await listDeadLetters();
      }
    },
  };

  const views = { tasks: tasksView, task: taskView, queues: queuesView, workers: workersView, dlq: dlqView };

  // --------------------------------------------------------- live updates

  let timer = null;
  let inFlight = null;
  let again = false;
  const liveToggle = $("live-toggle");

  function setLive(text, state) {
    const el = $("live-status");
    el.textContent = text;
    el.dataset.state = state;
  }

  function showError(e) {
    if (e instanceof AuthNeeded) setLive("Waiting for an API key", "paused");
    else setLive(`Update failed: ${e.message}`, "error");
  }

  function schedule() {
    clearTimeout(timer);
    timer = null;
    if (document.hidden) {
      setLive("Paused while the tab is hidden", "paused");
      return;
    }
    if (!liveToggle.checked) return;
    timer = setTimeout(refreshNow, POLL_MS);
  }

  /** Refreshes the view on screen now; one refresh at a time. */
  function refreshNow() {
    if (inFlight) {
      again = true;
      return inFlight;
    }
    clearTimeout(timer);
    const view = views[current.view];
    inFlight = (async () => {
      try {
        await view.refresh();
        const now = new Date();
        setLive(`${liveToggle.checked ? "Live" : "Paused"} · updated ${pad(now.getHours())}:${pad(now.getMinutes())}:${pad(now.getSeconds())}`,
          liveToggle.checked ? "live" : "paused");
      } catch (e) {
        showError(e);
      } finally {
        inFlight = null;
        if (again) {
          again = false;
          refreshNow();
        } else {
          schedule();
        }
      }
    })();
    return inFlight;
  }

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) schedule();
    else refreshNow();
  });
  liveToggle.addEventListener("change", () => refreshNow());

  // ----------------------------------------------------------------- start

  if (!location.hash) history.replaceState(null, "", "#/tasks");
  showView();
  if (!key.get()) askForKey();
})();
