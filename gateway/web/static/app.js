// The dashboard: plain ES modules, no build step. Every string from the fleet goes into the
// page through textContent (device ids and classes come from devices: never markup).
import uPlot from "./vendor/uPlot.esm.js";

const $ = (sel) => document.querySelector(sel);
const STATES = ["queued", "offered", "downloading", "downloaded", "updating", "succeeded",
  "failed", "cancelled", "timed_out"];
const ACTIVE = ["queued", "offered", "downloading", "downloaded", "updating"];
const color = (s) => getComputedStyle(document.documentElement).getPropertyValue(`--${s}`).trim() || "#888";

function h(tag, attrs = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "style") Object.assign(el.style, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

const me = { operator: null, open_reads: true };

async function api(path, opts = {}) {
  const init = { credentials: "same-origin", ...opts, headers: { ...(opts.headers || {}) } };
  if (init.method && init.method !== "GET") init.headers["X-Fota-Csrf"] = "1";
  const r = await fetch(path, init);
  if (!r.ok) {
    const text = await r.text();
    const err = new Error(text || r.statusText);
    err.status = r.status;
    throw err;
  }
  return r.json();
}

const ago = (t) => {
  if (t === null || t === undefined) return "never";
  const s = Math.max(0, Date.now() / 1000 - t);
  if (s < 60) return `${s.toFixed(0)} s ago`;
  if (s < 3600) return `${(s / 60).toFixed(0)} min ago`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h ago`;
  return `${(s / 86400).toFixed(1)} d ago`;
};
const when = (t) => (t ? new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z" : "-");
const stateTag = (s) => h("span", { class: "state", style: { background: color(s) } }, s);
const link = (href, text) => h("a", { href }, text);

function stackBar(counts, total) {
  const bar = h("div", { class: "bar", title: STATES.filter((s) => counts[s]).map((s) => `${s}: ${counts[s]}`).join(", ") });
  for (const s of STATES) {
    if (!counts[s]) continue;
    bar.append(h("span", { style: { width: `${(100 * counts[s]) / Math.max(total, 1)}%`, background: color(s) } }));
  }
  return bar;
}
const legend = () => h("div", { class: "legend" }, STATES.map((s) => h("span", {}, h("i", { style: { background: color(s) } }), s)));

function hbars(rows, label) {
  const top = Math.max(1, ...rows.map((r) => r.count));
  return h("div", {}, rows.map((r) => h("div", { class: "hbar" }, h("span", {}, label(r)),
    h("div", {}, h("div", { class: "fill", style: { width: `${(100 * r.count) / top}%` } })), h("span", {}, r.count))));
}

function pager(total, offset, limit, go) {
  return h("div", { class: "pager" },
    h("button", { type: "button", disabled: offset <= 0, onclick: () => go(Math.max(0, offset - limit)) }, "‹ previous"),
    h("span", { class: "muted" }, total ? `${offset + 1}-${Math.min(total, offset + limit)} of ${total}` : "none"),
    h("button", { type: "button", disabled: offset + limit >= total, onclick: () => go(offset + limit) }, "next ›"));
}

// ---- views: each is {render(root, params), onEvent(ev)} ---------------------------------------
let current = null; // the view on screen
let refreshTimer = null;
function refreshSoon(ms = 300) { // coalesce bursts of events into one reload
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; current && current.reload && current.reload(); }, ms);
}

function overview() {
  let q = "", offset = 0;
  const LIMIT = 50;
  const root = h("div");
  const table = h("div");
  async function loadDevices() {
    const d = await api(`/api/devices?q=${encodeURIComponent(q)}&offset=${offset}&limit=${LIMIT}`);
    table.replaceChildren(
      h("table", {}, h("tr", {}, ["device", "class", "version", "state", "result", "progress", "last seen", "tags"].map((x) => h("th", {}, x))),
        d.devices.map((v) => h("tr", {}, h("td", {}, link(`#/device/${encodeURIComponent(v.id)}`, v.id)), h("td", {}, v.class),
          h("td", {}, v.seq), h("td", {}, v.state), h("td", {}, v.result), h("td", {}, v.progress), h("td", {}, ago(v.last_seen)),
          h("td", {}, v.tags.join(", "))))),
      pager(d.total, offset, LIMIT, (o) => { offset = o; loadDevices(); }));
  }
  async function reload() {
    const o = await api("/api/overview");
    const running = o.campaigns.filter((c) => c.state === "running").length;
    root.replaceChildren(
      h("h1", {}, "Fleet overview"),
      h("div", { class: "cards" },
        h("div", { class: "card" }, h("div", { class: "big", id: "device-count" }, o.devices), h("div", { class: "muted" }, "devices")),
        h("div", { class: "card" }, h("div", { class: "big" }, o.seen_recently), h("div", { class: "muted" }, "seen in the last hour")),
        h("div", { class: "card" }, h("div", { class: "big" }, running), h("div", { class: "muted" }, "campaigns running"))),
      h("div", { class: "row" },
        h("div", {}, h("h2", {}, "By state"), hbars(o.by_state, (r) => r.key), h("h2", {}, "By result"), hbars(o.by_result, (r) => r.key)),
        h("div", {}, h("h2", {}, "By class"), hbars(o.by_class, (r) => r.key), h("h2", {}, "By version"), hbars(o.by_version, (r) => `${r.class} seq ${r.seq}`))),
      h("h2", {}, "Recent campaigns"),
      h("table", {}, h("tr", {}, ["campaign", "image", "state", "jobs", "progress"].map((x) => h("th", {}, x))),
        o.campaigns.slice().reverse().map((c) => h("tr", {}, h("td", {}, link(`#/campaign/${c.id}`, `#${c.id}`)), h("td", {}, c.image),
          h("td", {}, stateTag(c.state)), h("td", {}, c.total), h("td", {}, stackBar(c.counts, c.total))))),
      h("h2", {}, "Devices"),
      h("input", { type: "search", id: "search", placeholder: "search id, class, tag, address", value: q,
        oninput: (e) => { q = e.target.value; offset = 0; loadDevices(); } }),
      table);
    await loadDevices();
  }
  return { root, reload, onEvent: () => refreshSoon(1000) };
}

function device(id) {
  const root = h("div");
  async function reload() {
    const d = await api(`/api/devices/${encodeURIComponent(id)}`);
    const j = d.current_job;
    root.replaceChildren(
      h("h1", {}, "Device ", d.id),
      h("div", { class: "cards" },
        h("div", { class: "card" }, h("div", { class: "muted" }, "class / version"), h("div", {}, `${d.class} · seq ${d.seq}`)),
        h("div", { class: "card" }, h("div", { class: "muted" }, "state / result"), h("div", {}, `${d.state} · ${d.result}`)),
        h("div", { class: "card" }, h("div", { class: "muted" }, "last seen"), h("div", {}, `${ago(d.last_seen)} from ${d.address ?? "-"}`)),
        h("div", { class: "card" }, h("div", { class: "muted" }, "current job"),
          j ? h("div", {}, link(`#/campaign/${j.campaign}`, `campaign ${j.campaign}`), ` job ${j.id} `, stateTag(j.state), " ",
            h("progress", { class: "progress", max: j.size, value: j.progress }), ` ${j.progress} / ${j.size} bytes`) : h("div", {}, "none"))),
      h("h2", {}, "Jobs"),
      h("table", {}, h("tr", {}, ["job", "campaign", "state", "result", "progress", "updated"].map((x) => h("th", {}, x))),
        d.jobs.slice().reverse().map((x) => h("tr", {}, h("td", {}, x.id), h("td", {}, link(`#/campaign/${x.campaign}`, `#${x.campaign}`)),
          h("td", {}, stateTag(x.state)), h("td", {}, x.result ?? ""), h("td", {}, `${x.progress} / ${x.size}`), h("td", {}, when(x.updated))))),
      h("h2", {}, "History"),
      eventTable(d.events.slice().reverse()));
  }
  return { root, reload, onEvent: (ev) => { if (ev.device === id) refreshSoon(); } };
}

function eventTable(events) {
  return h("table", {}, h("tr", {}, ["time", "kind", "device", "campaign", "detail"].map((x) => h("th", {}, x))),
    events.map((e) => h("tr", {}, h("td", {}, when(e.time)), h("td", {}, e.kind),
      h("td", {}, e.device ? link(`#/device/${encodeURIComponent(e.device)}`, e.device) : ""),
      h("td", {}, e.campaign ? link(`#/campaign/${e.campaign}`, `#${e.campaign}`) : ""), h("td", { class: "wrap" }, e.detail))));
}

function campaigns() {
  const root = h("div");
  async function reload() {
    const list = await api("/api/campaigns");
    root.replaceChildren(h("h1", {}, "Campaigns"), legend(),
      h("table", {}, h("tr", {}, ["campaign", "image", "state", "jobs", "progress", "created", "reason"].map((x) => h("th", {}, x))),
        list.slice().reverse().map((c) => h("tr", {}, h("td", {}, link(`#/campaign/${c.id}`, `#${c.id}`)), h("td", {}, c.image),
          h("td", {}, stateTag(c.state)), h("td", {}, c.total), h("td", {}, stackBar(c.counts, c.total)),
          h("td", {}, when(c.created)), h("td", { class: "wrap" }, c.reason ?? "")))));
  }
  return { root, reload, onEvent: (ev) => { if (ev.campaign) refreshSoon(); } };
}

function lineChart(el, tl) {
  const series = Object.keys(tl).filter((k) => k !== "time");
  const data = [tl.time, ...series.map((s) => tl[s])];
  return new uPlot({ width: Math.min(1100, el.clientWidth || 800) - 20, height: 220, title: "jobs by state over time",
    series: [{}, ...series.map((s) => ({ label: s, stroke: color(s), width: 2, points: { show: false },
      paths: uPlot.paths.stepped({ align: 1 }) }))], axes: [{}, { label: "jobs" }] }, data, el);
}

function histChart(el, hist) {
  const width = hist.edges.length > 1 ? hist.edges[1] - hist.edges[0] : 1;
  const xs = hist.edges.map((e) => e + width / 2);
  return new uPlot({ width: Math.min(1100, el.clientWidth || 800) - 20, height: 200, title: "download time per device (offer to success)",
    scales: { x: { time: false } },
    series: [{ label: "seconds" }, { label: "devices", fill: "#93c5fd", stroke: "#2563eb", points: { show: false }, paths: uPlot.paths.bars({ size: [0.9, 60] }) }],
    axes: [{ label: "seconds" }, { label: "devices" }] }, [xs, hist.counts], el);
}

function campaign(n) {
  const root = h("div");
  let state = "", offset = 0, chartAt = 0, plots = [];
  const LIMIT = 50;
  const chartBox = h("div", { class: "chart", id: "timeline" }), histBox = h("div", { class: "chart", id: "histogram" });
  async function loadCharts() {
    chartAt = Date.now();
    const c = await api(`/api/campaigns/${n}/charts`);
    plots.forEach((p) => p.destroy());
    chartBox.replaceChildren(); histBox.replaceChildren();
    plots = [lineChart(chartBox, c.timeline)];
    if (c.download_seconds.counts.length) plots.push(histChart(histBox, c.download_seconds));
    else histBox.replaceChildren(h("p", { class: "muted" }, "no finished download yet"));
  }
  async function act(action) {
    try { await api(`/api/campaigns/${n}/${action}`, { method: "POST" }); await reload(); }
    catch (e) { $("#action-error").textContent = e.message; }
  }
  async function reload() {
    const c = await api(`/api/campaigns/${n}?state=${state}&offset=${offset}&limit=${LIMIT}`);
    const done = c.counts.succeeded || 0, failed = (c.counts.failed || 0) + (c.counts.timed_out || 0);
    const finished = done + failed;
    const rate = finished ? (100 * done) / finished : null;
    const p = c.policy;
    const can = me.operator !== null;
    const allowed = { pause: c.state === "running", resume: c.state === "paused", cancel: c.state !== "cancelled" && c.state !== "done", retry: failed > 0 && c.state !== "cancelled" };
    root.replaceChildren(
      h("h1", {}, `Campaign #${c.id} `, h("span", { id: "campaign-state" }, stateTag(c.state))),
      c.reason ? h("p", { id: "campaign-reason" }, c.reason) : null,
      h("div", { class: "cards" },
        h("div", { class: "card" }, h("div", { class: "muted" }, "image"), h("div", {}, c.image)),
        h("div", { class: "card" }, h("div", { class: "muted" }, "done"), h("div", { class: "big", id: "campaign-done" }, `${done} / ${c.total}`)),
        h("div", { class: "card" }, h("div", { class: "muted" }, "success rate / gate"),
          h("div", {}, rate === null ? "-" : `${rate.toFixed(1)} %`, ` (phases need ${p.success_rate}%`, p.max_failures ? `, pause at ${p.max_failures} failures)` : ")")),
        h("div", { class: "card" }, h("div", { class: "muted" }, "deadline"), h("div", {}, when(c.deadline)))),
      h("div", { class: "actions" }, ["pause", "resume", "cancel", "retry"].map((a) =>
        h("button", { type: "button", id: `btn-${a}`, disabled: !can || !allowed[a], title: can ? "" : "sign in to act",
          onclick: () => act(a) }, a)), can ? null : h("span", { class: "muted" }, "sign in to pause, resume, cancel or retry"),
        h("span", { id: "action-error", class: "error" })),
      h("h2", {}, "Phases"), legend(),
      h("table", {}, h("tr", {}, ["phase", "released", "jobs", "progress"].map((x) => h("th", {}, x))),
        c.phases.map((ph) => h("tr", {}, h("td", {}, ph.name), h("td", {}, ph.released ? "yes" : "no"), h("td", {}, ph.total),
          h("td", { style: { width: "60%" } }, stackBar(ph.counts, ph.total))))),
      h("h2", {}, "Pictures"), chartBox, histBox,
      h("h2", {}, "Failures"),
      c.failures.length ? h("table", {}, h("tr", {}, ["state", "reason", "jobs"].map((x) => h("th", {}, x))),
        c.failures.map((f) => h("tr", {}, h("td", {}, f.state), h("td", {}, f.result ?? "no answer before the deadline"), h("td", {}, f.count))))
        : h("p", { class: "muted" }, "none"),
      h("h2", {}, "Jobs"),
      h("select", { id: "job-filter", onchange: (e) => { state = e.target.value; offset = 0; reload(); } },
        h("option", { value: "" }, "all states"), STATES.map((s) => h("option", { value: s, selected: s === state }, s))),
      h("table", {}, h("tr", {}, ["job", "device", "phase", "state", "result", "progress", "updated"].map((x) => h("th", {}, x))),
        c.jobs_page.jobs.map((j) => h("tr", {}, h("td", {}, j.id), h("td", {}, link(`#/device/${encodeURIComponent(j.device)}`, j.device)),
          h("td", {}, j.phase), h("td", {}, stateTag(j.state)), h("td", {}, j.result ?? ""),
          h("td", {}, h("progress", { class: "progress", max: j.size, value: j.progress })), h("td", {}, when(j.updated))))),
      pager(c.jobs_page.total, offset, LIMIT, (o) => { offset = o; reload(); }));
    if (Date.now() - chartAt > 3000) await loadCharts(); // the pictures at most every 3 s
  }
  return { root, reload, onEvent: (ev) => { if (ev.campaign === n) refreshSoon(); } };
}

function images() {
  const root = h("div");
  async function reload() {
    const list = await api("/api/images");
    root.replaceChildren(h("h1", {}, "Images"),
      h("table", {}, h("tr", {}, ["image", "label", "class", "version (seq)", "size", "digest", "devices running it", "registered", "problem"].map((x) => h("th", {}, x))),
        list.map((i) => h("tr", {}, h("td", {}, i.id), h("td", {}, i.label ?? ""), h("td", {}, i.class), h("td", {}, i.seq), h("td", {}, `${i.size} B`),
          h("td", { title: i.digest }, `${i.digest.slice(0, 16)}…`), h("td", {}, i.devices), h("td", {}, when(i.created)),
          h("td", { class: "wrap error" }, i.problem ?? "")))));
  }
  return { root, reload, onEvent: (ev) => { if (ev.kind === "image" || ev.kind === "seq") refreshSoon(1000); } };
}

function events() {
  const root = h("div");
  let rows = [];
  const body = h("div");
  const draw = () => body.replaceChildren(eventTable(rows),
    h("button", { type: "button", onclick: older }, "older"));
  async function older() {
    const before = rows.length ? rows[rows.length - 1].id : null;
    rows = rows.concat(await api(`/api/events?limit=100${before ? `&before=${before}` : ""}`));
    draw();
  }
  async function reload() {
    rows = await api("/api/events?limit=100");
    root.replaceChildren(h("h1", {}, "Live events"), body);
    draw();
  }
  return { root, reload, onEvent: (ev) => { rows.unshift(ev); rows = rows.slice(0, 1000); draw(); } };
}

const ROUTES = [
  [/^#?\/?$/, () => overview()],
  [/^#\/device\/(.+)$/, (m) => device(decodeURIComponent(m[1]))],
  [/^#\/campaigns$/, () => campaigns()],
  [/^#\/campaign\/(\d+)$/, (m) => campaign(Number(m[1]))],
  [/^#\/images$/, () => images()],
  [/^#\/events$/, () => events()],
];

async function route() {
  const hash = location.hash || "#/";
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("on", a.getAttribute("href") === hash);
  for (const [re, make] of ROUTES) {
    const m = hash.match(re);
    if (!m) continue;
    current = make(m);
    $("#app").replaceChildren(current.root);
    try { await current.reload(); }
    catch (e) { $("#app").replaceChildren(h("p", { class: "error" }, e.status === 401 ? "Sign in with an operator token to see the fleet." : `Error: ${e.message}`)); }
    return;
  }
  $("#app").replaceChildren(h("p", {}, "No such page."));
}

// ---- sign-in and the live stream -------------------------------------------------------------
async function whoami() {
  Object.assign(me, await api("/api/me"));
  $("#signin").hidden = me.operator !== null;
  $("#who").hidden = me.operator === null;
  $("#who-name").textContent = me.operator ? `signed in: ${me.operator}` : "";
}

let source = null;
function connect() {
  if (source) source.close();
  if (!me.open_reads && me.operator === null) return;
  source = new EventSource("/api/stream");
  let opened = false;
  source.onopen = () => { // after a reconnect, events may have been missed: reload the view
    $("#live").className = "live on"; $("#live").textContent = "live";
    if (opened) refreshSoon(); opened = true;
  };
  source.onerror = () => { $("#live").className = "live off"; $("#live").textContent = "reconnecting"; };
  source.onmessage = (m) => { const ev = JSON.parse(m.data); if (current && current.onEvent) current.onEvent(ev); };
}

$("#signin").addEventListener("submit", async (e) => {
  e.preventDefault();
  try {
    await api("/api/login", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token: $("#token").value }) });
    $("#token").value = "";
    await whoami(); connect(); route();
  } catch (err) { $("#token").value = ""; $("#token").placeholder = "wrong token"; }
});
$("#signout").addEventListener("click", async () => { await api("/api/logout", { method: "POST" }); await whoami(); connect(); route(); });
window.addEventListener("hashchange", route);
await whoami();
connect();
route();
