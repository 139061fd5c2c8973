// saewidgets shared front-end helpers.
//
// This file is prepended to every view's ESM (widget mode) and included once in the static HTML export, so it
// must not contain `export` or `import` statements. Every helper that shows a token string writes it with
// `textContent`: token strings are untrusted input and never go through innerHTML.

const SAEW_NS = "http://www.w3.org/2000/svg";

/** Create an element with an optional class and text (set as textContent, never parsed as HTML). */
function saewEl(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

/** Copy a DataView / ArrayBuffer / typed array into an aligned typed array of the given constructor. */
function saewTyped(value, Ctor) {
  if (!value) return new Ctor(0);
  if (value instanceof Ctor) return value;
  let buf, off, len;
  if (value instanceof ArrayBuffer) { buf = value; off = 0; len = value.byteLength; }
  else if (ArrayBuffer.isView(value)) { buf = value.buffer; off = value.byteOffset; len = value.byteLength; }
  else return new Ctor(0);
  const n = Math.floor(len / Ctor.BYTES_PER_ELEMENT);
  if (off % Ctor.BYTES_PER_ELEMENT === 0) return new Ctor(buf, off, n);
  return new Ctor(buf.slice(off, off + n * Ctor.BYTES_PER_ELEMENT));
}
function saewF32(value) { return saewTyped(value, Float32Array); }
function saewI32(value) { return saewTyped(value, Int32Array); }

/** Format a number compactly for labels. */
function saewFmt(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const d = digits === undefined ? 3 : digits;
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
  return Number(v).toFixed(d).replace(/\.?0+$/, "") || "0";
}

/** Make whitespace in a token visible: spaces stay, tabs show as ⇥, newlines as ⏎ (followed by a real line
 * break unless `inline`, as in one-line context rows). */
function saewTokenText(tok, inline) {
  const s = String(tok);
  if (s === "") return "∅";
  return s.replace(/\r?\n/g, inline ? "⏎" : "⏎\n").replace(/\t/g, "⇥");
}

/** Background colour for an activation: the theme's positive (orange) or negative (blue) heat colour, alpha ~
 * |v| / scale. The colour is a CSS variable, so tokens follow a theme switch without being recoloured. */
function saewActColor(v, scale) {
  if (!scale || !v) return "";
  const a = Math.max(0, Math.min(1, Math.abs(v) / scale));
  if (a < 0.02) return "";
  return `rgb(var(${v > 0 ? "--saew-heat-pos" : "--saew-heat-neg"}) / ${(0.12 + 0.78 * a).toFixed(3)})`;
}

/** Whether the colour `el` is drawn on is dark: the first mostly opaque background among its ancestors (across
 * shadow roots, as in marimo), by perceived brightness. null when nothing behind it is opaque. */
function saewBackdropIsDark(el) {
  const up = (e) => e.parentElement || (e.parentNode instanceof ShadowRoot ? e.parentNode.host : null);
  for (let e = up(el); e; e = up(e)) {
    const c = getComputedStyle(e).backgroundColor;
    const v = (c.match(/[\d.]+/g) || []).map(Number);
    if (v.length < 3 || (v.length > 3 && v[3] < 0.5)) continue;
    const k = c.startsWith("color(") ? 255 : 1;
    return (0.299 * v[0] + 0.587 * v[1] + 0.114 * v[2]) * k < 128;
  }
  return null;
}

/** Keep `root`'s data-saew-scheme ("light" | "dark", which picks the CSS palette) matching what it is drawn on:
 * once it is in the page, and again when the page may have changed theme (class, style or data-* of <html> or
 * <body>, e.g. JupyterLab's theme switch; the browser's colour scheme). `onChange` (optional) runs after each
 * such look, for what CSS cannot recolour (a canvas). Returns the cleanup. */
function saewFollowScheme(root, onChange) {
  const media = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
  let frame = 0, timers = [];
  const detect = () => {
    const dark = saewBackdropIsDark(root);
    root.dataset.saewScheme = (dark === null ? !!(media && media.matches) : dark) ? "dark" : "light";
    if (onChange) onChange();
  };
  const whenAttached = (tries) => {
    if (root.isConnected) detect();
    else if (tries > 0) frame = requestAnimationFrame(() => whenAttached(tries - 1));
  };
  // A host's theme styles may load after its attributes change: look again shortly after.
  const changed = () => { detect(); timers.forEach(clearTimeout); timers = [300, 1500].map((ms) => setTimeout(detect, ms)); };
  detect();
  whenAttached(600);
  timers.push(setTimeout(detect, 1000));  // the host may paint its output area after attaching the view
  const observer = new MutationObserver(changed);
  for (const node of [document.documentElement, document.body]) {
    if (node) observer.observe(node, { attributes: true, attributeFilter: ["class", "style", "data-jp-theme-light",
      "data-jp-theme-name", "data-theme", "data-mode", "data-vscode-theme-kind"] });
  }
  if (media && media.addEventListener) media.addEventListener("change", changed);
  return () => {
    cancelAnimationFrame(frame);
    timers.forEach(clearTimeout);
    observer.disconnect();
    if (media && media.removeEventListener) media.removeEventListener("change", changed);
  };
}

/** One floating tooltip per view root; `show(x, y, lines)` writes each line with textContent. */
function saewTooltip(root) {
  const tip = saewEl("div", "saew-tooltip");
  tip.style.display = "none";
  root.appendChild(tip);
  return {
    show(clientX, clientY, lines) {
      tip.replaceChildren(...lines.map((l, k) => saewEl("div", k === 0 ? "saew-tooltip-head" : "", l)));
      tip.style.display = "block";
      const r = root.getBoundingClientRect();
      let x = clientX - r.left + 12, y = clientY - r.top + 14;
      const w = tip.offsetWidth, maxX = root.clientWidth - w - 4;
      if (x > maxX) x = Math.max(0, clientX - r.left - w - 8);
      tip.style.left = `${x}px`;
      tip.style.top = `${y}px`;
    },
    hide() { tip.style.display = "none"; },
  };
}

/**
 * Render a token sequence as coloured spans in one pass (a DocumentFragment) with one delegated hover handler,
 * so 10,000 tokens render without per-token listeners. Returns {recolor(acts, scale), spans, setMarks(positions)}.
 *   tokens: string[]; acts: indexable numbers (same length) or null; opts: {scale, center, tooltip, label,
 *   inline (newlines shown as ⏎ without breaking the line), onClick(i)}.
 */
function saewTokens(container, tokens, acts, opts) {
  const o = opts || {};
  const box = saewEl("div", "saew-tokens");
  const frag = document.createDocumentFragment();
  const spans = new Array(tokens.length);
  for (let i = 0; i < tokens.length; i++) {
    const s = document.createElement("span");
    s.className = i === o.center ? "saew-tok saew-tok-center" : "saew-tok";
    s.textContent = saewTokenText(tokens[i], o.inline);
    s.dataset.i = String(i);
    spans[i] = s;
    frag.appendChild(s);
  }
  box.appendChild(frag);
  container.appendChild(box);
  let current = acts, scale = o.scale;
  function recolor(newActs, newScale) {
    current = newActs;
    scale = newScale;
    if (!current) { for (const s of spans) s.style.backgroundColor = ""; return; }
    if (!scale) {
      scale = 0;
      for (let i = 0; i < spans.length; i++) scale = Math.max(scale, Math.abs(current[i] || 0));
    }
    for (let i = 0; i < spans.length; i++) spans[i].style.backgroundColor = saewActColor(current[i], scale);
  }
  recolor(acts, scale);
  if (o.tooltip) {
    box.addEventListener("mouseover", (ev) => {
      const t = ev.target;
      if (!t || !t.dataset || t.dataset.i === undefined) return;
      const i = Number(t.dataset.i);
      const lines = [`token ${JSON.stringify(String(tokens[i]))}`, `position ${i}`];
      if (current) lines.push(`${o.label || "activation"} ${saewFmt(current[i])}`);
      o.tooltip.show(ev.clientX, ev.clientY, lines);
    });
    box.addEventListener("mouseleave", () => o.tooltip.hide());
  }
  if (o.onClick) {
    box.addEventListener("click", (ev) => {
      const t = ev.target;
      if (t && t.dataset && t.dataset.i !== undefined) o.onClick(Number(t.dataset.i));
    });
  }
  function setMarks(positions) {
    for (const s of spans) s.classList.remove("saew-tok-mark");
    for (const p of positions || []) if (spans[p]) spans[p].classList.add("saew-tok-mark");
  }
  return { box, spans, recolor, setMarks };
}

/** A small SVG bar chart of a histogram {counts, edges}; bar heights on a log1p scale so tails stay visible. */
function saewHistogram(container, hist, opts) {
  const o = opts || {};
  const counts = (hist && hist.counts) || [], edges = (hist && hist.edges) || [];
  const W = o.width || 320, H = o.height || 90, pad = 16;
  const svg = document.createElementNS(SAEW_NS, "svg");
  svg.setAttribute("class", "saew-hist");
  svg.setAttribute("viewBox", `0 0 ${W} ${H + pad}`);
  svg.style.width = "100%";
  svg.style.maxWidth = `${W}px`;
  svg.style.height = "auto";
  const maxC = Math.max(1, ...counts.map((c) => Math.log1p(c)));
  const bw = counts.length ? W / counts.length : W;
  counts.forEach((c, k) => {
    const h = (Math.log1p(c) / maxC) * (H - 4);
    const r = document.createElementNS(SAEW_NS, "rect");
    r.setAttribute("x", String(k * bw + 0.5));
    r.setAttribute("y", String(H - h));
    r.setAttribute("width", String(Math.max(0.5, bw - 1)));
    r.setAttribute("height", String(h));
    r.setAttribute("class", "saew-hist-bar");
    const t = document.createElementNS(SAEW_NS, "title");
    const lo = edges[k], hi = edges[k + 1];
    t.textContent = `${saewFmt(lo)} – ${saewFmt(hi)}: ${c}`;
    r.appendChild(t);
    svg.appendChild(r);
  });
  if (edges.length) {
    const mk = (x, anchor, v) => {
      const tx = document.createElementNS(SAEW_NS, "text");
      tx.setAttribute("x", String(x)); tx.setAttribute("y", String(H + pad - 3));
      tx.setAttribute("text-anchor", anchor); tx.setAttribute("class", "saew-hist-axis");
      tx.textContent = saewFmt(v);
      svg.appendChild(tx);
    };
    mk(1, "start", edges[0]);
    mk(W - 1, "end", edges[edges.length - 1]);
  }
  container.appendChild(svg);
  return svg;
}

/** A number with `sig` significant digits, thousands as k (for table cells: short, never clipped). */
function saewSig(v, sig) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v), s = sig || 3;
  if (a >= 1e4) return `${(v / 1e3).toPrecision(s).replace(/\.?0+$/, "")}k`;
  if (a !== 0 && a < 1e-3) return v.toExponential(1);
  return Number(v.toPrecision(s)).toString();
}

/** A table of {token, value} rows (promoted / suppressed logits) with a header naming the unit. */
function saewLogitTable(container, title, rows, cls, unit, factor) {
  const box = saewEl("div", `saew-logits ${cls || ""}`);
  const head = saewEl("div", "saew-subhead saew-logit-head", `${title} `);
  head.appendChild(saewEl("span", "saew-muted saew-logit-unit", unit));
  box.appendChild(head);
  const table = saewEl("table", "saew-logit-table");
  for (const r of rows || []) {
    const tr = saewEl("tr");
    const tdTok = saewEl("td", "saew-logit-token");
    const code = saewEl("code", "", saewTokenText(r.token, true));
    code.title = JSON.stringify(String(r.token));
    tdTok.appendChild(code);
    tr.appendChild(tdTok);
    tr.appendChild(saewEl("td", "saew-logit-value", saewSig(r.value * factor)));
    table.appendChild(tr);
  }
  box.appendChild(table);
  container.appendChild(box);
  return box;
}

/** Render one example context ({tokens, acts, center, value, count}) as a heatmap row. */
function saewContext(container, item, scale, tooltip) {
  const row = saewEl("div", "saew-context");
  row.appendChild(saewEl("span", "saew-context-value", saewSig(item.value, 3)));
  const tokensBox = saewEl("div", "saew-context-tokens");
  row.appendChild(tokensBox);
  saewTokens(tokensBox, item.tokens || [], item.acts || null, { scale, center: item.center, tooltip, inline: true });
  if (item.count > 1) {
    const n = saewEl("span", "saew-context-count", `×${item.count}`);
    n.title = `this context occurred ${item.count} times among the top activations`;
    row.appendChild(n);
  }
  container.appendChild(row);
  return row;
}

/** How the logit tables state their values: the card's own unit when it names one, else the logit change at
 * the feature's mean activation (per-unit values times mean act; same ranking, readable size). */
function saewLogitUnit(card) {
  if (card.logit_unit) return { unit: String(card.logit_unit), factor: 1 };
  if (card.mean_act > 0) return { unit: "Δlogit @ mean act", factor: card.mean_act };
  return { unit: "logit / unit act", factor: 1 };
}

/**
 * Render a feature card (see saewidgets.analysis.feature_card) into `container`, most-read first: header
 * statistics; histogram and promoted / suppressed logits side by side; clickable neighbours (onFeature(j));
 * de-duplicated top contexts; quantile samples.
 */
function saewFeatureCard(container, card, onFeature, tooltip) {
  container.replaceChildren();
  if (!card || card.feature === undefined || card.feature === null) {
    container.appendChild(saewEl("div", "saew-empty", "No feature selected."));
    return;
  }
  const head = saewEl("div", "saew-card-head");
  head.appendChild(saewEl("span", "saew-card-id", `Feature #${card.feature}`));
  container.appendChild(head);
  if (card.missing) {
    container.appendChild(saewEl("div", "saew-empty saew-card-missing", card.missing));
    return;
  }
  const stats = saewEl("span", "saew-card-stats");
  const stat = (label, value, title) => {
    const s = saewEl("span", "saew-stat");
    s.append(saewEl("span", "saew-muted", `${label} `), saewEl("b", "", value));
    if (title) s.title = title;
    stats.appendChild(s);
  };
  stat("fires on", `${saewSig(card.density * 100, 3)}% of tokens`, "density: fraction of tokens where it is > 0");
  stat("max act", saewSig(card.max_act, 3), "largest activation seen (SAE units)");
  if (card.mean_act !== undefined) stat("mean act", saewSig(card.mean_act, 3), "mean over the tokens where it fires");
  head.appendChild(stats);
  if (card.label && card.label.text) {  // its explanation; the kind says who wrote it
    const label = saewEl("div", `saew-card-label saew-label-${card.label.kind === "llm" ? "llm" : "pattern"}`);
    label.appendChild(saewEl("span", "saew-label-kind", card.label.kind === "llm" ? "LLM label" : "pattern label"));
    label.appendChild(saewEl("span", "saew-label-text", card.label.text));
    container.appendChild(label);
  }

  const summary = saewEl("div", "saew-card-summary");
  const histBox = saewEl("div", "saew-hist-box");
  histBox.appendChild(saewEl("div", "saew-subhead", "Activations (non-zero; log count)"));
  saewHistogram(histBox, card.histogram || {}, { width: 240, height: 70 });
  summary.appendChild(histBox);
  if ((card.promoted || []).length || (card.suppressed || []).length) {
    const { unit, factor } = saewLogitUnit(card);
    saewLogitTable(summary, "Promoted", card.promoted, "saew-promoted", unit, factor);
    saewLogitTable(summary, "Suppressed", card.suppressed, "saew-suppressed", unit, factor);
  } else {  // a card built without logit effects: say so once, rather than two empty tables
    summary.appendChild(saewEl("div", "saew-muted saew-logits-none", "No logit effects in this card."));
  }
  container.appendChild(summary);

  const nb = saewEl("div", "saew-neighbours");
  nb.appendChild(saewEl("span", "saew-subhead", "Nearest (decoder cosine):"));
  for (const n of card.neighbours || []) {
    const a = saewEl("a", "saew-neighbour", `#${n.feature}`);
    a.href = "#";
    a.dataset.feature = String(n.feature);
    a.title = `cosine ${saewFmt(n.cosine)}`;
    const wrap = saewEl("span", "saew-neighbour-item");
    wrap.appendChild(a);
    wrap.appendChild(saewEl("span", "saew-neighbour-cos", saewFmt(n.cosine, 2)));
    nb.appendChild(wrap);
  }
  nb.addEventListener("click", (ev) => {
    const t = ev.target;
    if (t && t.dataset && t.dataset.feature !== undefined) {
      ev.preventDefault();
      if (onFeature) onFeature(Number(t.dataset.feature));
    }
  });
  if (!(card.neighbours || []).length) nb.style.display = "none";
  container.appendChild(nb);

  const scale = card.max_act || 0;
  const top = saewEl("div", "saew-top");
  top.appendChild(saewEl("div", "saew-subhead", "Top activations"));
  if (!(card.top || []).length) top.appendChild(saewEl("div", "saew-empty", "This feature never fired on the corpus."));
  for (const item of card.top || []) saewContext(top, item, scale, tooltip);
  container.appendChild(top);

  for (const band of card.quantiles || []) {
    if (!(band.examples || []).length) continue;
    const q = saewEl("div", "saew-quantile");
    q.appendChild(saewEl("div", "saew-subhead", `Samples: ${band.label}`));
    for (const item of band.examples) saewContext(q, item, scale, tooltip);
    container.appendChild(q);
  }
}

/** Subscribe to several `change:` events; returns a function removing them (anywidget cleanup). */
function saewOn(model, names, cb) {
  const evts = names.map((n) => `change:${n}`);
  for (const e of evts) model.on(e, cb);
  return () => { for (const e of evts) model.off(e, cb); };
}

/** Coalesce bursts of change events (several traits set together) into one call per microtask. */
function saewDebounced(fn) {
  let queued = false;
  return () => {
    if (queued) return;
    queued = true;
    queueMicrotask(() => { queued = false; fn(); });
  };
}

/** True when this view runs without a kernel behind the model (the static HTML export, or a saved notebook). */
function saewIsStatic(model) {
  return !!model.__saewStatic;
}

/** Keep key presses inside `root` (typing, arrow keys on a slider) from reaching the host's shortcuts
 * (JupyterLab would move the active cell). Escape still leaves. */
function saewKeepKeys(root) {
  // Lumino (JupyterLab, Notebook 7) skips shortcuts for a key event whose target carries this attribute; the
  // focused control is the target, so mark whatever gets focus. Hosts listening in the bubbling phase are also
  // stopped at the root.
  root.setAttribute("data-lm-suppress-shortcuts", "true");
  root.addEventListener("focusin", (ev) => {
    if (ev.target && ev.target.setAttribute) ev.target.setAttribute("data-lm-suppress-shortcuts", "true");
  });
  for (const type of ["keydown", "keyup", "keypress"]) {
    root.addEventListener(type, (ev) => { if (ev.key !== "Escape") ev.stopPropagation(); });
  }
}

/** A model held in the browser (no kernel): get/set/on/off as anywidget's, change events on set; ``send`` goes to
 * the "msg:send" listeners (the static page's host answers there; a view's own local model has none). */
function saewLocalModel(values, isStatic) {
  const handlers = {};
  return {
    __saewStatic: isStatic,
    get(k) { return values[k]; },
    set(k, v) {
      const changed = values[k] !== v;
      values[k] = v;
      if (changed) for (const cb of (handlers[`change:${k}`] || []).slice()) cb(this, v);
    },
    on(evt, cb) { (handlers[evt] = handlers[evt] || []).push(cb); },
    off(evt, cb) { handlers[evt] = (handlers[evt] || []).filter((f) => f !== cb); },
    save_changes() {},
    send(msg) { for (const cb of (handlers["msg:send"] || []).slice()) cb(msg); },
  };
}
