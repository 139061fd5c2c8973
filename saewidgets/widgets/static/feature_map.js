// FeatureMap view: a 2-D (UMAP) scatter of every feature on a canvas, sized for 16k+ points.
// Traits: coords (float32 bytes [F, 2]), clusters (int32 bytes [F] or empty), density (float32 bytes [F] or empty),
// color_by ("cluster" | "density"), selected (int, -1 = none), highlight (int[]: the selected feature's
// neighbourhood), lasso (int[]: features inside the last lasso), query (string: a text search for Python),
// search_results (int[]) and search_labels (string[]: one line per result), message (string), height (px),
// bookmarks ([{label, feature}]: named features as links). Search and lasso results are listed, ranked and
// clickable, under the toolbar.
// Click selects the nearest point; drag draws a lasso; shift-drag pans; the wheel zooms around the cursor only
// with Ctrl/⌘/Alt held or after a click into the map (so scrolling the page never zooms it); double-click
// resets the view (and selects nothing).

const SAEW_CLUSTER_COLORS = [
  "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
  "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
];
const SAEW_RAMP = [
  "#440154", "#482173", "#433e85", "#38598c", "#2d708e", "#25858e", "#1e9b8a", "#2ab07f", "#52c569", "#86d549",
  "#c2df23", "#fde725",
];
const SAEW_DEAD = "#d0d0d0";
// A click waits this long before selecting, so that a double-click (reset the view) selects nothing.
const SAEW_DBLCLICK_MS = 250;

function featureMapRender({ model, el }) {
  const root = saewEl("div", "saew-root saew-map");
  el.appendChild(root);
  const tooltip = saewTooltip(root);
  const bar = saewEl("div", "saew-toolbar");
  const search = saewEl("input", "saew-map-search");
  search.type = "search";
  search.placeholder = saewIsStatic(model) ? "feature id, Enter" : "feature id or text, Enter";
  const colorSel = saewEl("select", "saew-map-color");
  for (const c of ["cluster", "density"]) {
    const o = saewEl("option", "", `colour: ${c}`);
    o.value = c;
    colorSel.appendChild(o);
  }
  const info = saewEl("span", "saew-muted saew-map-info");
  bar.append(search, colorSel, info);
  const marks = saewEl("div", "saew-map-bookmarks");
  const msg = saewEl("div", "saew-map-message");
  const results = saewEl("div", "saew-map-results");
  const wrap = saewEl("div", "saew-map-canvas-wrap");
  const base = saewEl("canvas", "saew-map-canvas");
  const over = saewEl("canvas", "saew-map-overlay");
  wrap.append(base, over);
  root.append(bar, marks, msg, results, wrap);
  let lassoShown = true;  // the lasso list, until closed or a new lasso
  function paintResults() {
    results.replaceChildren();
    const hits = model.get("search_results") || [], labels = model.get("search_labels") || [];
    const lasso = model.get("lasso") || [];
    let title = "", items = [];
    if (hits.length) {
      title = `Search: ${hits.length} feature${hits.length > 1 ? "s" : ""}, best first`;
      items = hits.map((f, k) => [f, labels[k] || ""]);
    } else if (lasso.length && lassoShown) {
      const d = saewF32(model.get("density"));
      const ranked = lasso.slice().sort((a, b) => (d.length === F ? d[b] - d[a] : a - b));
      title = `Lasso: ${lasso.length} feature${lasso.length > 1 ? "s" : ""}, densest first`;
      items = ranked.slice(0, 100).map((f) => [f, d.length === F ? `fires on ${saewSig(d[f] * 100, 3)}%` : ""]);
      if (lasso.length > 100) items.push([-1, `… and ${lasso.length - 100} more`]);
    }
    results.style.display = items.length ? "" : "none";
    if (!items.length) return;
    const head = saewEl("div", "saew-map-results-head");
    head.appendChild(saewEl("span", "saew-subhead", title));
    const close = saewEl("button", "saew-button saew-map-results-close", "×");
    close.title = "Close this list";
    close.addEventListener("click", () => {
      if (hits.length) { search.value = ""; model.set("search_results", []); model.set("search_labels", []); model.save_changes(); }
      else lassoShown = false;
      paintResults();
    });
    head.appendChild(close);
    const list = saewEl("ol", "saew-map-results-list");
    const sel = model.get("selected");
    for (const [f, label] of items) {
      const li = saewEl("li", f === sel ? "saew-map-result saew-map-result-selected" : "saew-map-result");
      if (f >= 0) {
        const a = saewEl("a", "saew-map-result-link", `#${f}`);
        a.href = "#";
        a.dataset.feature = String(f);
        li.appendChild(a);
      }
      if (label) li.appendChild(saewEl("span", "saew-muted saew-map-result-label", ` ${label}`));
      list.appendChild(li);
    }
    results.append(head, list);
  }
  results.addEventListener("click", (ev) => {
    const t = ev.target;
    if (t && t.dataset && t.dataset.feature !== undefined) {
      ev.preventDefault();
      select(Number(t.dataset.feature));
    }
  });
  function paintBookmarks() {
    marks.replaceChildren();
    for (const b of model.get("bookmarks") || []) {
      const a = saewEl("a", "saew-map-bookmark", `${b.label} #${b.feature}`);
      a.href = "#";
      a.dataset.feature = String(b.feature);
      marks.appendChild(a);
    }
  }
  marks.addEventListener("click", (ev) => {
    const t = ev.target;
    if (t && t.dataset && t.dataset.feature !== undefined) {
      ev.preventDefault();
      select(Number(t.dataset.feature));
    }
  });

  // Neighbour lines are drawn up to this distance on the map (1 = the map's extent): a tenth of it.
  const SAEW_NEAR_ON_MAP = 0.1;
  let F = 0, nx = new Float32Array(0), ny = new Float32Array(0);
  let colorIdx = new Uint16Array(0), palette = [], order = new Uint32Array(0);
  let sx = new Float32Array(0), sy = new Float32Array(0);
  let W = 400, H = 400, dpr = 1;
  const cam = { z: 1, cx: 0.5, cy: 0.5 };

  function loadData() {
    const c = saewF32(model.get("coords"));
    F = Math.floor(c.length / 2);
    nx = new Float32Array(F); ny = new Float32Array(F);
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let i = 0; i < F; i++) {
      const x = c[2 * i], y = c[2 * i + 1];
      if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
    }
    const span = Math.max(x1 - x0, y1 - y0) || 1;
    const ox = (span - (x1 - x0)) / 2, oy = (span - (y1 - y0)) / 2;
    for (let i = 0; i < F; i++) {
      nx[i] = (c[2 * i] - x0 + ox) / span;
      ny[i] = 1 - (c[2 * i + 1] - y0 + oy) / span;
    }
    sx = new Float32Array(F); sy = new Float32Array(F);
    loadColors();
  }
  function loadColors() {
    const by = model.get("color_by") || "cluster";
    colorSel.value = by;
    colorIdx = new Uint16Array(F);
    if (by === "density") {
      const d = saewF32(model.get("density"));
      palette = SAEW_RAMP.concat([SAEW_DEAD]);
      let lo = Infinity, hi = -Infinity;
      const logs = new Float32Array(F);
      for (let i = 0; i < F; i++) {
        const v = d.length === F && d[i] > 0 ? Math.log10(d[i]) : NaN;
        logs[i] = v;
        if (v === v) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      }
      const r = hi - lo || 1;
      for (let i = 0; i < F; i++) {
        const v = logs[i];
        colorIdx[i] = v === v ? Math.min(SAEW_RAMP.length - 1, Math.floor(((v - lo) / r) * SAEW_RAMP.length))
                              : SAEW_RAMP.length;
      }
    } else {
      const cl = saewI32(model.get("clusters"));
      palette = SAEW_CLUSTER_COLORS.concat([SAEW_DEAD]);
      for (let i = 0; i < F; i++) {
        const k = cl.length === F ? cl[i] : 0;
        colorIdx[i] = k < 0 ? SAEW_CLUSTER_COLORS.length : k % SAEW_CLUSTER_COLORS.length;
      }
    }
    // Draw order grouped by colour: one fillStyle switch per colour, not per point.
    const idx = Array.from({ length: F }, (_, i) => i);
    idx.sort((a, b) => colorIdx[a] - colorIdx[b]);
    order = Uint32Array.from(idx);
  }
  function project() {
    const s = (Math.min(W, H) - 24) * cam.z;
    for (let i = 0; i < F; i++) {
      sx[i] = (nx[i] - cam.cx) * s + W / 2;
      sy[i] = (ny[i] - cam.cy) * s + H / 2;
    }
  }
  function resize() {
    dpr = window.devicePixelRatio || 1;
    W = Math.max(200, wrap.clientWidth || 400);
    H = model.get("height") || 420;
    for (const cv of [base, over]) {
      cv.width = Math.round(W * dpr); cv.height = Math.round(H * dpr);
      cv.style.width = `${W}px`; cv.style.height = `${H}px`;
    }
    wrap.style.height = `${H}px`;
  }
  function drawBase() {
    project();
    const g = base.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, W, H);
    const r = F > 50000 ? 1.5 : F > 5000 ? 2.2 : 3.5;
    let last = -1;
    for (let k = 0; k < F; k++) {
      const i = order[k];
      if (colorIdx[i] !== last) { last = colorIdx[i]; g.fillStyle = palette[last]; }
      g.fillRect(sx[i] - r / 2, sy[i] - r / 2, r, r);
    }
    drawOverlay();
  }
  let lassoPath = null;
  function ring(g, i, rad, color, width) {
    g.beginPath();
    g.arc(sx[i], sy[i], rad, 0, 2 * Math.PI);
    g.strokeStyle = color; g.lineWidth = width; g.stroke();
  }
  function drawOverlay() {
    const g = over.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, W, H);
    const ink = getComputedStyle(root).color || "#333";
    if (lassoShown) for (const i of model.get("lasso") || []) if (i >= 0 && i < F) ring(g, i, 3.5, "rgba(120,120,120,0.9)", 1);
    for (const i of model.get("search_results") || []) if (i >= 0 && i < F) ring(g, i, 5, "#1f77b4", 1.5);
    const hl = model.get("highlight") || [];
    const sel = model.get("selected");
    let far = 0;
    if (sel >= 0 && sel < F && hl.length) {
      // Decoder-cosine neighbours can lie anywhere on the map (a 2-D map keeps few 10-neighbourhoods whole, see
      // map_quality in benchmarks/README.md). A line goes only to a neighbour that is also near on the map, fading with its
      // length; far ones keep their ring and are counted in the info line, so no line crosses the map.
      g.lineWidth = 1.2;
      for (const i of hl) {
        if (i < 0 || i >= F || i === sel) continue;
        const d = Math.hypot(nx[i] - nx[sel], ny[i] - ny[sel]) / SAEW_NEAR_ON_MAP; // map units: zoom-independent
        if (d > 1) { far++; continue; }
        g.strokeStyle = `rgba(214,39,40,${(0.15 + 0.65 * (1 - d)).toFixed(3)})`;
        g.beginPath(); g.moveTo(sx[sel], sy[sel]); g.lineTo(sx[i], sy[i]); g.stroke();
      }
    }
    for (const i of hl) if (i >= 0 && i < F) ring(g, i, 4, ink, 1.5);
    if (sel >= 0 && sel < F) {
      ring(g, sel, 7, "#d62728", 2.5);
      g.font = "12px sans-serif"; g.fillStyle = getComputedStyle(wrap).color || "#d62728";
      g.fillText(`#${sel}`, sx[sel] + 9, sy[sel] - 8);
    }
    if (lassoPath && lassoPath.length > 1) {
      g.beginPath(); g.moveTo(lassoPath[0][0], lassoPath[0][1]);
      for (const p of lassoPath) g.lineTo(p[0], p[1]);
      g.closePath();
      g.setLineDash([4, 3]); g.strokeStyle = "#555"; g.lineWidth = 1; g.stroke(); g.setLineDash([]);
      g.fillStyle = "rgba(100,100,100,0.08)"; g.fill();
    }
    const lasso = model.get("lasso") || [];
    info.textContent = `${F} features` + (sel >= 0 ? ` · selected #${sel}` : "") +
      (far ? ` · ${far} of ${hl.length} neighbours far on the map (no line)` : "") +
      (lasso.length ? ` · lasso ${lasso.length}` : "");
    msg.textContent = model.get("message") || "";
  }
  function nearest(x, y, maxDist) {
    let best = -1, bd = maxDist * maxDist;
    for (let i = 0; i < F; i++) {
      const dx = sx[i] - x, dy = sy[i] - y, d = dx * dx + dy * dy;
      if (d < bd) { bd = d; best = i; }
    }
    return best;
  }
  function inPolygon(x, y, poly) {
    let inside = false;
    for (let a = 0, b = poly.length - 1; a < poly.length; b = a++) {
      const [xa, ya] = poly[a], [xb, yb] = poly[b];
      if ((ya > y) !== (yb > y) && x < ((xb - xa) * (y - ya)) / (yb - ya) + xa) inside = !inside;
    }
    return inside;
  }
  function select(i) {
    model.set("selected", i);
    model.save_changes();
  }
  function local(ev) {
    const r = over.getBoundingClientRect();
    return [ev.clientX - r.left, ev.clientY - r.top];
  }
  let down = null, hoverQueued = null, pan = null, active = false, clickTimer = null;
  over.title = "click: select · drag: lasso · shift-drag: pan · Ctrl+wheel (or click first): zoom · double-click: reset";
  wrap.addEventListener("pointerleave", () => { active = false; });
  over.addEventListener("pointerdown", (ev) => {
    active = true;
    over.setPointerCapture(ev.pointerId);
    if (ev.shiftKey || ev.button === 1) {
      pan = { p: local(ev), cx: cam.cx, cy: cam.cy };
      return;
    }
    down = local(ev);
    lassoPath = [down];
  });
  over.addEventListener("pointermove", (ev) => {
    const p = local(ev);
    if (pan) {
      const s = (Math.min(W, H) - 24) * cam.z;
      cam.cx = pan.cx - (p[0] - pan.p[0]) / s;
      cam.cy = pan.cy - (p[1] - pan.p[1]) / s;
      drawBase();
      return;
    }
    if (down) {
      lassoPath.push(p);
      drawOverlay();
      return;
    }
    hoverQueued = [p, ev.clientX, ev.clientY];
    requestAnimationFrame(() => {
      if (!hoverQueued) return;
      const [[x, y], cx, cy] = hoverQueued;
      hoverQueued = null;
      const i = nearest(x, y, 8);
      if (i < 0) { tooltip.hide(); over.style.cursor = "crosshair"; return; }
      over.style.cursor = "pointer";
      // A host whose labels already name each point (the FamilyMap: "SAE 512 · feature #3") sets hover_ids false:
      // its point index and colour group are not feature ids or clusters.
      const ids = model.get("hover_ids") !== false;
      const lines = ids ? [`feature #${i}`] : [];
      const cl = saewI32(model.get("clusters")), d = saewF32(model.get("density"));
      if (ids && cl.length === F) lines.push(`cluster ${cl[i]}`);
      if (d.length === F) lines.push(`density ${saewFmt(d[i] * 100, 4)}%`);
      const label = (model.get("labels") || [])[i];
      if (label) lines.push(label);
      tooltip.show(cx, cy, lines);
    });
  });
  over.addEventListener("pointerleave", () => tooltip.hide());
  over.addEventListener("pointerup", (ev) => {
    if (pan) { pan = null; return; }
    if (!down) return;
    const path = lassoPath || [];
    const start = down;
    down = null;
    lassoPath = null;
    let xmin = Infinity, xmax = -Infinity, ymin = Infinity, ymax = -Infinity;
    for (const [x, y] of path) {
      xmin = Math.min(xmin, x); xmax = Math.max(xmax, x);
      ymin = Math.min(ymin, y); ymax = Math.max(ymax, y);
    }
    if (path.length < 3 || (xmax - xmin < 5 && ymax - ymin < 5)) {
      // A click selects once the double-click window has passed (a double-click only resets the view).
      const i = nearest(start[0], start[1], 10);
      drawOverlay();
      clearTimeout(clickTimer);
      if (i >= 0) clickTimer = setTimeout(() => select(i), SAEW_DBLCLICK_MS);
      return;
    }
    const inside = [];
    for (let i = 0; i < F; i++) {
      if (sx[i] < xmin || sx[i] > xmax || sy[i] < ymin || sy[i] > ymax) continue;
      if (inPolygon(sx[i], sy[i], path)) inside.push(i);
    }
    // The lassoed feature with the highest density becomes the selection (the most active one to read first).
    const d = saewF32(model.get("density"));
    let best = inside.length ? inside[0] : -1;
    if (d.length === F) for (const i of inside) if (d[i] > d[best]) best = i;
    lassoShown = true;
    model.set("lasso", inside);
    if (best >= 0) model.set("selected", best);
    model.save_changes();
    drawOverlay();
  });
  over.addEventListener("wheel", (ev) => {
    if (!(active || ev.ctrlKey || ev.metaKey || ev.altKey)) {
      hint.style.display = "";
      clearTimeout(hintTimer);
      hintTimer = setTimeout(() => { hint.style.display = "none"; }, 1500);
      return;  // the page scrolls
    }
    ev.preventDefault();
    const [x, y] = local(ev);
    const s = (Math.min(W, H) - 24) * cam.z;
    const dataX = (x - W / 2) / s + cam.cx, dataY = (y - H / 2) / s + cam.cy;
    cam.z = Math.max(0.5, Math.min(200, cam.z * Math.exp(-ev.deltaY * 0.0015)));
    const s2 = (Math.min(W, H) - 24) * cam.z;
    cam.cx = dataX - (x - W / 2) / s2;
    cam.cy = dataY - (y - H / 2) / s2;
    drawBase();
  }, { passive: false });
  over.addEventListener("dblclick", () => {
    clearTimeout(clickTimer);
    cam.z = 1; cam.cx = 0.5; cam.cy = 0.5; drawBase();
  });
  const hint = saewEl("div", "saew-map-hint", "Ctrl + wheel to zoom (or click the map first)");
  hint.style.display = "none";
  wrap.appendChild(hint);
  let hintTimer = null;
  search.addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter") return;
    const q = search.value.trim();
    const m = /^#?(\d+)$/.exec(q);
    if (m) {
      const i = Number(m[1]);
      if (i < F) { model.set("message", ""); select(i); }
      else { model.set("message", `No feature #${i} (this map has ${F} features).`); drawOverlay(); }
      return;
    }
    if (saewIsStatic(model)) {
      model.set("message", "Text search needs a running kernel; search by feature id here.");
      drawOverlay();
      return;
    }
    // A message rather than only the `query` trait, so that repeating the same search runs it again.
    model.send({ event: "search", query: q });
  });
  // A selection made elsewhere clears a search it is not part of, so the box never shows a stale query.
  function selectionChanged() {
    const sel = model.get("selected");
    const hits = model.get("search_results") || [];
    if (search.value && hits.indexOf(sel) < 0 && document.activeElement !== search) search.value = "";
  }
  colorSel.addEventListener("change", () => { model.set("color_by", colorSel.value); model.save_changes(); });
  // Test and scripting hook: screen position (relative to the canvas) of feature i.
  root.saewScreenOf = (i) => [sx[i], sy[i]];

  function full() { resize(); loadData(); drawBase(); paintBookmarks(); }
  full();
  const ro = typeof ResizeObserver !== "undefined" ? new ResizeObserver(() => {
    const w = Math.max(200, wrap.clientWidth || 400);
    if (Math.abs(w - W) > 1) { resize(); drawBase(); }
  }) : null;
  if (ro) ro.observe(wrap);
  const offs = [
    saewOn(model, ["coords", "clusters", "density", "height"], saewDebounced(full)),
    saewOn(model, ["bookmarks"], paintBookmarks),
    saewOn(model, ["color_by"], saewDebounced(() => { loadColors(); drawBase(); })),
    saewOn(model, ["selected", "highlight", "lasso", "search_results", "message"], saewDebounced(drawOverlay)),
    saewOn(model, ["selected", "lasso", "search_results", "search_labels", "density"], saewDebounced(paintResults)),
    saewOn(model, ["selected"], selectionChanged),
  ];
  paintResults();
  // Labels and rings on the canvas take the theme's colours when they are drawn: draw again when it changes.
  const offScheme = saewFollowScheme(root, () => { if (F) drawOverlay(); });
  return () => { offs.forEach((f) => f()); if (ro) ro.disconnect(); offScheme(); };
}

const view = { render: featureMapRender };
export default view;
