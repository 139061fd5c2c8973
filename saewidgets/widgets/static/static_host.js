// Host for the self-contained static HTML export: a stand-in for the anywidget model (get/set/on/off/
// save_changes/send) over embedded state, so the same view code runs in a plain browser without a kernel.
// Binary traits arrive base64-encoded ({"__saew_b64__": "..."}) and are handed to views as DataViews, as in
// widget mode. The Explorer page links its views here, client-side: selecting a feature on the map (or a
// neighbour link, or an attribution bar) shows that feature's embedded card.

const SAEW = (window.SAEW = window.SAEW || { views: {} });

SAEW.decode = function (value) {
  if (value && typeof value === "object" && !Array.isArray(value) && typeof value.__saew_b64__ === "string") {
    const bin = atob(value.__saew_b64__);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new DataView(bytes.buffer);
  }
  return value;
};

SAEW.model = function (state) {
  const values = {};
  for (const k of Object.keys(state || {})) values[k] = SAEW.decode(state[k]);
  const handlers = {};
  return {
    __saewStatic: true,
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
};

SAEW.mount = function (spec) {
  const el = document.getElementById(spec.id);
  const view = SAEW.views[spec.view];
  if (!el || !view) return null;
  const fallback = el.querySelector(".saew-fallback");
  if (fallback) fallback.remove();
  const model = SAEW.model(spec.state);
  view.render({ model, el });
  return model;
};

SAEW.linkExplorer = function (models, cards, names) {
  const map = models[names.map], dash = models[names.dashboard];
  let busy = false;
  function cardFor(i) {
    const c = cards[String(i)];
    return c || { feature: i, missing: "No dashboard was embedded for this feature in this static page." };
  }
  function select(i) {
    if (busy || i === null || i === undefined || i < 0) return;
    busy = true;
    try {
      const card = cardFor(i);
      if (map) {
        map.set("selected", i);
        map.set("highlight", (card.neighbours || []).map((n) => n.feature));
      }
      if (dash) { dash.set("feature", i); dash.set("card", card); }
      for (const key of ["attribution", "steering"]) if (models[names[key]]) models[names[key]].set("feature", i);
      const hm = models[names.heatmap];
      if (hm && (hm.get("features") || []).indexOf(i) >= 0) hm.set("feature", i);
    } finally { busy = false; }
  }
  if (map) map.on("change:selected", (m, v) => select(v));
  if (dash) dash.on("change:feature", (m, v) => select(v));
  if (models[names.attribution]) models[names.attribution].on("change:feature", (m, v) => select(v));
  return select;
};

SAEW.tabs = function (root) {
  for (const box of root.querySelectorAll(".saew-tabs")) {
    const buttons = box.querySelectorAll(".saew-tab-button");
    const panes = box.querySelectorAll(".saew-tab-pane");
    buttons.forEach((b, k) => b.addEventListener("click", () => {
      buttons.forEach((x, j) => x.classList.toggle("saew-tab-active", j === k));
      panes.forEach((p, j) => { p.style.display = j === k ? "" : "none"; });
    }));
  }
};

SAEW.boot = function () {
  const node = document.getElementById("saew-data");
  if (!node) return;
  const data = JSON.parse(node.textContent);
  const models = {};
  for (const spec of data.views || []) {
    try { models[spec.name] = SAEW.mount(spec); }
    catch (err) {
      const el = document.getElementById(spec.id);
      if (el) el.appendChild(Object.assign(document.createElement("pre"), { textContent: String(err) }));
    }
  }
  SAEW.tabs(document);
  if (data.explorer) {
    const select = SAEW.linkExplorer(models, data.cards || {}, data.explorer);
    if (data.explorer.selected !== undefined) select(data.explorer.selected);
  }
  SAEW.models = models;
};
