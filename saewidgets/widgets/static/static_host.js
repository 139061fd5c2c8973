// Host for the self-contained static HTML export: a stand-in for the anywidget model (get/set/on/off/
// save_changes/send) over embedded state, so the same view code runs in a plain browser without a kernel.
// Binary data arrives as base85 page text (widgets/_embed.py): binary traits ({"__saew_bytes__": ..., maybe
// "gzip": true}) are handed to views as DataViews, as in widget mode, and large JSON values ({"__saew_json__":
// ...}) are inflated before the views mount. Feature cards arrive packed (compressed groups of JSON and context
// columns, see static_html.packed_cards) and are inflated group by group when first shown; the Explorer view
// links its views client-side from them.

const SAEW = (window.SAEW = window.SAEW || {});
SAEW.views = SAEW_VIEWS;

// _embed.ALPHABET: Python's base85 alphabet with "<", ">" and "&" swapped for ",", "." and ":".
const SAEW_B85 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%:()*+-;,=.?@^_`{|}~";
const SAEW_B85_DIGIT = new Uint8Array(128);
for (let i = 0; i < SAEW_B85.length; i++) SAEW_B85_DIGIT[SAEW_B85.charCodeAt(i)] = i;

/** Page text back to bytes: each 5 characters are 4 big-endian bytes; a last group of k + 1 characters is
 * padded with the top digit and gives k bytes (as Python's base64.b85decode). */
function saewBytes(text) {
  const n = text.length, rest = n % 5;
  const bytes = new Uint8Array(Math.floor(n / 5) * 4 + (rest ? rest - 1 : 0));
  for (let i = 0, o = 0; i < n; i += 5) {
    let v = 0;
    for (let j = i; j < i + 5; j++) v = v * 85 + (j < n ? SAEW_B85_DIGIT[text.charCodeAt(j)] : 84);
    for (let shift = 24; shift >= 0 && o < bytes.length; shift -= 8) bytes[o++] = (v >>> shift) & 255;
  }
  return bytes;
}

/** Gzip-compressed page text back to bytes (the browser's DecompressionStream). */
SAEW.inflate = async function (text) {
  const stream = new Blob([saewBytes(text)]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
};

/** An embedded state value as the views receive it. */
SAEW.decode = async function (value) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    if (typeof value.__saew_bytes__ === "string") {
      const text = value.__saew_bytes__;
      const bytes = value.gzip ? await SAEW.inflate(text) : saewBytes(text);
      return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    }
    if (typeof value.__saew_json__ === "string") {
      return JSON.parse(new TextDecoder().decode(await SAEW.inflate(value.__saew_json__)));
    }
  }
  return value;
};

/** Sequential reads of unsigned and zigzag varints (static_html._varints) and length-prefixed JSON. */
function saewReader(bytes) {
  let at = 0;
  const r = {
    varint() {
      let n = 0, scale = 1, b;
      do { b = bytes[at++]; n += (b & 127) * scale; scale *= 128; } while (b & 128);
      return n;
    },
    signed() { const z = r.varint(); return z % 2 ? -(z + 1) / 2 : z / 2; },
    column(n, read) { const out = new Array(n); for (let i = 0; i < n; i++) out[i] = read(); return out; },
    deltas(n) { let previous = 0; return r.column(n, () => (previous += r.signed())); },
    json() {
      const length = r.varint();
      const value = JSON.parse(new TextDecoder().decode(bytes.subarray(at, at + length)));
      at += length;
      return value;
    },
  };
  return r;
}

/** The shared tables (static_html.packed_cards): token strings, the token stream, and each window's span. */
SAEW.unpackTables = function (bytes) {
  const r = saewReader(bytes);
  const strings = r.json();
  const stream = r.column(r.varint(), r.varint);
  const n = r.varint();
  const starts = r.deltas(n), lengths = r.column(n, r.varint);
  return { strings, stream, windows: starts.map((start, i) => [start, lengths[i]]) };
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
/** m * 10**e as JSON.parse gives the number's decimal text (static_html._decimal). */
const saewDecimal = (m, e) => (e < 0 ? m / SAEW_POW10[-e] : m * SAEW_POW10[e]);
// static_html.RECORD_FIELDS: lists of rows held as columns, and each row's index and value keys.
const SAEW_RECORD_FIELDS = [["promoted", "token", "value"], ["suppressed", "token", "value"],
  ["neighbours", "feature", "cosine"]];

/** One inflated card group (static_html._packed_group): the cards' JSON, columns of the group's distinct
 * contexts, columns of the cards' context slots (`0` in the JSON; row back-references and counts, card by card
 * in ascending feature order), then columns of each record field (a row count in the JSON); each slot becomes
 * its own copy of the context and each count its rows, as the JSON held them. */
SAEW.unpackGroup = function (bytes) {
  const r = saewReader(bytes);
  const cards = r.json();
  const n = r.varint();
  const w = r.deltas(n);
  const center = r.column(n, r.varint);
  const value = r.column(n, () => { const m = r.signed(); return saewDecimal(m, r.signed()); });
  const sizes = r.column(n, r.varint);
  const acts = sizes.map((size) => r.column(size, r.signed));
  const slots = r.varint();
  const back = r.column(slots, r.varint), counts = r.column(slots, r.varint);
  let slot = 0, next = 0;
  const context = (item) => {
    if (item !== 0) return item;  // a context the columns could not hold, kept as JSON
    const k = back[slot] ? next - back[slot] : next++;
    const out = { acts: acts[k].slice(), center: center[k], value: value[k], w: w[k] };
    if (counts[slot]) out.count = counts[slot];
    slot++;
    return out;
  };
  const order = Object.keys(cards).sort((a, b) => a - b).map((key) => cards[key]);
  for (const card of order) {
    if (card.top) card.top = card.top.map(context);
    for (const band of card.quantiles || []) if (band.examples) band.examples = band.examples.map(context);
  }
  for (const [field, index, val] of SAEW_RECORD_FIELDS) {
    const rows = r.varint();
    const indices = r.column(rows, r.varint), exponents = r.column(rows, r.signed), mantissas = r.deltas(rows);
    let k = 0;
    const row = () => { const out = { [index]: indices[k], [val]: saewDecimal(mantissas[k], exponents[k]) }; k++; return out; };
    for (const card of order) {
      if (typeof card[field] === "number") card[field] = r.column(card[field], row);  // else kept as JSON
    }
  }
  return cards;
};

/** Card lookup over packed cards: `has(i)` says whether a card was embedded, `get(i)` resolves to it (or null). */
SAEW.cardStore = function (packed) {
  const p = packed || { per_chunk: 1, features: [], chunks: {} };
  const embedded = new Set(p.features || []);
  const groups = {};
  let tables = null;
  async function group(key) {
    if (!tables) tables = SAEW.inflate(p.tables).then(SAEW.unpackTables);
    const [t, bytes] = await Promise.all([tables, SAEW.inflate(p.chunks[key])]);
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

/** Mount one view on its decoded state (its compressed values inflated first). */
SAEW.mount = async function (spec, cards) {
  const el = document.getElementById(spec.id);
  const view = SAEW.views[spec.view];
  if (!el || !view) return null;
  const entries = Object.entries(spec.state || {});
  const values = await Promise.all(entries.map(([, v]) => SAEW.decode(v)));
  const fallback = el.querySelector(".saew-fallback");
  if (fallback) fallback.remove();
  const model = saewLocalModel(Object.fromEntries(entries.map(([k], i) => [k, values[i]])), true);
  model.__saewCards = cards;
  view.render({ model, el });
  return model;
};

SAEW.boot = async function () {
  const node = document.getElementById("saew-data");
  if (!node) return;
  const data = JSON.parse(node.textContent);
  const cards = SAEW.cardStore(data.cards);
  const models = {};
  for (const spec of data.views || []) {
    try { models[spec.name] = await SAEW.mount(spec, cards); }
    catch (err) {
      const el = document.getElementById(spec.id);
      if (el) el.appendChild(Object.assign(document.createElement("pre"), { textContent: String(err) }));
    }
  }
  SAEW.models = models;
  SAEW.bootMs = performance.now();  // page start to every view drawn (tests report it)
};
