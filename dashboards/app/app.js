// app.js - the dashboard page: loads a dashboard file, keeps the state (time range, refresh,
// filters) in the URL, lays the panels out and refreshes them.
import * as api from './api.js';
import { el } from './format.js';
import { parseJSONWithPosition, validateDashboard, REFRESH } from './schema.js';
import { createPanel } from './panels.js';
import { parseTime, isRelative, rangeLabel, toLocalInput, fromLocalInput, fmtTime } from './time.js';

const LOCAL_PREFIX = 'lam.dashboard:';
const $ = (id) => document.getElementById(id);

const S = {
  id: 'default', source: 'server', dash: null, rawDash: null,
  from: 'now-24h', to: 'now', refresh: 'off', filters: [],
  views: new Map(), viewsError: null, panels: [], timer: null, overdue: false, lastRefresh: 0,
};

// ------------------------------------------------------------------ URL state
function readURL() {
  const m = location.pathname.match(/^\/d\/([^/]+)\/?$/);
  const q = new URLSearchParams(location.search);
  return {
    id: m ? decodeURIComponent(m[1]) : null,
    source: q.get('source') === 'local' ? 'local' : 'server',
    from: q.get('from'), to: q.get('to'), refresh: q.get('refresh'),
    filters: q.getAll('f').map(parsePill).filter(Boolean), hasState: q.has('from') || q.has('to'),
  };
}
function parsePill(s) {
  const negate = s.startsWith('-');
  const body = negate ? s.slice(1) : s;
  const i = body.indexOf(':');
  if (i <= 0) return null;
  return { field: body.slice(0, i), value: body.slice(i + 1), negate };
}
function writeURL(push) {
  const q = new URLSearchParams();
  if (S.source === 'local') q.set('source', 'local');
  q.set('from', S.from); q.set('to', S.to); q.set('refresh', S.refresh);
  for (const f of S.filters) q.append('f', `${f.negate ? '-' : ''}${f.field}:${f.value}`);
  const url = `/d/${encodeURIComponent(S.id)}?${q}`;
  if (url === location.pathname + location.search) return;
  history[push ? 'pushState' : 'replaceState'](null, '', url);
}

// ------------------------------------------------------------------ toasts
export function toast(msg, kind = 'info', ms = 4000) {
  const t = el('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, msg,
    el('button', { type: 'button', class: 'toast-x', 'aria-label': 'Dismiss', onclick: () => t.remove() }, '×'));
  $('toasts').append(t);
  if (ms) setTimeout(() => t.remove(), ms);
  return t;
}

// ------------------------------------------------------------------ the panels' context
const ctx = {
  get views() { return S.views; },
  get viewsError() { return S.viewsError; },
  toast,
  addFilter(field, value, negate = false) {
    const v = String(value);
    const same = S.filters.find((f) => f.field === field && f.value === v);
    if (same) { if (same.negate === negate) return; same.negate = negate; }
    else S.filters.push({ field, value: v, negate });
    filtersChanged();
  },
  setAbsoluteRange(from, to) { setRange(String(from), String(to)); },
  refreshAll: (why) => refreshAll(why),
};

// ------------------------------------------------------------------ filters
function filtersChanged() { writeURL(true); renderPills(); refreshAll('filters'); }
function renderPills() {
  const pills = S.filters.map((f, i) => el('span', {
    class: `pill ${f.negate ? 'neg' : ''}`, 'data-field': f.field, 'data-value': f.value, 'data-negate': f.negate ? '1' : '0',
    title: `${f.negate ? 'NOT ' : ''}${f.field}: ${f.value} — applies to panels whose view groups by ${f.field}` + (f.negate ? ' (negation is applied in the browser: the API has no negation)' : ''),
  },
  el('button', { type: 'button', class: 'pill-neg', title: f.negate ? 'Include this value' : 'Exclude this value (negate)', 'aria-label': 'Negate filter', onclick: () => { f.negate = !f.negate; filtersChanged(); } }, f.negate ? '≠' : '='),
  el('span', { class: 'pill-text' }, el('span', { class: 'pill-field' }, f.field), ': ', el('span', { class: 'pill-value' }, f.value)),
  el('button', { type: 'button', class: 'pill-x', title: 'Remove filter', 'aria-label': 'Remove filter', onclick: () => { S.filters.splice(i, 1); filtersChanged(); } }, '×')));
  $('pills').replaceChildren(...(pills.length ? pills : [el('span', { class: 'muted no-filters' }, 'none — click a legend item, slice or table row to add one')]));
}
function setupFilterForm() {
  $('add-filter').addEventListener('submit', (e) => {
    e.preventDefault();
    let field = $('af-field').value.trim(); const value = $('af-value').value.trim();
    if (!field || !value) return;
    let negate = false;
    if (field.startsWith('-') || field.startsWith('!')) { negate = true; field = field.slice(1); }
    $('af-field').value = ''; $('af-value').value = '';
    ctx.addFilter(field, value, negate);
  });
}
function updateFieldList() {
  const fields = new Set();
  for (const v of S.views.values()) for (const f of v.group_by || []) fields.add(f);
  $('af-fields').replaceChildren(...[...fields].sort().map((f) => el('option', { value: f })));
}

// ------------------------------------------------------------------ time range & refresh
function setRange(from, to) {
  S.from = from; S.to = to;
  writeURL(true); renderTimeLabel(); refreshAll('time range');
}
function renderTimeLabel() {
  $('tp-label').textContent = rangeLabel(S.from, S.to);
  $('tp-from').value = toLocalInput(parseTime(S.from));
  $('tp-to').value = toLocalInput(parseTime(S.to));
  for (const b of document.querySelectorAll('[data-quick]')) b.classList.toggle('active', S.to === 'now' && S.from === 'now-' + b.dataset.quick);
}
function setupTimePicker() {
  const menu = $('tp-menu'), btn = $('tp-button');
  const close = () => { menu.hidden = true; btn.setAttribute('aria-expanded', 'false'); };
  btn.addEventListener('click', (e) => { e.stopPropagation(); menu.hidden = !menu.hidden; btn.setAttribute('aria-expanded', String(!menu.hidden)); renderTimeLabel(); });
  menu.addEventListener('click', (e) => e.stopPropagation());
  document.addEventListener('click', close);
  document.addEventListener('keydown', (e) => { if (e.key === 'Escape') { close(); $('menu').hidden = true; } });
  for (const b of menu.querySelectorAll('[data-quick]')) b.addEventListener('click', () => { close(); setRange('now-' + b.dataset.quick, 'now'); });
  $('tp-abs').addEventListener('submit', (e) => {
    e.preventDefault();
    const a = fromLocalInput($('tp-from').value), b = fromLocalInput($('tp-to').value);
    if (!Number.isFinite(a) || !Number.isFinite(b) || b <= a) { $('tp-err').textContent = 'From must be before To.'; return; }
    $('tp-err').textContent = '';
    close(); setRange(String(a), String(b));
  });
}
function setupRefresh() {
  const sel = $('refresh-select');
  sel.addEventListener('change', () => { S.refresh = sel.value; writeURL(false); schedule(); status(); });
  $('refresh-now').addEventListener('click', () => refreshAll('manual'));
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && S.overdue) refreshAll('visible again');
    status();
  });
}
function schedule() {
  clearTimeout(S.timer);
  const ms = REFRESH[S.refresh] || 0;
  if (!ms) return;
  S.timer = setTimeout(() => {
    if (document.hidden) { S.overdue = true; status(); return; } // paused while the tab is hidden
    refreshAll('auto');
  }, Math.max(500, ms - (Date.now() - S.lastRefresh)));
}
function status() {
  const parts = [];
  if (S.lastRefresh) parts.push(`Updated ${fmtTime(S.lastRefresh)} UTC`);
  if (REFRESH[S.refresh]) parts.push(document.hidden ? 'auto-refresh paused (tab hidden)' : `auto-refresh ${S.refresh}`);
  $('status-line').textContent = parts.join(' · ');
  $('refresh-select').value = S.refresh in REFRESH ? S.refresh : 'off';
}

function refreshAll(why) {
  S.overdue = false;
  S.lastRefresh = Date.now();
  const now = S.lastRefresh;
  let from = parseTime(S.from, now), to = parseTime(S.to, now);
  if (!Number.isFinite(from) || !Number.isFinite(to) || to <= from) { toast('Invalid time range: using the last 24 hours', 'error'); S.from = 'now-24h'; S.to = 'now'; from = now - 864e5; to = now; renderTimeLabel(); }
  const q = { from, to, now, filters: S.filters.map((f) => ({ ...f })), why };
  document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
  for (const p of S.panels) p.refresh(q);
  status();
  schedule();
}

// ------------------------------------------------------------------ dashboards
function localDashboards() {
  const out = [];
  for (let i = 0; i < localStorage.length; i++) {
    const k = localStorage.key(i);
    if (!k.startsWith(LOCAL_PREFIX)) continue;
    try { const d = JSON.parse(localStorage.getItem(k)); out.push({ id: k.slice(LOCAL_PREFIX.length), title: d.title || k }); } catch { /* skip */ }
  }
  return out.sort((a, b) => a.title.localeCompare(b.title));
}

async function fillPicker(serverList, listErr) {
  const sel = $('dash-select');
  const opts = [];
  const server = (serverList || []).filter((d) => d && d.id && !/^package(-lock)?$/.test(d.id));
  const g1 = el('optgroup', { label: listErr ? `Server (unavailable: ${listErr.message})` : 'Dashboards' },
    server.map((d) => el('option', { value: `server:${d.id}` }, `${d.error ? '⚠ ' : ''}${d.title || d.id}`)));
  opts.push(g1);
  const local = localDashboards();
  if (local.length) opts.push(el('optgroup', { label: 'Imported (this browser)' }, local.map((d) => el('option', { value: `local:${d.id}` }, `${d.title} (imported)`))));
  sel.replaceChildren(...opts);
  const cur = `${S.source}:${S.id}`;
  if (![...sel.options].some((o) => o.value === cur)) sel.append(el('option', { value: cur }, `${S.id}`));
  sel.value = cur;
  sel.onchange = () => {
    const [src, ...rest] = sel.value.split(':');
    const id = rest.join(':');
    const q = new URLSearchParams({ from: S.from, to: S.to, refresh: S.refresh });
    if (src === 'local') q.set('source', 'local');
    location.assign(`/d/${encodeURIComponent(id)}?${q}`);
  };
}

async function loadDashboard() {
  let text, name;
  if (S.source === 'local') {
    name = `imported dashboard "${S.id}" (browser storage)`;
    text = localStorage.getItem(LOCAL_PREFIX + S.id);
    if (text === null) throw Object.assign(new Error(`no imported dashboard "${S.id}" in this browser`), { problems: [] });
  } else {
    name = `dashboards/${S.id}.json`;
    try { text = await api.getText(`/v1/dashboards/${encodeURIComponent(S.id)}`); } catch (e) {
      const err = new Error(e.status === 404 ? `no dashboard "${S.id}" on this server` : `${name}: ${e.message}`);
      err.problems = e.status === 404 ? [] : [e.message];
      throw err;
    }
  }
  const d = parseJSONWithPosition(text, name);
  const problems = validateDashboard(d);
  if (problems.length) throw Object.assign(new Error(`${name} is not a valid dashboard`), { problems });
  return d;
}

function showDashboardError(err) {
  console.error('dashboard:', err.message, err.problems || '');
  $('dash-title').textContent = S.id;
  document.title = `${S.id} (error) · lam`;
  const problems = err.problems || [];
  $('grid').replaceChildren(el('section', { class: 'dash-error', 'data-state': 'error', role: 'alert' },
    el('div', { class: 'dash-error-icon' }, '!'),
    el('div', {},
      el('h2', {}, 'This dashboard cannot be shown'),
      el('p', { class: 'dash-error-msg' }, err.message),
      problems.length ? el('ul', { class: 'problems' }, problems.map((p) => el('li', {}, el('code', {}, p)))) : null,
      el('p', { class: 'muted' }, 'Fix the file and reload, or pick another dashboard from the list above. ',
        el('a', { href: '/d/default' }, 'Open the default dashboard')))));
}

function layout() {
  const grid = $('grid');
  for (const p of S.panels) p.dispose();
  S.panels = S.dash.panels.map((def, i) => {
    def = { ...def, id: def.id || `p${i}` };
    try { return createPanel(def, ctx); } catch (e) { console.error(e); return null; }
  }).filter(Boolean);
  grid.replaceChildren(...S.panels.map((p) => p.el));
  const rows = Math.max(...S.dash.panels.map((p) => p.grid.y + p.grid.h));
  grid.style.setProperty('--rows', rows);
}

// ------------------------------------------------------------------ export / import
function currentAsFile() {
  const d = JSON.parse(JSON.stringify(S.rawDash));
  d.time = { from: S.from, to: S.to };
  d.refresh = S.refresh;
  d.filters = S.filters.map((f) => ({ field: f.field, value: f.value, ...(f.negate ? { negate: true } : {}) }));
  return d;
}
function setupMenu() {
  const menu = $('menu');
  $('menu-button').addEventListener('click', (e) => { e.stopPropagation(); menu.hidden = !menu.hidden; });
  document.addEventListener('click', () => { menu.hidden = true; });
  $('export-btn').addEventListener('click', () => {
    menu.hidden = true;
    if (!S.rawDash) return toast('Nothing to export: this dashboard did not load', 'error');
    const blob = new Blob([JSON.stringify(currentAsFile(), null, 2) + '\n'], { type: 'application/json' });
    const a = el('a', { href: URL.createObjectURL(blob), download: `${S.dash.id}.json` });
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 5000);
    toast(`Exported ${S.dash.id}.json — put it in dashboards/ to share it`, 'ok');
  });
  $('import-btn').addEventListener('click', () => { menu.hidden = true; $('import-file').click(); });
  $('import-file').addEventListener('change', async (e) => {
    const file = e.target.files[0];
    e.target.value = '';
    if (!file) return;
    importText(await file.text(), file.name);
  });
  $('copy-link').addEventListener('click', async () => {
    menu.hidden = true;
    try { await navigator.clipboard.writeText(location.href); toast('Link copied', 'ok'); } catch { toast(location.href, 'info', 10000); }
  });
}
export function importText(text, name) {
  let d, problems;
  try { d = parseJSONWithPosition(text, name); problems = validateDashboard(d); } catch (e) { problems = e.problems || [e.message]; }
  if (problems.length) {
    const t = toast(el('div', { class: 'import-error', 'data-role': 'import-error' }, el('b', {}, `${name} was not imported:`), el('ul', {}, problems.slice(0, 8).map((p) => el('li', {}, p)))), 'error', 0);
    return t;
  }
  localStorage.setItem(LOCAL_PREFIX + d.id, JSON.stringify(d));
  location.assign(`/d/${encodeURIComponent(d.id)}?source=local`);
}

// ------------------------------------------------------------------ boot
async function boot() {
  const u = readURL();
  S.id = u.id || 'default';
  S.source = u.source;
  setupTimePicker(); setupRefresh(); setupMenu(); setupFilterForm();
  const listP = api.listDashboards().then((l) => [l, null], (e) => [[], e]);
  const viewsP = api.listViews().then((v) => { for (const x of v) S.views.set(x.name, x); updateFieldList(); }, (e) => { S.viewsError = e; console.error('views:', e); });
  let err = null;
  try { S.dash = await loadDashboard(); } catch (e) { err = e; }
  S.rawDash = S.dash;
  const d = S.dash || {};
  S.from = u.from || d.time?.from || 'now-24h';
  S.to = u.to || d.time?.to || 'now';
  if (!Number.isFinite(parseTime(S.from)) || !Number.isFinite(parseTime(S.to))) { S.from = 'now-24h'; S.to = 'now'; }
  S.refresh = u.refresh in REFRESH ? u.refresh : d.refresh in REFRESH ? d.refresh : 'off';
  S.filters = u.hasState || u.filters.length ? u.filters : (d.filters || []).map((f) => ({ field: f.field, value: String(f.value), negate: !!f.negate }));
  renderTimeLabel(); renderPills(); status();
  const [list, listErr] = await listP;
  fillPicker(list, listErr);
  if (err) { showDashboardError(err); writeURL(false); schedule(); document.body.dataset.ready = 'error'; return; }
  $('dash-title').textContent = d.title;
  if (d.description) $('dash-title').title = d.description;
  document.title = `${d.title} · lam`;
  writeURL(false);
  await viewsP;
  layout();
  refreshAll('load');
  document.body.dataset.ready = '1';
}

window.addEventListener('popstate', () => {
  const u = readURL();
  if ((u.id || 'default') !== S.id || u.source !== S.source) { location.reload(); return; }
  S.from = u.from || S.from; S.to = u.to || S.to;
  if (u.refresh in REFRESH) S.refresh = u.refresh;
  S.filters = u.filters;
  renderTimeLabel(); renderPills(); refreshAll('history');
});
window.lam = { state: S, importText };
boot().catch((e) => { console.error(e); showDashboardError(e); });
