// SteeringPanel: clamp one feature to a multiple of its max activation and compare continuations side by side.
// Traits: feature (int), feature_options (int[]), multiple (float, -10..10), prompt (string), default_texts and
// steered_texts (string[] per prompt), busy (bool), error (string), status (string), min_multiple/max_multiple.
// The Generate button sends {event: "generate", prompt, multiple[, alpha]}, the inputs as shown (a host may deliver
// the state update after the message); Python runs the steer callback (never two at once); Stop sends
// {event: "stop"}. Arrow keys move the slider and stay in it (the host's shortcuts never see them).
// With has_vector, a second slider sets alpha (vector strength) and a third column shows vector_texts: the same
// Generate also adds the vector (e.g. DiffMean), so feature and vector steering of one prompt sit side by side.
// Each steered heading carries the measured hit rate of its run when it was judged (hit_rate, vector_hit_rate).

function steeringRender({ model, el }) {
  const root = saewEl("div", "saew-root saew-steering");
  const offScheme = saewFollowScheme(root);
  saewKeepKeys(root);
  el.appendChild(root);
  const isStatic = saewIsStatic(model);
  const controls = saewEl("div", "saew-steer-controls");
  const featLabel = saewEl("label", "saew-label", "feature #");
  const feat = saewEl("input", "saew-steer-feature");
  feat.type = "number"; feat.min = "0"; feat.step = "1";
  const listId = `saew-steer-opts-${Math.random().toString(36).slice(2)}`;
  const datalist = saewEl("datalist");
  datalist.id = listId;
  feat.setAttribute("list", listId);
  featLabel.append(feat, datalist);
  const sliderLabel = saewEl("label", "saew-label saew-steer-slider-label", "clamp ");
  const slider = saewEl("input", "saew-steer-slider");
  slider.type = "range"; slider.step = "0.5";
  const sliderValue = saewEl("span", "saew-steer-multiple");
  sliderLabel.append(slider, sliderValue);
  const alphaLabel = saewEl("label", "saew-label saew-steer-alpha-label", "vector ");
  const alphaSlider = saewEl("input", "saew-steer-alpha");
  alphaSlider.type = "range"; alphaSlider.min = "0"; alphaSlider.step = "0.05";
  const alphaValue = saewEl("span", "saew-steer-alpha-value");
  alphaLabel.append(alphaSlider, alphaValue);
  controls.append(featLabel, sliderLabel, alphaLabel);
  const prompt = saewEl("textarea", "saew-steer-prompt");
  prompt.rows = 2;
  prompt.placeholder = "Prompt to continue";
  const actions = saewEl("div", "saew-toolbar");
  const go = saewEl("button", "saew-button saew-steer-generate", "Generate");
  const stop = saewEl("button", "saew-button saew-stop saew-steer-stop", "Stop");
  const status = saewEl("span", "saew-status saew-steer-status");
  actions.append(go, stop, status);
  const cols = saewEl("div", "saew-steer-columns");
  const colDefault = saewEl("div", "saew-steer-col saew-steer-default");
  const colSteered = saewEl("div", "saew-steer-col saew-steer-steered");
  const colVector = saewEl("div", "saew-steer-col saew-steer-vector");
  cols.append(colDefault, colSteered, colVector);
  root.append(controls, prompt, actions, cols);

  function paintControls() {
    feat.value = String(model.get("feature"));
    slider.min = String(model.get("min_multiple"));
    slider.max = String(model.get("max_multiple"));
    slider.value = String(model.get("multiple"));
    sliderValue.textContent = `${saewFmt(model.get("multiple"), 2)}× max`;
    alphaLabel.hidden = !model.get("has_vector");
    alphaSlider.max = String(model.get("max_alpha"));
    alphaSlider.value = String(model.get("alpha"));
    alphaValue.textContent = `${saewFmt(model.get("alpha"), 2)}× median norm`;
    if (document.activeElement !== prompt) prompt.value = model.get("prompt") || "";
    datalist.replaceChildren();
    for (const f of model.get("feature_options") || []) {
      const o = saewEl("option"); o.value = String(f); datalist.appendChild(o);
    }
  }
  function column(box, title, texts) {
    box.replaceChildren(saewEl("div", "saew-subhead", title));
    for (const t of texts || []) box.appendChild(saewEl("pre", "saew-steer-text", t));
  }
  function paintOutputs() {
    // The heading names the feature and clamp of the texts shown, and says when they are not the feature in use.
    const texts = model.get("steered_texts") || [];
    const current = model.get("feature"), sf = model.get("steered_feature");
    const shown = texts.length && sf >= 0 ? sf : current;
    const m = texts.length ? (model.get("steered_multiple") ?? model.get("multiple")) : model.get("multiple");
    column(colDefault, "Default", model.get("default_texts"));
    const family = texts.length && shown === sf ? model.get("steered_family") || [] : [];
    const clamped = family.length ? family.map((f) => `#${f}`).join("+") : `#${shown}`;
    let head = `Steered (${clamped} clamped to ${saewFmt(m, 2)}× max)`;
    if (texts.length && shown !== current) head += ` — result for #${shown}; Generate for #${current}`;
    const rate = model.get("hit_rate");
    if (texts.length && rate !== null && rate !== undefined) head += ` · hit rate ${Math.round(100 * rate)}%`;
    column(colSteered, head, texts);
    if (!texts.length) colSteered.appendChild(saewEl("div", "saew-empty", `Press Generate to steer with #${current}.`));
    colVector.hidden = !model.get("has_vector");
    const vtexts = model.get("vector_texts") || [];
    const va = vtexts.length ? (model.get("vector_alpha") ?? model.get("alpha")) : model.get("alpha");
    let vhead = `${model.get("vector_name")} (added at ${saewFmt(va, 2)}× median norm)`;
    const vrate = model.get("vector_hit_rate");
    if (vtexts.length && vrate !== null && vrate !== undefined) vhead += ` · hit rate ${Math.round(100 * vrate)}%`;
    column(colVector, vhead, vtexts);
    if (!vtexts.length) colVector.appendChild(saewEl("div", "saew-empty", "Press Generate to add the vector too."));
  }
  function paintStatus() {
    const busy = !!model.get("busy"), err = model.get("error") || "";
    go.disabled = busy || isStatic;
    stop.disabled = !busy;
    root.classList.toggle("saew-generating", busy);
    status.className = "saew-status saew-steer-status" + (err ? " saew-error" : busy ? " saew-busy" : "");
    status.textContent = err || (busy ? "generating…" : model.get("status") || "");
    if (isStatic) {
      go.title = "Generating needs a running kernel; this page shows a saved result.";
      if (!err && !busy) status.textContent = "static page: showing a saved result";
    }
  }
  feat.addEventListener("change", () => {
    const v = parseInt(feat.value, 10);
    if (Number.isFinite(v) && v >= 0) { model.set("feature", v); model.save_changes(); }
  });
  slider.addEventListener("input", () => {
    sliderValue.textContent = `${saewFmt(Number(slider.value), 2)}× max`;
  });
  slider.addEventListener("change", () => { model.set("multiple", Number(slider.value)); model.save_changes(); });
  alphaSlider.addEventListener("input", () => {
    alphaValue.textContent = `${saewFmt(Number(alphaSlider.value), 2)}× median norm`;
  });
  alphaSlider.addEventListener("change", () => { model.set("alpha", Number(alphaSlider.value)); model.save_changes(); });
  prompt.addEventListener("change", () => { model.set("prompt", prompt.value); model.save_changes(); });
  stop.addEventListener("click", () => model.send({ event: "stop" }));
  go.addEventListener("click", () => {
    const inputs = { prompt: prompt.value, multiple: Number(slider.value) };
    if (model.get("has_vector")) inputs.alpha = Number(alphaSlider.value);
    for (const [key, value] of Object.entries(inputs)) model.set(key, value);
    model.save_changes();
    model.send({ event: "generate", ...inputs });  // with the request too: marimo delivered the update after it
  });
  paintControls(); paintOutputs(); paintStatus();
  const offs = [
    saewOn(model, ["feature", "multiple", "prompt", "feature_options", "min_multiple", "max_multiple",
      "has_vector", "alpha", "max_alpha"], saewDebounced(paintControls)),
    saewOn(model, ["default_texts", "steered_texts", "steered_multiple", "steered_feature", "steered_family", "feature",
      "multiple", "hit_rate", "has_vector", "vector_name", "vector_texts", "vector_alpha", "vector_hit_rate", "alpha"],
      saewDebounced(paintOutputs)),
    saewOn(model, ["busy", "error", "status"], paintStatus),
  ];
  return () => { offs.forEach((f) => f()); offScheme(); };
}

const view = { render: steeringRender };
export default view;
