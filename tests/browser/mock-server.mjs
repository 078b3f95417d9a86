// mock-server.mjs - a stand-in for lam's serving, for developing and testing the dashboard
// without the C stack. It serves the dashboard exactly where serving does and answers the
// /v1/* API with deterministic fake data shaped as DESIGN.md §5 says.
//
//   node tests/browser/mock-server.mjs [port]        (default 8090; 0 = any free port)
//
// Routes (the same ones serving must provide, see dashboards/README.md):
//   GET /                      -> dashboards/index.html (sends the browser on to /d/default)
//   GET /d/{id}                -> dashboards/app/index.html
//   GET /app/*                 -> dashboards/app/* (static)
//   GET /v1/dashboards         -> [{"id","title"}]   (+ "error" for a file that does not parse)
//   GET /v1/dashboards/{id}    -> the file's bytes, 404 {"error":...} when missing
//   GET /v1/views              -> {"views":[...]} (shared/views.json)
//   GET /v1/views/{name}?from&to&granularity&where.F=v1,v2&top&order
//   GET /v1/status, GET /v1/batch/runs, GET /v1/batch/runs/{k}, POST /v1/batch/runs
//   GET /v1/tail?limit=N       -> {"events":[...]} newest first
// Test hooks: GET /__mock/requests (the API requests seen), POST /__mock/reset.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const DASH_DIR = path.join(root, 'dashboards');
const APP_DIR = path.join(DASH_DIR, 'app');
const FIXTURES = path.join(here, 'fixtures');
const VIEWS = JSON.parse(fs.readFileSync(path.join(root, 'shared', 'views.json'), 'utf8')).views;

const MIME = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8', '.json': 'application/json', '.svg': 'image/svg+xml', '.png': 'image/png',
  '.ico': 'image/x-icon', '.txt': 'text/plain; charset=utf-8', '.map': 'application/json',
};

// the Content-Security-Policy serving sends with static files: the page must work under it
const CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'";
const MIN = 60e3, HOUR = 3600e3, DAY = 86400e3;
const GRAN_ORDER = ['minute', 'hour', 'day', 'week', 'month', 'all'];

// ---- deterministic pseudo-random numbers ----
function hash(str) {
  let h = 2166136261 >>> 0;
  for (let i = 0; i < str.length; i++) { h ^= str.charCodeAt(i); h = Math.imul(h, 16777619) >>> 0; }
  h ^= h >>> 13; h = Math.imul(h, 0x5bd1e995) >>> 0; h ^= h >>> 15;
  return h >>> 0;
}
const rnd = (s) => hash(s) / 4294967296;

// ---- the fake world ----
const ITEMS = Array.from({ length: 14 }, (_, i) => `sku-${String(i * 7 + 3).padStart(5, '0')}`);
const PRICE = Object.fromEntries(ITEMS.map((it) => [it, Math.round(199 + rnd('p' + it) * 15000) / 100]));
const URLS = ['/', '/search', '/cart', '/deals', '/account', '/help', '/blog',
  ...ITEMS.slice(0, 9).map((it) => `/product/${it}`)];
const CCS = ['US', 'DE', 'GB', 'FR', 'IN', 'BR', 'JP', 'TH', 'CA', 'NL'];
const TYPES = { page_view: 30, add_to_cart: 4, purchase: 1.2, login: 3, signup: 0.4 }; // events/s at peak
const zipf = (list) => Object.fromEntries(list.map((k, i) => [k, 1 / (i + 1)]));
const GROUPS = {
  type: TYPES, item: zipf(ITEMS), url: zipf(URLS), 'geo.cc': zipf(CCS), plan: { free: 7, pro: 2, team: 1 },
};
const DATA_DAYS = 40; // no data older than this: older ranges are "empty"

function rhythm(ts) { // 0.35 at 04:00 UTC .. 1.0 at 16:00 UTC
  const h = (ts % DAY) / HOUR;
  return 0.675 + 0.325 * Math.cos(((h - 16) / 24) * 2 * Math.PI);
}

function viewRate(v) { // events/s into the view, before grouping
  const t = v.where && v.where.type;
  if (t) return TYPES[t] || 1;
  return Object.values(TYPES).reduce((a, b) => a + b, 0);
}

function alignDown(ts, gran) {
  const d = new Date(ts);
  switch (gran) {
    case 'minute': return ts - (ts % MIN);
    case 'hour': return ts - (ts % HOUR);
    case 'day': return ts - (ts % DAY);
    case 'week': { const day = ts - (ts % DAY); const dow = (new Date(day).getUTCDay() + 6) % 7; return day - dow * DAY; }
    case 'month': return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
    default: return ts;
  }
}
function nextBucket(ts, gran) {
  switch (gran) {
    case 'minute': return ts + MIN;
    case 'hour': return ts + HOUR;
    case 'day': return ts + DAY;
    case 'week': return ts + 7 * DAY;
    case 'month': { const d = new Date(ts); return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1); }
    default: return Infinity;
  }
}

// events of one group in [a, b) (a, b within one hour ideally; integrates the rhythm coarsely)
function groupEvents(v, groupKey, weight, a, b) {
  const now = Date.now();
  const lo = Math.max(a, now - DATA_DAYS * DAY), hi = Math.min(b, now);
  if (hi <= lo) return 0;
  let total = 0;
  const step = hi - lo > 2 * DAY ? HOUR : hi - lo > 2 * HOUR ? 10 * MIN : MIN;
  for (let t = lo; t < hi; t += step) {
    const span = Math.min(step, hi - t);
    const noise = 0.75 + 0.5 * rnd(`${v.name}|${groupKey}|${Math.floor(t / step)}`);
    total += viewRate(v) * weight * rhythm(t) * noise * (span / 1000);
  }
  return Math.round(total);
}

function metricValue(m, v, key, n, bucketTs) {
  if (m === 'count') return n;
  const [fn, field] = m.split(':');
  if (n === 0) return fn === 'distinct' || fn === 'sum' ? 0 : null;
  if (field === 'price') {
    const p = PRICE[key] || 49.99;
    if (fn === 'sum') return Math.round(n * p * (key in PRICE ? 1 : 1.7) * 100) / 100;
    if (fn === 'min') return p; if (fn === 'max') return key in PRICE ? p : 199.5;
  }
  if (field === 'latency_ms') {
    if (fn === 'sum') return Math.round(n * (80 + 60 * rnd('lat' + key)));
    if (fn === 'max') return Math.round(300 + 900 * rnd(`max${key}${bucketTs}`));
    if (fn === 'min') return 3;
  }
  if (field === 'qty') return fn === 'sum' ? Math.round(n * 1.6) : fn === 'max' ? 5 : 1;
  if (fn === 'distinct') return Math.max(1, Math.round(Math.pow(n, 0.82) * 1.3));
  return n;
}

// ---- mutable state: batch runs ----
let state;
function resetState() {
  const now = Date.now();
  const cut = alignDown(now - 3 * HOUR, 'minute') + 17 * 1000;
  const runs = [1, 2, 3].map((k) => {
    const req = cut - (3 - k) * DAY;
    return {
      run: k, status: 'succeeded', requested_at: iso(req), started_at: iso(req + 900), finished_at: iso(req + 41000 + k * 3000),
      cut_at: iso(req), progress: { records: 180000 * k, records_total: 180000 * k }, error: null,
    };
  });
  state = { runs, published: 3, cutAt: cut, requests: [], polls: {} };
}
resetState();
function iso(ms) { return ms; } // serving answers times as epoch ms

function advanceRuns() {
  for (const r of state.runs) {
    if (r.status !== 'requested' && r.status !== 'running') continue;
    const p = (state.polls[r.run] = (state.polls[r.run] || 0) + 1);
    const now = Date.now();
    if (r.status === 'requested' && p >= 1) { r.status = 'running'; r.started_at = iso(now); r.progress.records = 0; continue; }
    r.progress.records = Math.min(r.progress.records_total, Math.round(r.progress.records_total * (p - 1) / 4));
    if (r.progress.records >= r.progress.records_total) {
      r.status = 'succeeded'; r.finished_at = iso(now);
      state.published = r.run; state.cutAt = r.cut_at;
    }
  }
}

// ---- the view query ----
function parseTime(s, dflt) {
  if (s === undefined || s === null || s === '') return dflt;
  if (/^-?\d+$/.test(s)) return Number(s);
  const t = Date.parse(s);
  if (Number.isNaN(t)) throw new HttpError(400, 'bad_request', `from/to: not RFC 3339 or epoch ms: ${s}`);
  return t;
}
class HttpError extends Error { constructor(status, code, msg) { super(msg); this.status = status; this.code = code; } }

function queryView(name, q) {
  const v = VIEWS.find((x) => x.name === name);
  if (!v) throw new HttpError(404, 'not_found', `no view named ${name}`);
  const now = Date.now();
  const from = parseTime(q.get('from'), now - DAY);
  const to = parseTime(q.get('to'), now);
  if (to < from) throw new HttpError(400, 'bad_request', 'to < from');
  const gran = q.get('granularity') || v.granularity;
  if (!GRAN_ORDER.includes(gran)) throw new HttpError(400, 'bad_request', `granularity: unknown ${gran}`);
  if (GRAN_ORDER.indexOf(gran) < GRAN_ORDER.indexOf(v.granularity))
    throw new HttpError(400, 'bad_request', `granularity: ${gran} is finer than the view's (${v.granularity})`);
  const groupBy = v.group_by || [];
  const filters = [];
  for (const [k, val] of q) {
    if (!k.startsWith('where.')) continue;
    const f = k.slice(6), idx = groupBy.indexOf(f);
    if (idx < 0) throw new HttpError(400, 'bad_request', `where.${f}: the view does not group by ${f}`);
    filters.push({ idx, vals: val.split(',') });
  }
  const top = q.get('top') ? Number(q.get('top')) : 0;
  const order = q.get('order') || v.metrics[0];
  if (!v.metrics.includes(order)) throw new HttpError(400, 'bad_request', `order: not a metric of the view: ${order}`);
  let nb = 0;
  if (gran !== 'all') for (let t = alignDown(from, gran); t < to && nb < 20001; t = nextBucket(t, gran)) nb++;
  if (nb > 20000) throw new HttpError(400, 'too_many_buckets', `${nb} buckets: use a coarser granularity`);

  // groups
  let keys;
  if (groupBy.length === 0) keys = [[]];
  else {
    const weights = GROUPS[groupBy[0]] || { a: 1 };
    const sum = Object.values(weights).reduce((a, b) => a + b, 0);
    keys = Object.entries(weights).map(([k, w]) => [[k], w / sum]);
  }
  keys = keys.map((k) => (groupBy.length === 0 ? { key: [], w: 1 } : { key: k[0], w: k[1] }))
    .filter((g) => filters.every((f) => f.vals.includes(String(g.key[f.idx]))));

  const spans = [];
  if (gran === 'all') spans.push([from, to, from]);
  else for (let t = alignDown(from, gran); t < to; t = nextBucket(t, gran)) spans.push([Math.max(t, from), Math.min(nextBucket(t, gran), to), t]);
  const buckets = [];
  const totals = new Map();
  for (const [a, b, ts] of spans) {
    const groups = [];
    for (const g of keys) {
      const n = groupEvents(v, g.key.join('|'), g.w, a, b);
      if (n === 0) continue;
      const row = { key: g.key };
      for (const m of v.metrics) row[m] = metricValue(m, v, g.key[0], n, ts);
      groups.push(row);
      const kk = JSON.stringify(g.key);
      totals.set(kk, (totals.get(kk) || 0) + (row[order] || 0));
    }
    if (groups.length === 0) continue;
    const end = gran === 'all' ? to : nextBucket(ts, gran);
    const source = end <= state.cutAt ? 'batch' : ts >= state.cutAt ? 'speed' : 'both';
    buckets.push({ ts, source, groups });
  }
  if (top > 0 && totals.size > top) {
    const keep = new Set([...totals.entries()].sort((a, b) => b[1] - a[1]).slice(0, top).map((e) => e[0]));
    for (const b of buckets) b.groups = b.groups.filter((g) => keep.has(JSON.stringify(g.key)));
  }
  return {
    view: v.name, granularity: gran, from, to, group_by: groupBy, metrics: v.metrics,
    buckets: buckets.filter((b) => b.groups.length),
    coverage: { batch_run: state.published, batch_cut_at: state.cutAt, speed_epochs: [state.published] },
  };
}

function tail(limit) {
  const now = Date.now();
  const events = [];
  const types = Object.keys(TYPES);
  for (let i = 0; i < limit; i++) {
    const s = Math.floor(now / 1000) - i;
    const type = types[hash('t' + s + i) % 3 === 0 ? hash('u' + s) % types.length : 0];
    const ev = { id: `0193${hash('id' + s).toString(16).padStart(8, '0')}-${(i * 7919).toString(16).padStart(4, '0')}`, ts: s * 1000 - (hash('ms' + s) % 900), type };
    ev.user = `u${String(hash('usr' + s) % 90000).padStart(6, '0')}`;
    if (type === 'page_view') Object.assign(ev, { url: URLS[hash('url' + s) % URLS.length], device: ['desktop', 'mobile', 'tablet'][hash('dev' + s) % 3], 'geo.cc': CCS[hash('cc' + s) % CCS.length], latency_ms: 20 + (hash('l' + s) % 400) });
    if (type === 'purchase' || type === 'add_to_cart') { const it = ITEMS[hash('it' + s) % ITEMS.length]; Object.assign(ev, { item: it, qty: 1 + (hash('q' + s) % 3) }); if (type === 'purchase') ev.price = PRICE[it]; }
    if (type === 'signup') ev.plan = ['free', 'pro', 'team'][hash('pl' + s) % 3];
    events.push(ev);
  }
  return { events };
}

// ---- dashboards ----
function dashboardFiles() {
  const out = [];
  for (const dir of [DASH_DIR, FIXTURES]) {
    if (!fs.existsSync(dir)) continue;
    for (const f of fs.readdirSync(dir).sort()) {
      if (!f.endsWith('.json') || f.startsWith('package')) continue;
      out.push({ id: f.slice(0, -5), file: path.join(dir, f) });
    }
  }
  return out;
}

// ---- HTTP ----
function sendJSON(res, status, body) {
  const s = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
  res.end(s);
}
function sendError(res, status, code, message) { sendJSON(res, status, { error: { code, message } }); }
function sendFile(res, file) {
  fs.readFile(file, (err, data) => {
    if (err) return sendError(res, 404, 'not_found', 'no such file');
    res.writeHead(200, { 'Content-Type': MIME[path.extname(file)] || 'application/octet-stream', 'Cache-Control': 'no-cache', 'Content-Security-Policy': CSP, 'X-Content-Type-Options': 'nosniff' });
    res.end(data);
  });
}

function handle(req, res, body) {
  const url = new URL(req.url, 'http://x');
  const p = decodeURIComponent(url.pathname);
  if (p.startsWith('/v1/')) state.requests.push({ method: req.method, url: req.url, at: Date.now() });
  const delay = Number(process.env.MOCK_DELAY_MS || 0);
  const go = () => route(req, res, url, p, body);
  if (delay && p.startsWith('/v1/')) setTimeout(go, delay); else go();
}

function route(req, res, url, p, body) {
  let m;
  try {
    if (p === '/') return sendFile(res, path.join(DASH_DIR, 'index.html'));
    if ((m = p.match(/^\/d\/([A-Za-z0-9_-]{1,64})\/?$/))) return sendFile(res, path.join(APP_DIR, 'index.html'));
    if (p.startsWith('/app/')) {
      const f = path.normalize(path.join(APP_DIR, p.slice(5)));
      if (!f.startsWith(APP_DIR + path.sep)) return sendError(res, 404, 'not_found', 'no such file');
      return sendFile(res, f);
    }
    if (p === '/__mock/requests') return sendJSON(res, 200, state.requests);
    if (p === '/__mock/reset' && req.method === 'POST') { resetState(); return sendJSON(res, 200, { ok: true }); }
    if (p === '/healthz') return sendJSON(res, 200, { ok: true });
    if (p === '/v1/dashboards') {
      return sendJSON(res, 200, dashboardFiles().map(({ id, file }) => {
        try { const d = JSON.parse(fs.readFileSync(file, 'utf8')); return { id, title: typeof d.title === 'string' ? d.title : id }; }
        catch (e) { return { id, title: id, error: `${path.basename(file)}: ${e.message}` }; }
      }));
    }
    if ((m = p.match(/^\/v1\/dashboards\/([A-Za-z0-9_-]{1,64})$/))) {
      const d = dashboardFiles().find((x) => x.id === m[1]);
      if (!d) return sendError(res, 404, 'not_found', `no dashboard ${m[1]}`);
      return sendFile(res, d.file); // the bytes as they are: the page validates them
    }
    if (p === '/v1/views') return sendJSON(res, 200, { views: VIEWS });
    if ((m = p.match(/^\/v1\/views\/([a-z0-9_]{1,63})$/))) return sendJSON(res, 200, queryView(m[1], url.searchParams));
    if (p === '/v1/status') {
      advanceRuns();
      const t = Date.now() / 1000;
      const last = state.runs[state.runs.length - 1];
      return sendJSON(res, 200, {
        speed: { lag: Math.round(20 + 30 * Math.abs(Math.sin(t / 7))), group: 'lam-speed', offsets: {}, partition_epochs: {}, epochs: [state.published], stats: {} },
        archive: { lag: Math.round(150 + 100 * Math.abs(Math.sin(t / 11))), group: 'lam-archiver' },
        kafka: { reachable: true, topic: 'events', end_offsets: {}, total: 1234567, events_per_s: Math.round((36 + 4 * Math.sin(t / 5)) * 10) / 10, sampled_at: Date.now() },
        batch: { current_run: state.published, redis_current_run: state.published,
          last_run: { run: last.run, status: last.status, finished_at: last.finished_at, error: last.error, progress: last.progress } },
        backends: { postgresql: true, redis: true, kafka: true },
      });
    }
    if (p === '/v1/batch/runs' && req.method === 'POST') {
      let r = state.runs.find((x) => x.status === 'requested' || x.status === 'running');
      const created = !r;
      if (!r) {
        const k = Math.max(...state.runs.map((x) => x.run)) + 1, now = Date.now();
        r = { run: k, status: 'requested', requested_at: iso(now), started_at: null, finished_at: null, cut_at: iso(now),
          progress: { records: 0, records_total: 540000 + k * 1000 }, error: null };
        state.runs.push(r);
      }
      return sendJSON(res, 202, { run: r.run, status: r.status, created });
    }
    if (p === '/v1/batch/runs') { advanceRuns(); return sendJSON(res, 200, { runs: [...state.runs].reverse() }); }
    if ((m = p.match(/^\/v1\/batch\/runs\/(\d+)$/))) {
      advanceRuns();
      const r = state.runs.find((x) => x.run === Number(m[1]));
      return r ? sendJSON(res, 200, r) : sendError(res, 404, 'not_found', `no run ${m[1]}`);
    }
    if (p === '/v1/tail') {
      if (process.env.MOCK_NO_TAIL) return sendError(res, 404, 'not_found', 'no route');
      return sendJSON(res, 200, tail(Math.min(200, Number(url.searchParams.get('limit') || 50))));
    }
    return sendError(res, 404, 'not_found', `no route for ${req.method} ${p}`);
  } catch (e) {
    if (e instanceof HttpError) return sendError(res, e.status, e.code, e.message);
    console.error(e);
    return sendError(res, 500, 'internal', String(e && e.message));
  }
}

export function startMock(port = 0, host = '127.0.0.1') {
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => handle(req, res, Buffer.concat(chunks)));
  });
  return new Promise((resolve) => server.listen(port, host, () => {
    const { port: p } = server.address();
    resolve({ server, url: `http://${host}:${p}`, close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(r); }) });
  }));
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const port = Number(process.argv[2] ?? process.env.PORT ?? 8090);
  startMock(port).then(({ url }) => console.log(`mock lam serving on ${url}  (dashboard: ${url}/d/default)`));
}
