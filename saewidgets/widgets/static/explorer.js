// Explorer view: every saewidgets view in one widget — map left, dashboard right, tabs for attribution, steering
// and heatmap. Each view's own JS (SAEW_VIEWS) renders against its slice of this model: view trait `x` of the
// map is Explorer trait `map_x`, and a view's message goes to Python as {view: "map", msg}.
// With a kernel, Python links the views (a selection anywhere updates all). Without one — the static page, or a
// notebook reopened from saved widget state — this file links them from the embedded cards, and says so.
// Own traits: tab ("attribution" | "steering" | "heatmap"), heatmap_text, heatmap_error, heatmap_busy,
// fallback_id (the offline copy of this widget left in the notebook, hidden while the widget shows).

const SAEW_EXPLORER_PARTS = [
  ["map", "feature_map"], ["dashboard", "dashboard"], ["attribution", "attribution_view"],
  ["steering", "steering_panel"], ["heatmap", "heatmap"],
];
const SAEW_EXPLORER_TABS = [["attribution", "Attribution"], ["steering", "Steering"], ["heatmap", "Heatmap"]];
// How long the kernel may take to answer the first message before the view treats itself as kernel-less.
const SAEW_HELLO_TIMEOUT_MS = 4000;

/** The model of one composed view: its traits are `<prefix>_<name>` on the Explorer's model. */
function saewSubModel(model, prefix, mode) {
  const event = (evt) => (evt.startsWith("change:") ? `change:${prefix}_${evt.slice(7)}` : evt);
  return {
    get __saewStatic() { return mode.offline; },
    get: (k) => model.get(`${prefix}_${k}`),
    set: (k, v) => model.set(`${prefix}_${k}`, v),
    on: (evt, cb) => model.on(event(evt), cb),
    off: (evt, cb) => model.off(event(evt), cb),
    save_changes: () => model.save_changes(),
    send: (msg) => model.send({ view: prefix, msg }),
  };
}

function explorerRender({ model, el }) {
  const isStatic = saewIsStatic(model);
  const mode = { offline: isStatic, live: false };
  const root = saewEl("div", "saew-root saew-explorer");
  const offScheme = saewFollowScheme(root);
  saewKeepKeys(root);
  el.appendChild(root);
  const notice = saewEl("div", "saew-explorer-notice");
  const top = saewEl("div", "saew-explorer-top");
  const mapBox = saewEl("div", "saew-explorer-map");
  const dashBox = saewEl("div", "saew-explorer-dashboard");
  top.append(mapBox, dashBox);
  const tabs = saewEl("div", "saew-tabs");
  const bar = saewEl("div", "saew-tab-bar");
  bar.setAttribute("role", "tablist");
  tabs.appendChild(bar);
  const panes = {}, buttons = {};
  for (const [key, label] of SAEW_EXPLORER_TABS) {
    const b = saewEl("button", "saew-tab-button", label);
    b.type = "button";
    b.setAttribute("role", "tab");
    b.addEventListener("click", () => { model.set("tab", key); model.save_changes(); });
    bar.appendChild(b);
    buttons[key] = b;
    panes[key] = saewEl("div", "saew-tab-pane");
    panes[key].setAttribute("role", "tabpanel");
    tabs.appendChild(panes[key]);
  }
  root.append(notice, top, tabs);

  // The heatmap tab: text to colour, Show / Stop, then the heatmap view.
  const hmText = saewEl("textarea", "saew-heatmap-text");
  hmText.rows = 3;
  hmText.placeholder = "Text to colour by the selected feature and its neighbours";
  const hmBar = saewEl("div", "saew-toolbar");
  const hmShow = saewEl("button", "saew-button saew-heatmap-show", "Show");
  const hmStop = saewEl("button", "saew-button saew-stop saew-heatmap-stop", "Stop");
  const hmStatus = saewEl("span", "saew-status saew-heatmap-status");
  hmBar.append(hmShow, hmStop, hmStatus);
  const hmView = saewEl("div", "saew-heatmap-view");
  panes.heatmap.append(hmText, hmBar, hmView);

  const cleanups = [];
  const boxes = { map: mapBox, dashboard: dashBox, attribution: panes.attribution, steering: panes.steering,
                  heatmap: hmView };
  for (const [prefix, view] of SAEW_EXPLORER_PARTS) {
    const done = SAEW_VIEWS[view].render({ model: saewSubModel(model, prefix, mode), el: boxes[prefix] });
    if (typeof done === "function") cleanups.push(done);
  }

  function paintTab() {
    const tab = model.get("tab") || "attribution";
    for (const [key] of SAEW_EXPLORER_TABS) {
      const on = key === tab;
      buttons[key].classList.toggle("saew-tab-active", on);
      buttons[key].setAttribute("aria-selected", on ? "true" : "false");
      panes[key].style.display = on ? "" : "none";
    }
  }
  function paintHeatmapControls() {
    if (document.activeElement !== hmText) hmText.value = model.get("heatmap_text") || "";
    const busy = !!model.get("heatmap_busy"), err = model.get("heatmap_error") || "";
    hmShow.disabled = busy || mode.offline;
    hmStop.disabled = !busy;
    hmText.readOnly = mode.offline;
    hmStatus.className = "saew-status saew-heatmap-status" + (err ? " saew-error" : busy ? " saew-busy" : "");
    hmStatus.textContent = err || (busy ? "reading activations…" : mode.offline ? "needs a kernel to colour new text" : "");
  }
  hmText.addEventListener("change", () => { model.set("heatmap_text", hmText.value); model.save_changes(); });
  hmShow.addEventListener("click", () => {
    model.set("heatmap_text", hmText.value);
    model.save_changes();
    model.send({ event: "heatmap", text: hmText.value });
  });
  hmStop.addEventListener("click", () => model.send({ event: "heatmap_stop" }));

  // A new feature in the dashboard starts at its top (header, histogram, logits), not at the old scroll offset.
  let shownFeature = (model.get("dashboard_card") || {}).feature;
  function cardChanged() {
    const f = (model.get("dashboard_card") || {}).feature;
    if (f !== shownFeature) { shownFeature = f; dashBox.scrollTop = 0; }
  }

  // Linking without a kernel: selecting a feature anywhere shows its embedded card (or says none is embedded).
  const cards = model.__saewCards || null;
  let linking = false;
  function cardFor(i) {
    const shown = model.get("dashboard_card");
    if (shown && shown.feature === i && !shown.missing) return Promise.resolve(shown);
    const missing = {
      feature: i,
      missing: isStatic ? `No dashboard was embedded for feature #${i} in this page (it embeds ${cards ? cards.count : 0}).`
                        : `No kernel is running, and this saved view has no dashboard for feature #${i}: run the cell to explore every feature.`,
    };
    if (!cards) return Promise.resolve(missing);
    return cards.get(i).then((c) => c || missing,
      (err) => ({ feature: i, missing: `Could not read the embedded dashboard: ${err}` }));
  }
  function selectOffline(i) {
    if (!mode.offline || linking || i === null || i === undefined || i < 0) return;
    linking = true;
    try {
      for (const key of ["map_selected", "dashboard_feature", "steering_feature", "attribution_feature"]) {
        model.set(key, i);
      }
      if ((model.get("heatmap_features") || []).indexOf(i) >= 0) model.set("heatmap_feature", i);
    } finally { linking = false; }
    cardFor(i).then((card) => {
      if (model.get("map_selected") !== i) return;  // a newer selection won
      model.set("map_highlight", (card.neighbours || []).map((n) => n.feature));
      model.set("dashboard_card", card);
    });
  }
  const linkKeys = ["map_selected", "dashboard_feature", "attribution_feature", "steering_feature", "heatmap_feature"];
  for (const key of linkKeys) {
    const cb = () => selectOffline(model.get(key));
    model.on(`change:${key}`, cb);
    cleanups.push(() => model.off(`change:${key}`, cb));
  }

  function paintNotice() {
    notice.replaceChildren();
    root.classList.toggle("saew-explorer-live", !mode.offline);
    if (!mode.offline) { notice.style.display = "none"; return; }
    notice.style.display = "";
    notice.textContent = isStatic
      ? `Static page: select features on the map or by id; ${cards ? cards.count : 0} dashboards are embedded. ` +
        "Steering, attribution and text search need a running kernel."
      : "No kernel is connected: this is the view as it was saved. Run the cell again to explore.";
  }

  // Liveness: the kernel answers "hello"; without an answer, this is a saved view without a kernel.
  if (!isStatic) {
    const onMsg = (msg) => {
      if (msg && msg.event === "live") { mode.live = true; mode.offline = false; paintNotice(); paintHeatmapControls(); }
    };
    model.on("msg:custom", onMsg);
    cleanups.push(() => model.off("msg:custom", onMsg));
    model.send({ event: "hello" });
    const timer = setTimeout(() => {
      if (!mode.live) { mode.offline = true; paintNotice(); paintHeatmapControls(); }
    }, SAEW_HELLO_TIMEOUT_MS);
    cleanups.push(() => clearTimeout(timer));
    // This widget renders, so the offline copy displayed with it is not needed here.
    const fid = model.get("fallback_id");
    if (fid) {
      for (const node of document.querySelectorAll(".saew-offline-copy")) {
        if (node.getAttribute("data-saew-for") === fid) node.style.display = "none";
      }
    }
  }

  paintTab(); paintHeatmapControls(); paintNotice();
  const offs = [
    saewOn(model, ["tab"], paintTab),
    saewOn(model, ["heatmap_text", "heatmap_busy", "heatmap_error"], paintHeatmapControls),
    saewOn(model, ["dashboard_card"], cardChanged),
  ];
  if (isStatic) selectOffline(model.get("map_selected"));
  return () => { offs.forEach((f) => f()); cleanups.forEach((f) => f()); offScheme(); };
}

const view = { render: explorerRender };
export default view;
