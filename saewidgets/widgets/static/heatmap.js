// TokenHeatmap view: text coloured by one feature's activation per token, switchable between features.
// Traits: tokens (string[]), acts (float32 bytes, row-major [T, n_sel]), acts_shape ([T, n_sel]),
// features (int[], the feature id of each column), scales (float[]: full colour for each column, e.g. the
// feature's max activation over the corpus, so weak activations look weak; empty: the column's own max here),
// feature (int, the feature shown), title (string).

function heatmapRender({ model, el }) {
  const root = saewEl("div", "saew-root saew-heatmap");
  const offScheme = saewFollowScheme(root);
  el.appendChild(root);
  const tooltip = saewTooltip(root);
  const bar = saewEl("div", "saew-toolbar");
  const title = saewEl("span", "saew-title");
  const pickLabel = saewEl("label", "saew-label", "feature ");
  const picker = saewEl("select", "saew-heatmap-picker");
  pickLabel.appendChild(picker);
  const info = saewEl("span", "saew-muted");
  bar.append(title, pickLabel, info);
  root.appendChild(bar);
  const body = saewEl("div", "saew-heatmap-body");
  root.appendChild(body);
  let view = null, acts = null, T = 0, n = 0;

  function column(k) {
    const col = new Float32Array(T);
    for (let t = 0; t < T; t++) col[t] = acts[t * n + k];
    return col;
  }
  function columnIndex() {
    const feats = model.get("features") || [];
    const k = feats.indexOf(model.get("feature"));
    return k < 0 ? 0 : k;
  }
  function paint() {
    if (!view || !n) return;
    const k = columnIndex();
    const col = column(k);
    let mx = 0;
    for (let t = 0; t < T; t++) mx = Math.max(mx, Math.abs(col[t]));
    const scales = model.get("scales") || [];
    const scale = scales[k] > 0 ? scales[k] : 0;
    view.recolor(col, scale || mx || 1);
    picker.value = String(k);
    const feats = model.get("features") || [];
    info.textContent = `${T} tokens · feature #${feats[k]} · max here ${saewSig(mx, 3)}` +
      (scale ? ` · colour scale: its max over the corpus, ${saewSig(scale, 3)}` : " · colour scale: max here");
  }
  function build() {
    const tokens = model.get("tokens") || [];
    const shape = model.get("acts_shape") || [tokens.length, 0];
    acts = saewF32(model.get("acts"));
    T = tokens.length;
    n = shape[1] || 0;
    title.textContent = model.get("title") || "";
    picker.replaceChildren();
    (model.get("features") || []).forEach((f, k) => {
      const opt = saewEl("option", "", `#${f}`);
      opt.value = String(k);
      picker.appendChild(opt);
    });
    pickLabel.style.display = n > 1 ? "" : "none";
    body.replaceChildren();
    if (!T) {
      view = null;
      info.textContent = "";
      body.appendChild(saewEl("div", "saew-empty", "No text yet."));
      return;
    }
    view = saewTokens(body, tokens, null, { tooltip, label: "activation" });
    paint();
  }
  picker.addEventListener("change", () => {
    const feats = model.get("features") || [];
    model.set("feature", feats[Number(picker.value)]);
    model.save_changes();
  });
  build();
  const offBuild = saewOn(model, ["tokens", "acts", "acts_shape", "features", "title"], saewDebounced(build));
  const offPaint = saewOn(model, ["feature", "scales"], saewDebounced(paint));
  return () => { offBuild(); offPaint(); offScheme(); };
}

const view = { render: heatmapRender };
export default view;
