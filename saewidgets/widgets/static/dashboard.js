// FeatureDashboard view: the paper's feature view for one feature.
// Traits: card (dict from saewidgets.analysis.feature_card), feature (int; set here when a neighbour link is
// clicked, Python answers with the new card), loading (bool), error (string).

function dashboardRender({ model, el }) {
  const root = saewEl("div", "saew-root saew-dashboard");
  const offScheme = saewFollowScheme(root);
  el.appendChild(root);
  const tooltip = saewTooltip(root);
  const status = saewEl("div", "saew-status");
  const body = saewEl("div", "saew-card");
  root.append(status, body);

  function paint() {
    const card = model.get("card");
    saewFeatureCard(body, card, (j) => {
      model.set("feature", j);
      model.save_changes();
    }, tooltip);
    paintStatus();
  }
  function paintStatus() {
    const err = model.get("error") || "";
    const card = model.get("card") || {};
    const want = model.get("feature");
    status.className = "saew-status";
    status.textContent = "";
    if (err) { status.className = "saew-status saew-error"; status.textContent = err; }
    else if (model.get("loading") || (want >= 0 && card.feature !== undefined && card.feature !== want)) {
      status.className = "saew-status saew-busy";
      status.textContent = `loading feature #${want}…`;
    }
  }
  paint();
  const off1 = saewOn(model, ["card"], saewDebounced(paint));
  const off2 = saewOn(model, ["feature", "loading", "error"], paintStatus);
  return () => { off1(); off2(); offScheme(); };
}

const view = { render: dashboardRender };
export default view;
