// time.js - time expressions ("now-24h", epoch ms, RFC 3339), ranges, granularities.
export const MIN = 60e3, HOUR = 3600e3, DAY = 86400e3;
const UNIT = { s: 1e3, m: MIN, h: HOUR, d: DAY, w: 7 * DAY };
export const GRANS = ['minute', 'hour', 'day', 'week', 'month', 'all'];
export const GRAN_MS = { minute: MIN, hour: HOUR, day: DAY, week: 7 * DAY, month: 30 * DAY };
export const QUICK = [['15m', 'Last 15 minutes'], ['1h', 'Last 1 hour'], ['24h', 'Last 24 hours'], ['7d', 'Last 7 days'], ['30d', 'Last 30 days']];

/** Parse a time expression to epoch ms; NaN when invalid. */
export function parseTime(expr, now = Date.now()) {
  if (typeof expr === 'number') return Number.isFinite(expr) ? expr : NaN;
  if (typeof expr !== 'string') return NaN;
  const s = expr.trim();
  if (s === 'now') return now;
  let m = s.match(/^now-(\d+)([smhdw])$/);
  if (m) return now - Number(m[1]) * UNIT[m[2]];
  if (/^\d{9,}$/.test(s)) return Number(s);
  if (/^\d{4}-\d\d-\d\d/.test(s)) return Date.parse(s);
  return NaN;
}
export const isRelative = (e) => typeof e === 'string' && /^now(-\d+[smhdw])?$/.test(e.trim());

/** Resolve {from,to} expressions to ms. */
export function resolveRange(from, to, now = Date.now()) {
  return { from: parseTime(from, now), to: parseTime(to, now) };
}

export function rangeLabel(from, to) {
  if (to === 'now') {
    const q = QUICK.find(([k]) => from === 'now-' + k);
    if (q) return q[1];
    const m = String(from).match(/^now-(\d+)([smhdw])$/);
    if (m) return `Last ${m[1]}${m[2]}`;
  }
  const a = parseTime(from), b = parseTime(to);
  return `${fmtDateTime(a)} → ${fmtDateTime(b)}`;
}

const pad = (n) => String(n).padStart(2, '0');
export function fmtDateTime(ms, withSeconds = false) {
  if (!Number.isFinite(ms)) return '—';
  const d = new Date(ms);
  const s = `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
  return withSeconds ? `${s}:${pad(d.getUTCSeconds())}` : s;
}
export function fmtTime(ms) {
  const d = new Date(ms);
  return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
}
/** Value for <input type=datetime-local> in UTC. */
export function toLocalInput(ms) {
  if (!Number.isFinite(ms)) return '';
  return new Date(ms - (ms % 1000)).toISOString().slice(0, 19);
}
export function fromLocalInput(v) { return v ? Date.parse(v + (v.length === 16 ? ':00Z' : 'Z')) : NaN; }

export function fmtDuration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const sec = Math.round(s);
  if (sec < 3600) return `${Math.floor(sec / 60)} min ${sec % 60} s`;
  const min = Math.round(s / 60);
  if (min < 1440) return `${Math.floor(min / 60)} h ${min % 60} min`;
  const h = Math.round(s / 3600);
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}
export function fmtAgo(ms, now = Date.now()) {
  if (!Number.isFinite(ms)) return '—';
  return fmtDuration(now - ms) + ' ago';
}
export function spanLabel(ms) {
  for (const [u, n, l] of [[DAY, 1, 'day'], [HOUR, 1, 'hour'], [MIN, 1, 'minute']]) {
    if (ms % u === 0 && ms >= u) { const k = ms / u; return k === 1 ? `1 ${l}` : `${k} ${l}s`; }
  }
  return fmtDuration(ms);
}

/**
 * The granularity to query: at least the view's and the panel's, coarsened until the range
 * holds at most maxBuckets buckets.
 */
export function pickGranularity(viewGran, panelGran, from, to, maxBuckets = 400) {
  let i = Math.max(GRANS.indexOf(viewGran || 'minute'), 0);
  if (panelGran && panelGran !== 'auto' && GRANS.includes(panelGran)) i = Math.max(i, GRANS.indexOf(panelGran));
  while (GRANS[i] !== 'all' && GRANS[i] !== 'month' && (to - from) / GRAN_MS[GRANS[i]] > maxBuckets) i++;
  return GRANS[i];
}

export function alignDown(ts, gran) {
  switch (gran) {
    case 'minute': return ts - (ts % MIN);
    case 'hour': return ts - (ts % HOUR);
    case 'day': return ts - (ts % DAY);
    case 'week': { const day = ts - (ts % DAY); return day - ((new Date(day).getUTCDay() + 6) % 7) * DAY; }
    case 'month': { const d = new Date(ts); return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1); }
    default: return ts;
  }
}
export function nextBucket(ts, gran) {
  if (gran === 'month') { const d = new Date(ts); return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1); }
  return ts + (GRAN_MS[gran] || Infinity);
}
