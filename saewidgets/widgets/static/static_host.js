// Host for the self-contained static HTML export: a stand-in for the anywidget model (get/set/on/off/
// save_changes/send) over embedded state, so the same view code runs in a plain browser without a kernel.
// Binary traits arrive base64-encoded ({"__saew_b64__": "..."}) and are handed to views as DataViews, as in
// widget mode. Feature cards arrive packed (gzip + base64 groups of JSON and context columns, see
// static_html.packed_cards) and are decompressed group by group when first shown; the Explorer view links its
// views client-side from them.

const SAEW = (window.SAEW = window.SAEW || {});
SAEW.views = SAEW_VIEWS;

function saewBytes(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes;
}

SAEW.decode = function (value) {
  if (value && typeof value === "object" && !Array.isArray(value) && typeof value.__saew_b64__ === "string") {
    return new DataView(saewBytes(value.__saew_b64__).buffer);
  }
  return value;
};

SAEW.model = function (state) {
  const values = {};
  for (const k of Object.keys(state || {})) values[k] = SAEW.decode(state[k]);
  return saewLocalModel(values, true);
};

/** A packed card as the views read it: window indices back to token strings (spans of `tables.stream`), logit tokens back to
 * strings, integer token activations times `acts_unit` back to floats. */
SAEW.expandCard = function (card, tables) {
  if (!card) return card;
  const unit = card.acts_unit;
  const contexts = (card.top || []).concat(...(card.quantiles || []).map((b) => b.examples || []));
  for (const item of contexts) {
    if (item.w !== undefined) {
      const [start, length] = tables.windows[item.w];
      item.tokens = tables.stream.slice(start, start + length).map((k) => tables.strings[k]);
      delete item.w;
    }
    if (unit && item.acts) item.acts = item.acts.map((q) => q * unit);
  }
  for (const key of ["promoted", "suppressed"]) {
    for (const row of card[key] || []) if (typeof row.token === "number") row.token = tables.strings[row.token];
  }
  return card;
};

// Exact powers of ten (number literals parse exactly; `10 ** k` need not be correctly rounded).
const SAEW_POW10 = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
  1e17, 1e18, 1e19, 1e20, 1e21, 1e22];

/** One inflated card group (static_html._packed_group): a varint byte length, the cards' JSON, then columns of
 * varints for the group's distinct contexts; each context reference in a card (an index, or [index, count])
 * becomes its own copy of the context, as the JSON held it. */
SAEW.unpackGroup = function (bytes) {
  let at = 0;
  const varint = () => {
    let n = 0, scale = 1, b;
    do { b = bytes[at++]; n += (b & 127) * scale; scale *= 128; } while (b & 128);
    return n;
  };
  const signed = () => { const z = varint(); return z % 2 ? -(z + 1) / 2 : z / 2; };
  const length = varint();
  const cards = JSON.parse(new TextDecoder().decode(bytes.subarray(at, at + length)));
  at += length;
  const n = varint();
  const w = new Array(n), center = new Array(n), value = new Array(n), sizes = new Array(n), acts = new Array(n);
  let previous = 0;
  for (let i = 0; i < n; i++) w[i] = previous += signed();
  for (let i = 0; i < n; i++) center[i] = varint();
  for (let i = 0; i < n; i++) {
    const m = signed(), e = signed();
    value[i] = e < 0 ? m / SAEW_POW10[-e] : m * SAEW_POW10[e];
  }
  for (let i = 0; i < n; i++) sizes[i] = varint();
  for (let i = 0; i < n; i++) {
    const row = new Array(sizes[i]);
    for (let j = 0; j < row.length; j++) row[j] = signed();
    acts[i] = row;
  }
  const context = (ref) => {
    if (typeof ref === "number") return { acts: acts[ref].slice(), center: center[ref], value: value[ref], w: w[ref] };
    if (Array.isArray(ref)) return Object.assign(context(ref[0]), { count: ref[1] });
    return ref;  // a context the columns could not hold, kept as JSON
  };
  for (const card of Object.values(cards)) {
    if (card.top) card.top = card.top.map(context);
    for (const band of card.quantiles || []) if (band.examples) band.examples = band.examples.map(context);
  }
  return cards;
};

/** Card lookup over packed cards: `has(i)` says whether a card was embedded, `get(i)` resolves to it (or null). */
SAEW.cardStore = function (packed) {
  const p = packed || { per_chunk: 1, features: [], chunks: {} };
  const embedded = new Set(p.features || []);
  const groups = {};
  let tables = null;
  async function inflate(b64) {
    const stream = new Blob([saewBytes(b64)]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }
  async function group(key) {
    if (!tables) tables = inflate(p.tables).then((bytes) => JSON.parse(new TextDecoder().decode(bytes)));
    const [t, bytes] = await Promise.all([tables, inflate(p.chunks[key])]);
    const g = SAEW.unpackGroup(bytes);
    for (const k of Object.keys(g)) SAEW.expandCard(g[k], t);
    return g;
  }
  return {
    count: embedded.size,
    has(i) { return embedded.has(i); },
    get(i) {
      if (!embedded.has(i)) return Promise.resolve(null);
      const key = String(Math.floor(i / p.per_chunk));
      if (!groups[key]) groups[key] = group(key);
      return groups[key].then((g) => g[String(i)] || null);
    },
  };
};

SAEW.mount = function (spec, cards) {
  const el = document.getElementById(spec.id);
  const view = SAEW.views[spec.view];
  if (!el || !view) return null;
  const fallback = el.querySelector(".saew-fallback");
  if (fallback) fallback.remove();
  const model = SAEW.model(spec.state);
  model.__saewCards = cards;
  view.render({ model, el });
  return model;
};

SAEW.boot = function () {
  const node = document.getElementById("saew-data");
  if (!node) return;
  const data = JSON.parse(node.textContent);
  const cards = SAEW.cardStore(data.cards);
  const models = {};
  for (const spec of data.views || []) {
    try { models[spec.name] = SAEW.mount(spec, cards); }
    catch (err) {
      const el = document.getElementById(spec.id);
      if (el) el.appendChild(Object.assign(document.createElement("pre"), { textContent: String(err) }));
    }
  }
  SAEW.models = models;
  SAEW.bootMs = performance.now();  // page start to every view drawn (tests report it)
};
