// AttributionView: a prompt's tokens, a target-token picker, and the features that most push the model towards
// that target (activation x gradient), drawn as bars. Hovering a bar marks the positions where it acts; clicking
// a bar opens the feature.
// Traits: tokens (string[]), target (string the user typed; empty = the model's top token), target_label (the
// attribution's description of its target), target_options (string[]),
// rows ([{feature, attribution, ablation, positions: int[]}]), feature (int), busy (bool), error (string),
// prompt (string) shown as an editable box when prompt_editable (the Explorer), sent with Attribute. Values are
// in logits of the target: attribution = activation x gradient (a linear estimate of the logit lost without the
// feature); ablation = the logit actually lost when the feature is zeroed.

function attributionRender({ model, el }) {
  const root = saewEl("div", "saew-root saew-attribution");
  const offScheme = saewFollowScheme(root);
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
  const stop = saewEl("button", "saew-button saew-stop saew-attr-stop", "Stop");
  const status = saewEl("span", "saew-status");
  bar.append(label, go, stop, status);
  const promptInput = saewEl("textarea", "saew-attr-prompt-input");
  promptInput.rows = 2;
  promptInput.placeholder = "Prompt whose next token to explain";
  const bars = saewEl("div", "saew-attr-bars");
  root.append(promptInput, bar, promptBox, bars);
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
    promptInput.style.display = model.get("prompt_editable") ? "" : "none";
    if (document.activeElement !== promptInput) promptInput.value = model.get("prompt") || "";
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
    const hasAblation = rows.some((r) => r.ablation !== undefined && r.ablation !== null);
    const cols = saewEl("div", "saew-attr-row saew-attr-head");
    cols.append(saewEl("span", "saew-attr-feature", "feature"), saewEl("span", "saew-attr-track saew-attr-track-head", ""),
      saewEl("span", "saew-attr-value", "act×grad (logit)"));
    if (hasAblation) cols.appendChild(saewEl("span", "saew-attr-ablation", "ablation (Δlogit)"));
    cols.title = "act×grad: linear estimate of the target logit the feature adds; ablation: the logit actually " +
      "lost when the feature is zeroed at every position";
    bars.appendChild(cols);
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
      row.appendChild(saewEl("span", "saew-attr-value", saewSig(r.attribution, 3)));
      if (hasAblation) row.appendChild(saewEl("span", "saew-attr-ablation",
        r.ablation === undefined || r.ablation === null ? "–" : saewSig(r.ablation, 3)));
      bars.appendChild(row);
    });
  }
  function paintStatus() {
    const err = model.get("error") || "";
    status.className = "saew-status" + (err ? " saew-error" : model.get("busy") ? " saew-busy" : "");
    status.textContent = err || (model.get("busy") ? "attributing…" : "");
    go.disabled = !!model.get("busy") || saewIsStatic(model);
    stop.disabled = !model.get("busy");
    promptInput.readOnly = saewIsStatic(model);
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
    if (model.get("prompt_editable")) model.set("prompt", promptInput.value);
    model.save_changes();
    const msg = { event: "attribute", target: input.value };
    if (model.get("prompt_editable")) msg.prompt = promptInput.value;
    model.send(msg);
  }
  go.addEventListener("click", submit);
  stop.addEventListener("click", () => model.send({ event: "stop" }));
  input.addEventListener("keydown", (ev) => { if (ev.key === "Enter") submit(); });
  paintPrompt(); paintRows(); paintStatus();
  const offs = [
    saewOn(model, ["tokens", "target_options", "prompt", "prompt_editable"], saewDebounced(paintPrompt)),
    saewOn(model, ["rows", "feature", "target_label"], saewDebounced(paintRows)),
    saewOn(model, ["busy", "error"], paintStatus),
  ];
  return () => { offs.forEach((f) => f()); offScheme(); };
}

const view = { render: attributionRender };
export default view;
