// AttributionView: a prompt's tokens, a target-token picker, and the features that most push the model towards
// that target (activation x gradient), drawn as bars. Hovering a bar marks the positions where it acts; clicking
// a bar opens the feature.
// Traits: tokens (string[]), target (string the user typed; empty = the model's top token), target_label (the
// attribution's description of its target), target_options (string[]),
// rows ([{feature, attribution, ablation, positions: int[]}]), feature (int), busy (bool), error (string).

function attributionRender({ model, el }) {
  const root = saewEl("div", "saew-root saew-attribution");
  el.appendChild(root);
  const tooltip = saewTooltip(root);
  const promptBox = saewEl("div", "saew-attr-prompt");
  const bar = saewEl("div", "saew-toolbar");
  const label = saewEl("label", "saew-label", "target token ");
  const input = saewEl("input", "saew-attr-target");
  input.type = "text";
  input.placeholder = "next token (empty: model's top)";
  const listId = `saew-attr-opts-${Math.random().toString(36).slice(2)}`;
  const datalist = saewEl("datalist");
  datalist.id = listId;
  input.setAttribute("list", listId);
  label.append(input, datalist);
  const go = saewEl("button", "saew-button saew-attr-go", "Attribute");
  const status = saewEl("span", "saew-status");
  bar.append(label, go, status);
  const bars = saewEl("div", "saew-attr-bars");
  root.append(bar, promptBox, bars);
  let tokensView = null;

  function paintPrompt() {
    promptBox.replaceChildren();
    tokensView = saewTokens(promptBox, model.get("tokens") || [], null, { tooltip, inline: true });
    datalist.replaceChildren();
    for (const t of model.get("target_options") || []) {
      const o = saewEl("option");
      o.value = String(t);
      datalist.appendChild(o);
    }
    input.value = model.get("target") || "";
  }
  function paintRows() {
    bars.replaceChildren();
    const rows = model.get("rows") || [];
    const targetLabel = model.get("target_label") || "";
    if (!rows.length) {
      bars.appendChild(saewEl("div", "saew-empty",
        targetLabel ? "No attributions." : "Pick a target token and press Attribute."));
      return;
    }
    const head = saewEl("div", "saew-subhead", `Top features for target ${targetLabel}`);
    bars.appendChild(head);
    const mx = Math.max(1e-12, ...rows.map((r) => Math.abs(r.attribution)));
    const selected = model.get("feature");
    rows.forEach((r, k) => {
      const row = saewEl("div", "saew-attr-row" + (r.feature === selected ? " saew-attr-selected" : ""));
      row.dataset.k = String(k);
      row.appendChild(saewEl("span", "saew-attr-feature", `#${r.feature}`));
      const track = saewEl("span", "saew-attr-track");
      const fill = saewEl("span", "saew-attr-fill " + (r.attribution >= 0 ? "saew-pos" : "saew-neg"));
      fill.style.width = `${(100 * Math.abs(r.attribution)) / mx}%`;
      track.appendChild(fill);
      row.appendChild(track);
      row.appendChild(saewEl("span", "saew-attr-value", saewFmt(r.attribution)));
      if (r.ablation !== undefined && r.ablation !== null)
        row.appendChild(saewEl("span", "saew-attr-ablation", `ablation ${saewFmt(r.ablation)}`));
      bars.appendChild(row);
    });
  }
  function paintStatus() {
    const err = model.get("error") || "";
    status.className = "saew-status" + (err ? " saew-error" : model.get("busy") ? " saew-busy" : "");
    status.textContent = err || (model.get("busy") ? "attributing…" : "");
    go.disabled = !!model.get("busy") || saewIsStatic(model);
    input.disabled = saewIsStatic(model);
    if (saewIsStatic(model)) go.title = "Attribution to a new target needs a running kernel.";
  }
  function rowOf(ev) {
    let t = ev.target;
    while (t && t !== bars && !(t.dataset && t.dataset.k !== undefined)) t = t.parentNode;
    return t && t !== bars ? (model.get("rows") || [])[Number(t.dataset.k)] : null;
  }
  bars.addEventListener("mouseover", (ev) => {
    const r = rowOf(ev);
    if (tokensView) tokensView.setMarks(r ? r.positions : []);
  });
  bars.addEventListener("mouseleave", () => tokensView && tokensView.setMarks([]));
  bars.addEventListener("click", (ev) => {
    const r = rowOf(ev);
    if (!r) return;
    model.set("feature", r.feature);
    model.save_changes();
  });
  function submit() {
    if (saewIsStatic(model)) return;
    model.set("target", input.value);
    model.save_changes();
    model.send({ event: "attribute", target: input.value });
  }
  go.addEventListener("click", submit);
  input.addEventListener("keydown", (ev) => { if (ev.key === "Enter") submit(); });
  paintPrompt(); paintRows(); paintStatus();
  const offs = [
    saewOn(model, ["tokens", "target_options"], saewDebounced(paintPrompt)),
    saewOn(model, ["rows", "feature", "target_label"], saewDebounced(paintRows)),
    saewOn(model, ["busy", "error"], paintStatus),
  ];
  return () => offs.forEach((f) => f());
}

const view = { render: attributionRender };
export default view;
