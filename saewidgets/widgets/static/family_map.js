// FamilyMap view: feature splitting across a family of SAEs — one UMAP of every size's decoder directions,
// coloured by SAE size. Selecting a feature rings it, its parent chain and its descendants in the larger SAEs, and
// shows its dashboard beside those of its children (the next size's features whose parent it is).
// Traits: coords (float32 bytes [N, 2], size by size, smallest first), levels (int32 bytes [N]: each point's
// index into sizes), sizes (int[]), parents (int[][]: parents[l][j] = the parent among sizes[l]'s features of
// feature j of sizes[l + 1], -1 for none), cosines (float[][], the same shape: that link's decoder cosine),
// selected ([size, feature] or []), cards ({"size/feature": feature card}), max_children (int), height (px),
// message (string). The map and the dashboards are the FeatureMap and FeatureDashboard views on local models.
// Without a kernel (static page, saved notebook) it works from the embedded cards alone.

// The map colours points by their SAE's index as the FeatureMap colours clusters: its first palette colours.
const SAEW_SIZE_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];

function familyMapRender({ model, el }) {
  const isStatic = saewIsStatic(model);
  const root = saewEl("div", "saew-root saew-family");
  const offScheme = saewFollowScheme(root);
  saewKeepKeys(root);
  el.appendChild(root);
  const legend = saewEl("div", "saew-family-legend");
  const mapBox = saewEl("div", "saew-family-map");
  const status = saewEl("div", "saew-family-status saew-muted");
  const cardsRow = saewEl("div", "saew-family-cards");
  root.append(legend, mapBox, status, cardsRow);

  const sizes = model.get("sizes") || [];
  const levels = saewI32(model.get("levels"));
  const starts = sizes.map(() => 0);
  for (let l = 1; l < sizes.length; l++) starts[l] = starts[l - 1] + sizes[l - 1];
  const parents = model.get("parents") || [], cosines = model.get("cosines") || [];
  // children[l].get(f): [features of sizes[l + 1]] whose parent is f, highest cosine first.
  const children = parents.map((links, l) => {
    const m = new Map();
    links.forEach((p, j) => { if (p >= 0) { if (!m.has(p)) m.set(p, []); m.get(p).push(j); } });
    for (const list of m.values()) list.sort((a, b) => cosines[l][b] - cosines[l][a] || a - b);
    return m;
  });
  const levelOf = (size) => sizes.indexOf(size);
  const kidsOf = (l, f) => (l < children.length ? children[l].get(f) || [] : []);

  sizes.forEach((size, l) => {
    const item = saewEl("span", "saew-family-legend-item");
    const swatch = saewEl("span", "saew-family-swatch");
    swatch.style.background = SAEW_SIZE_COLORS[l % SAEW_SIZE_COLORS.length];
    item.append(swatch, saewEl("span", "", `${size.toLocaleString("en-US")} features`));
    legend.appendChild(item);
  });
  legend.appendChild(saewEl("span", "saew-muted", "click a feature: its children in the larger SAEs are ringed"));

  const pointLabels = [];
  sizes.forEach((size, l) => { for (let f = 0; f < size; f++) pointLabels.push(`SAE ${size.toLocaleString("en-US")} · feature #${f}`); });
  const mapModel = saewLocalModel({
    coords: model.get("coords"), clusters: model.get("levels"), density: new DataView(new ArrayBuffer(0)),
    n_features: levels.length, color_by: "cluster", selected: -1, highlight: [], lasso: [], query: "",
    search_results: [], search_labels: [], message: "", height: model.get("height") || 460, bookmarks: [],
    labels: pointLabels, hover_ids: false,
  }, true);
  const mapDone = SAEW_VIEWS.feature_map.render({ model: mapModel, el: mapBox });

  function select(size, feature) {
    model.set("selected", [size, feature]);
    model.save_changes();
  }
  // The map's own selection (a click, a lasso, an id typed in its box) picks a point: tell the model.
  mapModel.on("change:selected", () => {
    const p = mapModel.get("selected");
    if (p < 0 || p >= levels.length) return;
    const l = levels[p];
    const cur = model.get("selected") || [];
    if (cur[0] !== sizes[l] || cur[1] !== p - starts[l]) select(sizes[l], p - starts[l]);
  });

  function ancestors(l, f) {
    const chain = [];
    while (l > 0) {
      const p = parents[l - 1][f];
      if (p === undefined || p < 0) break;
      chain.push([l - 1, p, cosines[l - 1][f]]);
      l -= 1; f = p;
    }
    return chain;
  }
  function descendantPoints(l, f) {
    const out = [];
    let current = [f];
    for (let k = l; k < children.length; k++) {
      const next = [];
      for (const g of current) for (const j of kidsOf(k, g)) next.push(j);
      for (const j of next) out.push(starts[k + 1] + j);
      current = next;
    }
    return out;
  }

  const dashCleanups = [];
  function cardColumn(size, feature, caption) {
    const col = saewEl("div", "saew-family-card");
    col.dataset.size = String(size);
    col.dataset.feature = String(feature);
    const head = saewEl("div", "saew-family-card-head");
    const swatch = saewEl("span", "saew-family-swatch");
    swatch.style.background = SAEW_SIZE_COLORS[levelOf(size) % SAEW_SIZE_COLORS.length];
    head.append(swatch, saewEl("span", "saew-subhead", `${size.toLocaleString("en-US")} · #${feature}`));
    if (caption) head.appendChild(saewEl("span", "saew-muted", ` ${caption}`));
    col.appendChild(head);
    const card = (model.get("cards") || {})[`${size}/${feature}`];
    if (!card) {
      col.appendChild(saewEl("div", "saew-empty",
        isStatic ? "This page holds no card for this feature." : "loading…"));
    } else {
      const box = saewEl("div", "saew-family-dashboard");
      col.appendChild(box);
      const dash = saewLocalModel({ card, feature, loading: false, error: "" }, isStatic);
      // A neighbour link in a card selects that feature of the same SAE.
      dash.on("change:feature", () => select(size, dash.get("feature")));
      const done = SAEW_VIEWS.dashboard.render({ model: dash, el: box });
      if (typeof done === "function") dashCleanups.push(done);
    }
    return col;
  }

  function paint() {
    while (dashCleanups.length) dashCleanups.pop()();
    cardsRow.replaceChildren();
    const sel = model.get("selected") || [];
    const l = sel.length === 2 ? levelOf(sel[0]) : -1;
    if (l < 0) {
      mapModel.set("highlight", []);
      mapModel.set("selected", -1);
      status.textContent = model.get("message") || "Select a feature on the map (or type its point id).";
      return;
    }
    const [size, f] = sel;
    const up = ancestors(l, f);
    mapModel.set("highlight", [...up.map(([k, p]) => starts[k] + p), ...descendantPoints(l, f)]);
    mapModel.set("selected", starts[l] + f);
    const kids = kidsOf(l, f);
    const parts = [`${size.toLocaleString("en-US")}-feature SAE, feature #${f}`];
    if (up.length) parts.push(`parent ${up.map(([k, p, c]) => `#${p} in ${sizes[k].toLocaleString("en-US")} (cos ${saewFmt(c, 2)})`).join(", ")}`);
    if (l < children.length) parts.push(`${kids.length} child${kids.length === 1 ? "" : "ren"} in ${sizes[l + 1].toLocaleString("en-US")}`);
    status.textContent = parts.join(" · ") + (model.get("message") ? ` · ${model.get("message")}` : "");
    cardsRow.appendChild(cardColumn(size, f, "selected"));
    const shown = kids.slice(0, model.get("max_children") || 4);
    for (const j of shown) cardsRow.appendChild(cardColumn(sizes[l + 1], j, `child · cos ${saewFmt(cosines[l][j], 2)}`));
    if (kids.length > shown.length) cardsRow.appendChild(saewEl("div", "saew-muted saew-family-more", `… and ${kids.length - shown.length} more children`));
  }
  paint();
  const offs = [saewOn(model, ["selected", "cards", "message", "max_children"], saewDebounced(paint))];
  // Test and scripting hook: the map's root (its saewScreenOf gives a point's position) and a point's id.
  root.saewPointOf = (size, feature) => starts[levelOf(size)] + feature;
  return () => { offScheme(); offs.forEach((off) => off()); while (dashCleanups.length) dashCleanups.pop()(); if (typeof mapDone === "function") mapDone(); };
}

const view = { render: familyMapRender };
export default view;
