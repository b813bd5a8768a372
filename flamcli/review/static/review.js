// flam review: the page. Plain JavaScript, no library; every text from the folder is set with
// textContent (file names and labels are data, never markup).
"use strict";

(function () {
  const token = new URLSearchParams(location.search).get("token") || "";
  const COLORS = ["#5aa9ff", "#ffb454", "#c792ea", "#7fd962", "#ff6b9e", "#4dd0e1", "#f07178", "#e6c07b"];
  const STATUS_COLORS = { accepted: "#3ecf8e", rejected: "#ff6b6b", pending: null };
  const CONTEXT = 0.5;  // seconds played before and after an event
  const EDGE = 6;  // pixels within which a drag takes an event's boundary
  const NUDGE = 0.1;  // seconds per [ ] { } key
  const SPEC_H = 150, GAP = 8, AXIS_H = 20;

  const $ = (id) => document.getElementById(id);
  const canvas = $("canvas"), ctx = canvas.getContext("2d");
  const strip = $("overview"), sctx = strip.getContext("2d");
  const player = $("player");

  // Everything the page knows; window.flamReview lets tests and the curious look inside.
  const S = {
    files: [], file: null, selected: null, view: { start: 0, end: 1 },
    overview: null, tile: null, ready: false, loads: 0, saving: 0,
    drag: null, pendingAdd: null, lastPlayback: null, playhead: null, errors: [],
    busy: 0,  // decisions queued or in flight
  };
  window.flamReview = S;
  // Decisions run one after another, each built from the state the previous one left, so a
  // quick "a a a" accepts three events instead of racing on the first.
  let queue = Promise.resolve();
  function enqueue(task) {
    S.busy++;
    queue = queue.then(task).catch(() => {}).finally(() => { S.busy--; });
    return queue;
  }

  // -- server -------------------------------------------------------------------------------
  function url(path, params) {
    const q = new URLSearchParams(Object.assign({ token }, params || {}));
    return path + "?" + q.toString();
  }
  async function getJSON(path, params) {
    const response = await fetch(url(path, params), { headers: { "X-Flam-Token": token } });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || response.statusText);
    return body;
  }
  async function post(path, body) {
    S.saving++;
    showSaved("saving…", "");
    try {
      const response = await fetch(url(path), {
        method: "POST", body: JSON.stringify(body),
        headers: { "Content-Type": "application/json", "X-Flam-Token": token },
      });
      const answer = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(answer.error || response.statusText);
      showSaved("saved ✓ " + new Date().toLocaleTimeString(), "ok");
      return answer;
    } catch (error) {
      S.errors.push(String(error.message || error));
      showSaved("not saved: " + (error.message || error), "error");
      throw error;
    } finally {
      S.saving--;
    }
  }
  function showSaved(text, kind) {
    const el = $("saved");
    el.textContent = text;
    el.className = kind;
  }

  // -- files ----------------------------------------------------------------------------------
  async function loadFiles() {
    const data = await getJSON("/api/files");
    S.files = data.files;
    $("folder").textContent = data.folder;
    if (data.problems && data.problems.length) {
      $("problems").hidden = false;
      $("problems").textContent = data.problems.join("\n");
    }
    renderFiles();
    S.listShownAt = performance.now();  // ms since the page was requested (bench/bench_review.py)
    const wanted = new URLSearchParams(location.hash.slice(1));
    let stem = wanted.get("file"), event = wanted.get("event");
    if (!stem && data.resume) { stem = data.resume.file; event = data.resume.event; }
    if (!S.files.some((f) => f.stem === stem)) {
      const next = S.files.find((f) => f.audio && f.pending > 0) || S.files.find((f) => f.audio) || S.files[0];
      stem = next && next.stem; event = null;
    }
    if (stem) await openFile(stem, event);
  }

  function renderFiles() {
    const list = $("file-list");
    const filter = $("file-filter").value.toLowerCase();
    list.textContent = "";
    let decided = 0, total = 0, done = 0;
    for (const f of S.files) {
      decided += f.events - f.pending; total += f.events;
      if (f.pending === 0) done++;
      if (filter && !f.file.toLowerCase().includes(filter)) continue;
      const li = document.createElement("li");
      li.dataset.stem = f.stem;
      if (S.file && f.stem === S.file.stem) li.classList.add("current");
      if (f.pending === 0) li.classList.add("done");
      if (!f.audio) { li.classList.add("missing"); li.title = "audio file moved or deleted"; }
      const name = document.createElement("span");
      name.className = "name"; name.textContent = f.file; name.title = f.file;
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = f.events === 0 ? "no events" : f.pending === 0 ? `✓ ${f.events} decided`
        : `${f.events - f.pending}/${f.events} decided`;
      li.append(name, count);
      li.addEventListener("click", () => openFile(f.stem));
      list.append(li);
    }
    $("progress").textContent = `${done}/${S.files.length} files done · ${decided}/${total} events decided`;
  }

  function updateSummary(view) {
    const f = S.files.find((x) => x.stem === view.stem);
    if (f) Object.assign(f, { events: view.events.length, pending: view.pending, accepted: view.accepted });
    renderFiles();
  }

  async function openFile(stem, eventId) {
    const f = S.files.find((x) => x.stem === stem);
    if (!f) return;
    const began = performance.now();
    S.ready = false;
    cancelAdd();
    // The picture and the events load side by side.
    const img = new Image();
    const pictureLoaded = !f.audio ? Promise.resolve() : new Promise((resolve) => {
      img.onload = resolve;
      img.onerror = () => { S.errors.push("spectrogram failed"); resolve(); };
      img.src = url("/api/spectrogram", { file: stem, width: 2048 });
    });
    const view = await getJSON("/api/file", { file: stem });
    S.file = view; S.tile = null; S.overview = null; S.selected = null;
    S.view = { start: 0, end: Math.max(view.duration, 1e-3) };
    $("file-name").textContent = view.file;
    $("file-name").title = view.file;
    $("file-meta").textContent = `${fmtDuration(view.duration)} · ${view.sample_rate} Hz · ${view.events.length} events`;
    const datalist = $("query-list");
    datalist.textContent = "";
    for (const q of view.queries) { const o = document.createElement("option"); o.value = q; datalist.append(o); }
    renderLegend();
    renderFiles();
    renderTable();
    if (!f.audio) { S.ready = true; S.loads++; draw(); return; }
    await pictureLoaded;
    if (!S.file || S.file.stem !== stem) return;
    S.overview = img.naturalWidth ? img : null;
    const target = eventId && view.events.find((e) => e.id === eventId);
    if (target) select(target.id, { zoom: true });
    else if (view.events.length) select(firstPending() || view.events[0].id, { zoom: false });
    else updateEditor();
    draw();
    S.ready = true; S.loads++;
    S.openedAt = performance.now(); S.openMs = S.openedAt - began;
  }

  function firstPending() {
    const e = S.file.events.find((x) => x.status === "pending");
    return e && e.id;
  }

  // -- geometry ---------------------------------------------------------------------------
  function size(c) {
    const ratio = window.devicePixelRatio || 1;
    const w = c.clientWidth, h = c.clientHeight;
    if (c.width !== Math.round(w * ratio) || c.height !== Math.round(h * ratio)) {
      c.width = Math.round(w * ratio); c.height = Math.round(h * ratio);
    }
    c.getContext("2d").setTransform(ratio, 0, 0, ratio, 0, 0);
    return { w, h };
  }
  S.timeToX = (t) => xOf(t, canvas.clientWidth);  // CSS pixels from the canvas' left edge
  const xOf = (t, w) => ((t - S.view.start) / (S.view.end - S.view.start)) * w;
  const tOf = (x, w) => S.view.start + (x / w) * (S.view.end - S.view.start);
  function probTop() { return SPEC_H + GAP; }
  function probBottom(h) { return h - AXIS_H; }

  // -- drawing ------------------------------------------------------------------------------
  function draw() {
    const { w, h } = size(canvas);
    ctx.fillStyle = "#000"; ctx.fillRect(0, 0, w, h);
    if (!S.file) return;
    drawSpectrogram(w);
    drawCurves(w, h);
    drawEvents(w, h);
    drawAxis(w, h);
    drawStrip();
    S.drawn = (S.drawn || 0) + 1;
  }

  function drawSpectrogram(w) {
    const d = S.file.duration;
    if (S.tile && S.tile.start === S.view.start && S.tile.end === S.view.end) {
      ctx.drawImage(S.tile.img, 0, 0, w, SPEC_H);
    } else if (S.overview) {
      const iw = S.overview.naturalWidth;
      const sx = (S.view.start / d) * iw, sw = Math.max(((S.view.end - S.view.start) / d) * iw, 0.5);
      ctx.imageSmoothingEnabled = true;
      ctx.drawImage(S.overview, sx, 0, sw, S.overview.naturalHeight, 0, 0, w, SPEC_H);
    } else {
      ctx.fillStyle = "#333"; ctx.font = "13px system-ui";
      ctx.fillText(S.file.audio ? "loading spectrogram…" : "audio file moved or deleted", 12, 24);
    }
  }

  function drawCurves(w, h) {
    const top = probTop(), bottom = probBottom(h), height = bottom - top;
    ctx.fillStyle = "#0d0f12"; ctx.fillRect(0, top, w, height);
    ctx.strokeStyle = "#2e333c"; ctx.lineWidth = 1;
    for (const v of [0.25, 0.5, 0.75]) {
      const y = bottom - v * height; ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(w, y); ctx.stroke();
    }
    const scores = S.file.scores || {};
    const times = scores.times || [], step = scores.step || 0;
    S.file.queries.forEach((q, i) => {
      const color = COLORS[i % COLORS.length];
      const threshold = S.file.thresholds[q];
      if (threshold !== undefined) {
        const y = bottom - threshold * height;
        ctx.setLineDash([5, 4]); ctx.strokeStyle = color; ctx.globalAlpha = 0.7;
        ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(w, y); ctx.stroke();
        ctx.setLineDash([]); ctx.globalAlpha = 1;
      }
      const values = (scores.curves || {})[q];
      if (!values || !values.length) return;
      ctx.strokeStyle = color; ctx.lineWidth = 1.5; ctx.beginPath();
      let first = true;
      // Only the visible frames (binary search for the first), drawn as steps.
      let lo = 0, hi = times.length;
      while (lo < hi) { const mid = (lo + hi) >> 1; if (times[mid] + step < S.view.start) lo = mid + 1; else hi = mid; }
      for (let k = lo; k < times.length && times[k] <= S.view.end; k++) {
        const x0 = xOf(times[k], w), x1 = xOf(times[k] + step, w), y = bottom - values[k] * height;
        if (first) { ctx.moveTo(x0, y); first = false; } else ctx.lineTo(x0, y);
        ctx.lineTo(x1, y);
      }
      ctx.stroke(); ctx.lineWidth = 1;
    });
  }

  function drawEvents(w, h) {
    const bottom = probBottom(h);
    const queryIndex = (label) => S.file.queries.indexOf(label);
    for (const e of S.file.events) {
      if (e.offset < S.view.start || e.onset > S.view.end) continue;
      const x0 = xOf(e.onset, w), x1 = Math.max(xOf(e.offset, w), x0 + 1);
      const qi = queryIndex(e.label);
      const base = STATUS_COLORS[e.status] || (qi >= 0 ? COLORS[qi % COLORS.length] : "#ffffff");
      ctx.globalAlpha = e.status === "rejected" ? 0.10 : 0.2;
      ctx.fillStyle = base; ctx.fillRect(x0, 0, x1 - x0, bottom);
      ctx.globalAlpha = 1;
      ctx.strokeStyle = base; ctx.lineWidth = 1;
      if (e.status === "pending") ctx.setLineDash([4, 3]);
      ctx.strokeRect(x0 + 0.5, 0.5, x1 - x0 - 1, bottom - 1);
      ctx.setLineDash([]);
      ctx.fillStyle = base; ctx.fillRect(x0, 0, x1 - x0, 4);
      if (x1 - x0 > 30) {
        ctx.font = "12px system-ui"; ctx.fillStyle = "#fff";
        const mark = e.status === "accepted" ? "✓ " : e.status === "rejected" ? "✗ " : "";
        ctx.save(); ctx.beginPath(); ctx.rect(x0, 0, x1 - x0, 24); ctx.clip();
        ctx.fillText(mark + e.label, x0 + 4, 17); ctx.restore();
      }
      if (e.id === S.selected) {
        ctx.strokeStyle = "#fff"; ctx.lineWidth = 2;
        ctx.strokeRect(x0 + 1, 1, x1 - x0 - 2, bottom - 2);
        ctx.fillStyle = "#fff";
        ctx.fillRect(x0 - 3, bottom / 2 - 12, 6, 24); ctx.fillRect(x1 - 3, bottom / 2 - 12, 6, 24);
        ctx.lineWidth = 1;
      }
    }
    const r = S.drag && S.drag.kind === "region" ? S.drag : S.pendingAdd;
    if (r) {
      const x0 = xOf(Math.min(r.t0, r.t1), w), x1 = xOf(Math.max(r.t0, r.t1), w);
      ctx.fillStyle = "rgba(90,169,255,0.25)"; ctx.fillRect(x0, 0, x1 - x0, bottom);
      ctx.strokeStyle = "#5aa9ff"; ctx.strokeRect(x0 + 0.5, 0.5, x1 - x0 - 1, bottom - 1);
    }
    if (S.playhead !== null) {
      const x = xOf(S.playhead, w);
      ctx.strokeStyle = "#fff"; ctx.beginPath(); ctx.moveTo(x, 0); ctx.lineTo(x, bottom); ctx.stroke();
    }
  }

  function drawAxis(w, h) {
    const span = S.view.end - S.view.start;
    const steps = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];
    const step = steps.find((s) => (s / span) * w >= 80) || 7200;
    ctx.fillStyle = "#9aa2ad"; ctx.strokeStyle = "#555"; ctx.font = "11px system-ui";
    const y = h - AXIS_H;
    for (let t = Math.ceil(S.view.start / step) * step; t <= S.view.end; t += step) {
      const x = xOf(t, w);
      ctx.beginPath(); ctx.moveTo(x, y); ctx.lineTo(x, y + 5); ctx.stroke();
      ctx.fillText(fmtTime(t, step), x + 2, y + 15);
    }
  }

  function drawStrip() {
    const { w, h } = size(strip);
    sctx.fillStyle = "#000"; sctx.fillRect(0, 0, w, h);
    if (!S.file) return;
    const d = S.file.duration;
    if (S.overview) sctx.drawImage(S.overview, 0, 0, w, h);
    for (const e of S.file.events) {
      sctx.fillStyle = STATUS_COLORS[e.status] || "#ffcc66";
      sctx.fillRect((e.onset / d) * w, h - 6, Math.max(((e.offset - e.onset) / d) * w, 2), 6);
    }
    const x0 = (S.view.start / d) * w, x1 = (S.view.end / d) * w;
    sctx.strokeStyle = "#fff"; sctx.lineWidth = 1.5;
    sctx.strokeRect(x0 + 0.75, 0.75, Math.max(x1 - x0 - 1.5, 2), h - 1.5);
  }

  function renderLegend() {
    const legend = $("legend");
    legend.textContent = "";
    S.file.queries.forEach((q, i) => {
      const item = document.createElement("span");
      const swatch = document.createElement("span");
      swatch.className = "swatch"; swatch.style.background = COLORS[i % COLORS.length];
      const threshold = S.file.thresholds[q];
      item.append(swatch, document.createTextNode(`${q}` + (threshold !== undefined ? ` (threshold ${threshold})` : "")));
      legend.append(item);
    });
    if (S.file.scores && S.file.scores.error) {
      const warn = document.createElement("span");
      warn.textContent = "curves unavailable: " + S.file.scores.error;
      legend.append(warn);
    }
  }

  function renderTable() {
    const body = document.querySelector("#events tbody");
    body.textContent = "";
    S.file.events.forEach((e, n) => {
      const tr = document.createElement("tr");
      tr.dataset.id = e.id;
      if (e.id === S.selected) tr.classList.add("selected");
      const cells = [String(n + 1) + (e.origin === "added" ? " +" : ""), e.onset.toFixed(3), e.offset.toFixed(3), e.label,
                     e.confidence === null ? "–" : e.confidence.toFixed(2), e.status];
      cells.forEach((text, i) => {
        const td = document.createElement("td"); td.textContent = text;
        if (i === 5) td.className = "status-" + e.status;
        tr.append(td);
      });
      tr.addEventListener("click", () => { select(e.id, { zoom: true }); play(); });
      body.append(tr);
    });
  }

  function updateEditor() {
    const e = selectedEvent();
    const has = !!e;
    for (const id of ["label", "accept", "reject", "play"]) $(id).disabled = !has || !S.file.audio && id === "play";
    $("selection").textContent = has
      ? `${e.origin === "added" ? "added" : "detected"} event ${fmtTime(e.onset)}–${fmtTime(e.offset)} (${(e.offset - e.onset).toFixed(2)} s) · ${e.status}`
      : "No event selected: drag on the picture to add one.";
    if (document.activeElement !== $("label")) $("label").value = has ? e.label : "";
  }

  // -- selection, view -----------------------------------------------------------------------
  function selectedEvent() { return S.file && S.file.events.find((e) => e.id === S.selected); }

  function select(id, { zoom } = {}) {
    S.selected = id;
    const e = selectedEvent();
    if (e && zoom) ensureVisible(e);
    const params = new URLSearchParams({ file: S.file.stem });
    if (id) params.set("event", id);
    history.replaceState(null, "", "#" + params.toString());
    updateEditor();
    for (const tr of document.querySelectorAll("#events tbody tr")) {
      tr.classList.toggle("selected", tr.dataset.id === id);
      if (tr.dataset.id === id) showRow(tr);
    }
    draw();
  }

  // Scroll the event list only (never the page: the picture must stay in sight).
  function showRow(tr) {
    const wrap = $("table-wrap"), head = wrap.querySelector("thead").offsetHeight;
    const top = tr.offsetTop, bottom = top + tr.offsetHeight;
    if (top - head < wrap.scrollTop) wrap.scrollTop = top - head;
    else if (bottom > wrap.scrollTop + wrap.clientHeight) wrap.scrollTop = bottom - wrap.clientHeight;
  }

  function ensureVisible(e) {
    const span = S.view.end - S.view.start, length = e.offset - e.onset;
    const inside = e.onset >= S.view.start && e.offset <= S.view.end;
    if (inside && length / span > 0.02) return;
    const want = Math.min(S.file.duration, Math.max(10, length * 3, inside ? 0 : span > 60 ? 0 : span));
    setView((e.onset + e.offset) / 2 - want / 2, want);
  }

  function setView(start, span) {
    const d = S.file.duration;
    span = Math.min(Math.max(span, 0.2), d);
    start = Math.min(Math.max(start, 0), d - span);
    S.view = { start, end: start + span };
    requestTile();
    draw();
  }

  let tileTimer = null;
  function requestTile() {
    clearTimeout(tileTimer);
    if (!S.file || !S.file.audio) return;
    const { start, end } = S.view;
    if ((end - start) / S.file.duration > 0.6) { S.tile = null; return; }
    tileTimer = setTimeout(() => {
      const width = Math.min(4096, Math.ceil((canvas.clientWidth * (window.devicePixelRatio || 1)) / 256) * 256);
      const img = new Image();
      const stem = S.file.stem;
      img.onload = () => {
        if (S.file && S.file.stem === stem && S.view.start === start && S.view.end === end) {
          S.tile = { img, start, end }; draw();
        }
      };
      img.src = url("/api/spectrogram", { file: stem, start: start.toFixed(4), end: end.toFixed(4), width });
    }, 120);
  }

  function zoom(factor, centre) {
    const span = S.view.end - S.view.start;
    const c = centre === undefined ? (S.view.start + S.view.end) / 2 : centre;
    const next = span * factor;
    setView(c - (c - S.view.start) * (next / span), next);
  }

  function neighbour(direction) {
    const events = S.file.events;
    if (!events.length) return;
    const index = events.findIndex((e) => e.id === S.selected);
    const next = index < 0 ? (direction > 0 ? 0 : events.length - 1) : Math.min(Math.max(index + direction, 0), events.length - 1);
    select(events[next].id, { zoom: true });
  }

  // -- playing --------------------------------------------------------------------------------
  function play() {
    const e = selectedEvent();
    if (!e || !S.file.audio) return;
    const start = Math.max(0, e.onset - CONTEXT), end = Math.min(S.file.duration, e.offset + CONTEXT);
    S.lastPlayback = { event: e.id, start, end, state: "loading" };
    player.src = url("/api/audio", { file: S.file.stem, start: start.toFixed(4), end: end.toFixed(4) });
    player.dataset.start = start;
    const attempt = player.play();
    if (attempt) attempt.catch((error) => {
      if (S.lastPlayback) S.lastPlayback.state = "error: " + error.message;
    });
  }
  player.addEventListener("playing", () => { if (S.lastPlayback) S.lastPlayback.state = "playing"; animate(); });
  player.addEventListener("ended", () => {
    if (S.lastPlayback) { S.lastPlayback.state = "ended"; S.lastPlayback.duration = player.duration; }
    S.playhead = null; draw();
  });
  player.addEventListener("error", () => { if (S.lastPlayback) S.lastPlayback.state = "error"; });
  function animate() {
    if (player.paused || player.ended) { S.playhead = null; draw(); return; }
    S.playhead = Number(player.dataset.start) + player.currentTime;
    draw();
    requestAnimationFrame(animate);
  }

  // -- decisions ------------------------------------------------------------------------------
  // Only from inside an enqueued task.
  async function decide(action, fields) {
    const e = selectedEvent();
    if (!e && action !== "add") return;
    const body = Object.assign({ file: S.file.stem, action, event: e ? e.id : null, expect: e || null }, fields || {});
    try {
      const answer = await post("/api/decision", body);
      applyView(answer.file);
      return answer.result;
    } catch (error) {
      if (/changed elsewhere/.test(String(error.message))) openFile(S.file.stem, S.selected);
    }
  }

  function applyView(view) {
    if (!S.file || view.stem !== S.file.stem) return;
    const scores = S.file.scores;
    S.file = Object.assign(view, { scores: view.scores || scores });
    updateSummary(view);
    renderTable();
    if (!selectedEvent()) S.selected = null;
    select(S.selected);
  }

  function accept(status) {
    enqueue(async () => {
      const e = selectedEvent();
      if (!e) return;
      if (!await decide(status === "accepted" ? "accept" : "reject")) return;
      const next = S.file.events.find((x) => x.status === "pending" && (x.onset > e.onset || (x.onset === e.onset && x.id > e.id)))
        || S.file.events.find((x) => x.status === "pending");
      if (next) select(next.id, { zoom: true });
    });
  }

  function undo() {
    if (S.file) enqueue(undoNow);
  }
  async function undoNow() {
    try {
      const answer = await post("/api/undo", { file: S.file.stem });
      if (answer.result) {
        applyView(answer.file);
        if (answer.result.after) select(answer.result.event, { zoom: true });
        showSaved("undone ✓", "ok");
      } else showSaved("nothing to undo", "");
    } catch (error) { /* shown by post */ }
  }

  function nudge(which, seconds) {
    enqueue(async () => {
      const e = selectedEvent();
      if (!e) return;
      const onset = which === "onset" ? e.onset + seconds : e.onset;
      const offset = which === "offset" ? e.offset + seconds : e.offset;
      if (offset - onset >= 0.01) await decide("move", { onset, offset });
    });
  }

  function relabel() {
    const text = $("label").value.trim();
    enqueue(async () => {
      const e = selectedEvent();
      if (e && text && text !== e.label) await decide("relabel", { label: text });
    });
  }

  function startAdd(t0, t1) {
    S.pendingAdd = { t0: Math.min(t0, t1), t1: Math.max(t0, t1) };
    $("add-bar").hidden = false;
    $("add-range").textContent = `New event ${fmtTime(S.pendingAdd.t0)}–${fmtTime(S.pendingAdd.t1)}`;
    const selectedLabel = selectedEvent() && selectedEvent().label;
    $("add-label").value = selectedLabel || S.file.queries[0] || "";
    $("add-label").focus(); $("add-label").select();
    draw();
  }
  function cancelAdd() {
    S.pendingAdd = null;
    $("add-bar").hidden = true;
    if (S.file) draw();
  }
  async function confirmAdd() {
    if (!S.pendingAdd) return;
    const label = $("add-label").value.trim();
    if (!label) { $("add-label").focus(); return; }
    const { t0, t1 } = S.pendingAdd;
    cancelAdd();
    canvas.focus();
    enqueue(async () => {
      const result = await decide("add", { onset: t0, offset: t1, label });
      if (result) select(result.event);
    });
  }

  // -- mouse ----------------------------------------------------------------------------------
  function hit(x, w) {
    const e = selectedEvent();
    if (e) {
      if (Math.abs(x - xOf(e.onset, w)) <= EDGE) return { kind: "onset", event: e };
      if (Math.abs(x - xOf(e.offset, w)) <= EDGE) return { kind: "offset", event: e };
    }
    const t = tOf(x, w);
    const under = S.file.events.filter((v) => v.onset <= t && t <= v.offset)
      .sort((a, b) => (a.offset - a.onset) - (b.offset - b.onset));
    return under.length ? { kind: "event", event: under[0] } : null;
  }

  canvas.addEventListener("mousedown", (ev) => {
    if (!S.file || ev.button !== 0) return;
    const w = canvas.clientWidth, x = ev.offsetX, t = tOf(x, w);
    const target = hit(x, w);
    canvas.focus();
    if (target && (target.kind === "onset" || target.kind === "offset")) {
      S.drag = { kind: target.kind, event: target.event, t: t, moved: false };
    } else {
      S.drag = { kind: "region", t0: t, t1: t, x0: x, target };
    }
    ev.preventDefault();
  });
  window.addEventListener("mousemove", (ev) => {
    if (!S.file) return;
    const rect = canvas.getBoundingClientRect(), w = canvas.clientWidth;
    const x = Math.min(Math.max(ev.clientX - rect.left, 0), w), t = tOf(x, w);
    if (!S.drag) {
      if (ev.target === canvas) {
        const target = hit(x, w);
        canvas.style.cursor = target && target.kind !== "event" ? "ew-resize" : target ? "pointer" : "crosshair";
      }
      return;
    }
    if (S.drag.kind === "region") { S.drag.t1 = t; S.drag.moved = Math.abs(x - S.drag.x0) > 4; draw(); return; }
    S.drag.moved = true;
    S.drag.t = Math.min(Math.max(t, 0), S.file.duration);
    const e = S.drag.event;
    S.drag.preview = S.drag.kind === "onset" ? { onset: Math.min(S.drag.t, e.offset - 0.01), offset: e.offset }
      : { onset: e.onset, offset: Math.max(S.drag.t, e.onset + 0.01) };
    const shown = S.file.events.find((v) => v.id === e.id);
    Object.assign(shown, S.drag.preview);
    draw();
  });
  window.addEventListener("mouseup", () => {
    const drag = S.drag;
    S.drag = null;
    if (!drag) return;
    if (drag.kind === "region") {
      if (drag.moved) startAdd(drag.t0, drag.t1);
      else if (drag.target) { select(drag.target.event.id); play(); }
      else draw();
      return;
    }
    if (drag.moved && drag.preview) {
      const body = { file: S.file.stem, action: "move", event: drag.event.id, expect: drag.original,
                     onset: drag.preview.onset, offset: drag.preview.offset };
      enqueue(() => post("/api/decision", body).then((answer) => applyView(answer.file))
        .catch(() => openFile(S.file.stem, body.event)));
    }
  });
  // Remember the event as it was before a boundary drag starts changing its shown copy.
  canvas.addEventListener("mousedown", () => {
    if (S.drag && S.drag.event) S.drag.original = Object.assign({}, S.drag.event);
  });
  canvas.addEventListener("wheel", (ev) => {
    if (!S.file) return;
    ev.preventDefault();
    const w = canvas.clientWidth;
    if (ev.shiftKey || Math.abs(ev.deltaX) > Math.abs(ev.deltaY)) {
      const span = S.view.end - S.view.start;
      setView(S.view.start + ((ev.deltaX || ev.deltaY) / w) * span, span);
    } else zoom(ev.deltaY > 0 ? 1.25 : 0.8, tOf(ev.offsetX, w));
  }, { passive: false });
  strip.addEventListener("mousedown", (ev) => {
    if (!S.file) return;
    const t = (ev.offsetX / strip.clientWidth) * S.file.duration, span = S.view.end - S.view.start;
    setView(t - span / 2, span);
  });

  // -- keys -----------------------------------------------------------------------------------
  document.addEventListener("keydown", (ev) => {
    if (!S.file) return;
    const typing = ev.target instanceof HTMLInputElement;
    if (typing) {
      if (ev.target === $("add-label")) {
        if (ev.key === "Enter") { ev.preventDefault(); confirmAdd(); }
        else if (ev.key === "Escape") { cancelAdd(); canvas.focus(); }
      } else if (ev.target === $("label")) {
        if (ev.key === "Enter") { ev.preventDefault(); relabel(); canvas.focus(); }
        else if (ev.key === "Escape") { updateEditor(); canvas.focus(); }
      }
      return;
    }
    if (ev.altKey || (ev.metaKey && ev.key !== "z")) return;
    if ((ev.ctrlKey || ev.metaKey) && ev.key === "z") { ev.preventDefault(); undo(); return; }
    if (ev.ctrlKey) return;
    const handled = {
      j: () => neighbour(1), ArrowDown: () => neighbour(1),
      k: () => neighbour(-1), ArrowUp: () => neighbour(-1),
      a: () => accept("accepted"), r: () => accept("rejected"), x: () => accept("rejected"),
      " ": () => play(), u: () => undo(),
      e: () => { if (selectedEvent()) { $("label").focus(); $("label").select(); } },
      "[": () => nudge("onset", -NUDGE), "]": () => nudge("onset", NUDGE),
      "{": () => nudge("offset", -NUDGE), "}": () => nudge("offset", NUDGE),
      n: () => moveFile(1), p: () => moveFile(-1),
      "+": () => zoom(0.5), "=": () => zoom(0.5), "-": () => zoom(2), "0": () => setView(0, S.file.duration),
      ArrowLeft: () => { const s = S.view.end - S.view.start; setView(S.view.start - s / 4, s); },
      ArrowRight: () => { const s = S.view.end - S.view.start; setView(S.view.start + s / 4, s); },
      Escape: () => { cancelAdd(); select(null); },
      "?": () => { $("keys").classList.toggle("flash"); $("keys").scrollIntoView({ block: "nearest" }); },
    }[ev.key];
    if (handled) { ev.preventDefault(); handled(); }
  });

  function moveFile(direction) {
    const visible = S.files.filter((f) => !$("file-filter").value || f.file.toLowerCase().includes($("file-filter").value.toLowerCase()));
    const index = visible.findIndex((f) => f.stem === S.file.stem);
    const next = visible[index + direction];
    if (next) openFile(next.stem);
  }

  // -- buttons ----------------------------------------------------------------------------------
  $("accept").addEventListener("click", () => accept("accepted"));
  $("reject").addEventListener("click", () => accept("rejected"));
  $("play").addEventListener("click", play);
  $("undo").addEventListener("click", undo);
  $("label").addEventListener("change", relabel);
  $("add-ok").addEventListener("click", confirmAdd);
  $("add-cancel").addEventListener("click", cancelAdd);
  $("zoom-in").addEventListener("click", () => zoom(0.5));
  $("zoom-out").addEventListener("click", () => zoom(2));
  $("zoom-all").addEventListener("click", () => S.file && setView(0, S.file.duration));
  $("help-button").addEventListener("click", () => { $("keys").classList.toggle("flash"); $("keys").scrollIntoView({ block: "nearest" }); });
  $("file-filter").addEventListener("input", renderFiles);
  // A clicked button would keep the focus, and the next space (play) would click it again.
  for (const button of document.querySelectorAll("main button")) {
    button.addEventListener("click", () => { if (S.file) canvas.focus(); });
  }
  window.addEventListener("resize", () => { requestTile(); draw(); });

  // -- formatting --------------------------------------------------------------------------------
  function fmtTime(t, step) {
    if (S.file && S.file.duration >= 60) {
      const h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), s = t % 60;
      const sec = step !== undefined && step >= 1 ? String(Math.round(s)).padStart(2, "0") : s.toFixed(step !== undefined && step < 0.1 ? 2 : 1).padStart(4, "0");
      return (h ? `${h}:${String(m).padStart(2, "0")}` : `${m}`) + ":" + sec;
    }
    return step !== undefined && step >= 1 ? `${t.toFixed(0)} s` : `${t.toFixed(2)} s`;
  }
  function fmtDuration(d) {
    if (d < 60) return `${d.toFixed(1)} s`;
    const h = Math.floor(d / 3600), m = Math.floor((d % 3600) / 60), s = Math.round(d % 60);
    return h ? `${h} h ${m} min` : `${m} min ${s} s`;
  }

  loadFiles().catch((error) => {
    S.errors.push(String(error.message || error));
    $("file-name").textContent = "Cannot load the review: " + (error.message || error);
  });
})();
