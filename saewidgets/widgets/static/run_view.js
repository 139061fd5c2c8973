// RunView: one long analysis call (statistics, a harvest, the demo pipeline) run by the kernel off its main thread.
// Traits: title (what runs), state ("ready" | "running" | "done" | "stopped" | "error"), stage (the call's current
// progress bar, e.g. "feature stats"), done / total / unit (that bar's count; total null when it has none), elapsed
// (seconds at the last report), stage_closed (that bar is over while the call goes on), message (the outcome in one
// line). Run sends {event: "run"}, Stop {event: "stop"};
// Python refuses a second run while one is in flight. A stopped or failed run shows no result.

function runViewRender({ model, el }) {
  const root = saewEl("div", "saew-root saew-run");
  const offScheme = saewFollowScheme(root);
  el.appendChild(root);
  const isStatic = saewIsStatic(model);
  const title = saewEl("div", "saew-title saew-run-title");
  const actions = saewEl("div", "saew-toolbar");
  const run = saewEl("button", "saew-button saew-run-start", "Run");
  const stop = saewEl("button", "saew-button saew-stop saew-run-stop", "Stop");
  const bar = saewEl("progress", "saew-run-bar");
  const counted = saewEl("span", "saew-run-progress");
  actions.append(run, stop, bar, counted);
  const status = saewEl("div", "saew-status saew-run-status");
  root.append(title, actions, status);

  const count = (n) => Number(n).toLocaleString("en-US");
  function paint() {
    const state = model.get("state") || "ready", running = state === "running";
    const done = model.get("done") || 0, total = model.get("total"), unit = model.get("unit") || "";
    const stage = model.get("stage") || "", closed = !!model.get("stage_closed");
    title.textContent = model.get("title") || "";
    run.disabled = running || isStatic;
    run.textContent = state === "ready" ? "Run" : "Run again";
    run.title = isStatic ? "Running needs a kernel; this page shows the last state." : "";
    stop.disabled = !running || isStatic;
    root.dataset.state = state;
    bar.hidden = !stage && !running;
    if (total !== null && total !== undefined && total > 0) {
      bar.max = total;
      bar.value = Math.min(done, total);
    } else {
      bar.removeAttribute("value");  // no total: an indeterminate bar
    }
    let text = stage ? `${stage}: ${count(done)}` : running ? "starting…" : "";
    if (stage && total) text += ` / ${count(total)} ${unit} (${Math.floor((100 * done) / total)}%)`;
    else if (stage) text += ` ${unit}`;
    if (running && closed) text += " · finished; the call goes on (no count for what follows)";
    if (running && model.get("elapsed")) text += ` · ${saewFmt(model.get("elapsed"), 1)} s`;
    counted.textContent = text;
    const cls = { running: " saew-busy", error: " saew-error", stopped: " saew-busy", done: " saew-good" };
    status.className = "saew-status saew-run-status" + (cls[state] || "");
    status.textContent = running ? "running…" : model.get("message") || (state === "ready" ? "Press Run to start." : "");
  }
  run.addEventListener("click", () => model.send({ event: "run" }));
  stop.addEventListener("click", () => model.send({ event: "stop" }));
  paint();
  const off = saewOn(model, ["title", "state", "stage", "done", "total", "unit", "stage_closed", "elapsed", "message"],
    saewDebounced(paint));
  return () => { off(); offScheme(); };
}

const view = { render: runViewRender };
export default view;
