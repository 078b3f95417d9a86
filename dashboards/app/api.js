// api.js - the public REST API of lam's serving (DESIGN.md §5), nothing else.
export class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function request(method, path, { signal, body, headers } = {}) {
  let r;
  try {
    r = await fetch(path, { method, signal, body, headers: { Accept: 'application/json', ...(headers || {}) }, cache: 'no-store' });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', `cannot reach the server (${e.message})`);
  }
  const text = await r.text();
  return { r, text };
}

function decode(r, text) {
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = undefined; }
  if (!r.ok) {
    const e = body && body.error;
    throw new ApiError(r.status, (e && e.code) || `http_${r.status}`,
      (e && e.message) || (typeof e === 'string' ? e : `${r.status} ${r.statusText}`.trim()));
  }
  if (body === undefined) throw new ApiError(r.status, 'bad_json', 'the server answered with something that is not JSON');
  return body;
}

export async function getJSON(path, opts) { const { r, text } = await request('GET', path, opts); return decode(r, text); }
/** The raw text of a 2xx answer (a dashboard file is parsed and validated by the page itself). */
export async function getText(path, opts) {
  const { r, text } = await request('GET', path, opts);
  if (!r.ok) decode(r, text);
  return text;
}
export async function postJSON(path, payload, opts = {}) {
  const headers = { 'Content-Type': 'application/json', ...(opts.headers || {}) };
  const { r, text } = await request('POST', path, { ...opts, headers, body: JSON.stringify(payload ?? {}) });
  return decode(r, text);
}

/** Build /v1/views/{name}?from&to&granularity&where.F=v1,v2&top&order */
export function viewURL(name, { from, to, granularity, where = {}, top, order }) {
  const q = new URLSearchParams();
  q.set('from', String(Math.round(from)));
  q.set('to', String(Math.round(to)));
  if (granularity) q.set('granularity', granularity);
  for (const [f, vals] of Object.entries(where)) if (vals.length) q.set(`where.${f}`, vals.join(','));
  if (top) q.set('top', String(top));
  if (order) q.set('order', order);
  return `/v1/views/${encodeURIComponent(name)}?${q}`;
}

export const queryView = (name, params, opts) => getJSON(viewURL(name, params), opts);
export const listViews = async (opts) => { const b = await getJSON('/v1/views', opts); return Array.isArray(b) ? b : b.views || []; };
export const listDashboards = async (opts) => { const b = await getJSON('/v1/dashboards', opts); return Array.isArray(b) ? b : b.dashboards || []; };
export const getStatus = (opts) => getJSON('/v1/status', opts);
export const listRuns = async (opts) => { const b = await getJSON('/v1/batch/runs', opts); return Array.isArray(b) ? b : b.runs || []; };
export const getRun = (k, opts) => getJSON(`/v1/batch/runs/${encodeURIComponent(k)}`, opts);
export function startRun() {
  const token = localStorage.getItem('lam.adminToken');
  return postJSON('/v1/batch/runs', {}, token ? { headers: { Authorization: `Bearer ${token}` } } : {});
}
export const getTail = (limit, opts) => getJSON(`/v1/tail?limit=${limit}`, opts);
