// schema.js - validation of dashboard files. Every problem is reported with its path.
import { parseTime, GRANS } from './time.js';

export const PANEL_TYPES = ['timeseries', 'tile', 'table', 'pie', 'pipeline', 'tail'];
export const DATA_TYPES = ['timeseries', 'tile', 'table', 'pie'];
export const STYLES = ['line', 'area', 'bars', 'stacked_bars'];
export const REFRESH = { off: 0, '5s': 5e3, '10s': 10e3, '30s': 30e3, '1m': 60e3 };
export const GRID_COLS = 24;
const METRIC_RE = /^(count|(sum|min|max|distinct):[A-Za-z0-9_.-]{1,128})$/;
const isInt = (v) => Number.isInteger(v);
const isStr = (v) => typeof v === 'string' && v.length > 0;

/** JSON.parse with a line:column in the message. */
export function parseJSONWithPosition(text, name) {
  try { return JSON.parse(text); } catch (e) {
    let msg = e.message.replace(/^JSON\.parse: /, '');
    const m = msg.match(/at position (\d+)/);
    const at = m ? Number(m[1]) : locateJSONError(text);
    if (at >= 0 && !/line \d+/.test(msg)) {
      const pos = at, before = text.slice(0, pos);
      const line = before.split('\n').length, col = pos - before.lastIndexOf('\n');
      msg += ` (line ${line} column ${col})`;
    }
    const err = new Error(`${name}: not valid JSON: ${msg}`);
    err.problems = [`not valid JSON: ${msg}`];
    throw err;
  }
}

/** Offset of the first JSON syntax error (-1 when none is found): a small recursive-descent scan. */
export function locateJSONError(t) {
  let i = 0;
  const ws = () => { while (i < t.length && ' \t\r\n'.includes(t[i])) i++; };
  const fail = () => { throw i; };
  const lit = (w) => { if (t.startsWith(w, i)) i += w.length; else fail(); };
  const str = () => {
    i++;
    while (i < t.length && t[i] !== '"') {
      if (t[i] === '\\') { i++; if (t[i] === 'u') { if (!/^[0-9a-fA-F]{4}$/.test(t.slice(i + 1, i + 5))) fail(); i += 4; } else if (!'"\\/bfnrt'.includes(t[i])) fail(); }
      else if (t.charCodeAt(i) < 0x20) fail();
      i++;
    }
    if (i >= t.length) fail();
    i++;
  };
  const num = () => { const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(t.slice(i)); if (!m) fail(); i += m[0].length; };
  const val = () => {
    ws();
    const c = t[i];
    if (c === '{') { i++; ws(); if (t[i] === '}') { i++; return; } for (;;) { ws(); if (t[i] !== '"') fail(); str(); ws(); if (t[i] !== ':') fail(); i++; val(); ws(); if (t[i] === ',') { i++; continue; } if (t[i] === '}') { i++; return; } fail(); } }
    if (c === '[') { i++; ws(); if (t[i] === ']') { i++; return; } for (;;) { val(); ws(); if (t[i] === ',') { i++; continue; } if (t[i] === ']') { i++; return; } fail(); } }
    if (c === '"') return str();
    if (c === 't') return lit('true');
    if (c === 'f') return lit('false');
    if (c === 'n') return lit('null');
    return num();
  };
  try { val(); ws(); if (i < t.length) fail(); return -1; } catch (pos) { return typeof pos === 'number' ? pos : -1; }
}

/** Structural problems of a dashboard object (empty array = valid). */
export function validateDashboard(d) {
  const p = [];
  if (!d || typeof d !== 'object' || Array.isArray(d)) return ['the file must hold a JSON object'];
  if (!isStr(d.id) || !/^[A-Za-z0-9_-]{1,64}$/.test(d.id)) p.push('id: required, 1..64 of [A-Za-z0-9_-]');
  if (!isStr(d.title)) p.push('title: required, a non-empty string');
  if (d.time !== undefined) {
    if (!d.time || typeof d.time !== 'object') p.push('time: must be {"from": ..., "to": ...}');
    else for (const k of ['from', 'to']) if (Number.isNaN(parseTime(d.time[k]))) p.push(`time.${k}: not a time ("now-24h", "now", epoch ms or RFC 3339): ${JSON.stringify(d.time[k])}`);
  }
  if (d.refresh !== undefined && !(d.refresh in REFRESH)) p.push(`refresh: must be one of ${Object.keys(REFRESH).join(', ')} (got ${JSON.stringify(d.refresh)})`);
  if (d.filters !== undefined) {
    if (!Array.isArray(d.filters)) p.push('filters: must be an array');
    else d.filters.forEach((f, i) => {
      if (!f || !isStr(f.field)) p.push(`filters[${i}].field: required string`);
      if (!f || !['string', 'number', 'boolean'].includes(typeof f.value)) p.push(`filters[${i}].value: required string, number or boolean`);
      if (f && f.negate !== undefined && typeof f.negate !== 'boolean') p.push(`filters[${i}].negate: must be true or false`);
    });
  }
  if (!Array.isArray(d.panels) || d.panels.length === 0) { p.push('panels: required, a non-empty array'); return p; }
  const ids = new Set();
  d.panels.forEach((x, i) => {
    const at = `panels[${i}]`;
    if (!x || typeof x !== 'object' || Array.isArray(x)) { p.push(`${at}: must be an object`); return; }
    if (x.id !== undefined) { if (!isStr(x.id)) p.push(`${at}.id: must be a string`); else if (ids.has(x.id)) p.push(`${at}.id: duplicate "${x.id}"`); else ids.add(x.id); }
    if (!PANEL_TYPES.includes(x.type)) p.push(`${at}.type: must be one of ${PANEL_TYPES.join(', ')} (got ${JSON.stringify(x.type)})`);
    if (x.title !== undefined && typeof x.title !== 'string') p.push(`${at}.title: must be a string`);
    if (DATA_TYPES.includes(x.type)) {
      if (!isStr(x.view)) p.push(`${at}.view: required, the name of a view`);
      if (!Array.isArray(x.metrics) || x.metrics.length === 0) p.push(`${at}.metrics: required, a non-empty array such as ["count"]`);
      else x.metrics.forEach((m, j) => { if (typeof m !== 'string' || !METRIC_RE.test(m)) p.push(`${at}.metrics[${j}]: not a metric (count, sum:F, min:F, max:F, distinct:F): ${JSON.stringify(m)}`); });
      if (x.order !== undefined && !(Array.isArray(x.metrics) && x.metrics.includes(x.order))) p.push(`${at}.order: must be one of the panel's metrics`);
      if (x.top !== undefined && !(isInt(x.top) && x.top >= 1 && x.top <= 1000)) p.push(`${at}.top: an integer 1..1000`);
      if (x.granularity !== undefined && x.granularity !== 'auto' && !GRANS.includes(x.granularity)) p.push(`${at}.granularity: auto or one of ${GRANS.join(', ')}`);
      if (x.range !== undefined && Number.isNaN(parseTime(x.range))) p.push(`${at}.range: a relative start such as "now-30d"`);
    }
    if (x.type === 'timeseries' && x.per !== undefined && !['second', 'minute', 'hour'].includes(x.per)) p.push(`${at}.per: one of second, minute, hour`);
    if (x.type === 'timeseries' && x.style !== undefined && !STYLES.includes(x.style)) p.push(`${at}.style: one of ${STYLES.join(', ')}`);
    if (x.type === 'tail' && x.limit !== undefined && !(isInt(x.limit) && x.limit >= 1 && x.limit <= 500)) p.push(`${at}.limit: an integer 1..500`);
    const g = x.grid;
    if (!g || typeof g !== 'object') p.push(`${at}.grid: required, {"x","y","w","h"} in a ${GRID_COLS}-column grid`);
    else {
      for (const k of ['x', 'y', 'w', 'h']) if (!isInt(g[k])) p.push(`${at}.grid.${k}: required integer`);
      if (isInt(g.x) && g.x < 0) p.push(`${at}.grid.x: must be >= 0`);
      if (isInt(g.y) && g.y < 0) p.push(`${at}.grid.y: must be >= 0`);
      if (isInt(g.w) && (g.w < 1 || g.w > GRID_COLS)) p.push(`${at}.grid.w: 1..${GRID_COLS}`);
      if (isInt(g.h) && (g.h < 1 || g.h > 100)) p.push(`${at}.grid.h: 1..100`);
      if (isInt(g.x) && isInt(g.w) && g.x + g.w > GRID_COLS) p.push(`${at}.grid: x + w = ${g.x + g.w} is beyond the ${GRID_COLS} columns`);
    }
  });
  return p;
}

/** Problems of one data panel against the view definitions (shown in that panel only). */
export function checkPanelAgainstView(panel, view) {
  if (!view) return [`no view named "${panel.view}" on this server`];
  const p = [];
  for (const m of panel.metrics) if (!(view.metrics || []).includes(m)) p.push(`the view "${view.name}" has no metric ${m} (it has ${(view.metrics || []).join(', ')})`);
  return p;
}
