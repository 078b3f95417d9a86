// panels.js - the panel types. Each panel owns its element, its requests and its state
// (loading / ready / empty / error / unavailable); one failing panel never touches another.
import * as api from './api.js';
import { el, fmtNum, fmtAxis, metricLabel, keyLabel, PALETTE } from './format.js';
import { parseTime, pickGranularity, alignDown, nextBucket, fmtDateTime, fmtTime, fmtAgo, fmtDuration, spanLabel, GRAN_MS } from './time.js';
import { checkPanelAgainstView } from './schema.js';

const AXIS = '#69707d', GRIDLINE = '#eef0f4';
/** Chart text follows the page's root font size (larger on a wall display). */
const fs = (px) => Math.round(px * (parseFloat(getComputedStyle(document.documentElement).fontSize) || 14) / 14);
const PER = { second: 1e3, minute: 60e3, hour: 3600e3 };
const ADDITIVE = (m) => m === 'count' || m.startsWith('sum:') || m.startsWith('distinct:');

function ec() {
  if (!window.echarts) throw new Error('the chart library is missing: run `npm ci && npm run build` in dashboards/');
  return window.echarts;
}

class Panel {
  constructor(def, ctx) {
    this.def = def; this.ctx = ctx; this.seq = 0; this.abort = null; this.chart = null;
    const g = def.grid || { x: 0, y: 0, w: 6, h: 4 };
    this.titleEl = el('h2', { class: 'panel-title', title: def.description || def.title || '' }, def.title || defaultTitle(def));
    this.metaEl = el('span', { class: 'panel-meta' });
    this.badgeEl = el('span', { class: 'panel-badges' });
    this.loadEl = el('div', { class: 'panel-loadbar' });
    this.body = el('div', { class: 'panel-body' });
    this.msgEl = el('div', { class: 'panel-msg', hidden: true });
    this.el = el('section', {
      class: `panel panel-${def.type}`, 'data-panel': def.id || '', 'data-type': def.type, 'data-state': 'loading',
      style: { '--x': g.x + 1, '--y': g.y + 1, '--w': g.w, '--h': g.h },
    }, el('header', { class: 'panel-head' }, this.titleEl, this.badgeEl, this.metaEl), this.loadEl, this.body, this.msgEl);
    this.ro = new ResizeObserver(() => this.chart && this.chart.resize());
    this.ro.observe(this.body);
  }
  setState(state, message, detail) {
    this.el.dataset.state = state;
    this.el.classList.toggle('is-loading', state === 'loading');
    const showMsg = state === 'empty' || state === 'error' || state === 'unavailable' || (state === 'loading' && !this.hasContent);
    this.msgEl.hidden = !showMsg;
    this.body.classList.toggle('dimmed', showMsg);
    if (!showMsg) return;
    this.msgEl.className = `panel-msg msg-${state}`;
    this.msgEl.replaceChildren(
      el('div', { class: 'msg-icon' }, { loading: '', empty: '∅', error: '!', unavailable: '⊘' }[state]),
      el('div', { class: 'msg-text' }, message || { loading: 'Loading…', empty: 'No data in this range' }[state] || ''),
      ...(detail ? [el('div', { class: 'msg-detail' }, detail)] : []));
  }
  /** Run one refresh; stale answers (an older refresh finishing late) are dropped. */
  async refresh(q) {
    const seq = ++this.seq;
    if (this.abort) this.abort.abort();
    const ac = (this.abort = new AbortController());
    this.setState('loading');
    try {
      const result = await this.load(q, ac.signal);
      if (seq !== this.seq) return;
      this.render(result, q);
    } catch (e) {
      if (e.name === 'AbortError' || seq !== this.seq) return;
      this.fail(e);
    }
  }
  fail(e) {
    console.error(`panel "${this.def.title}":`, e);
    const where = e.status ? `HTTP ${e.status}${e.code ? ' · ' + e.code : ''}` : e.code || '';
    this.setState('error', e.message || String(e), where);
  }
  ready() { this.hasContent = true; this.setState('ready'); }
  empty(msg) { this.setState('empty', msg || 'No data in this range', 'Try a wider time range or remove filters.'); }
  dispose() { this.seq++; if (this.abort) this.abort.abort(); this.ro.disconnect(); if (this.chart) this.chart.dispose(); if (this.timer) clearTimeout(this.timer); }
  ensureChart(container) {
    if (!this.chart) this.chart = ec().init(container || this.body, null, { renderer: 'canvas' });
    return this.chart;
  }
}

function defaultTitle(def) { return def.view ? `${def.view} · ${def.metrics?.[0]}` : def.type; }

// ---------------------------------------------------------------- data panels

class DataPanel extends Panel {
  get view() { return this.ctx.views.get(this.def.view); }
  range(q) {
    if (this.def.range) {
      const from = parseTime(this.def.range, q.now);
      return { from, to: q.now, fixed: true };
    }
    return { from: q.from, to: q.to };
  }
  /** Split the dashboard filters into server-side where (positive) and client-side negations. */
  filtersFor(filters) {
    const gb = (this.view && this.view.group_by) || [];
    const where = {}, neg = {};
    let applied = 0;
    for (const f of filters) {
      if (!gb.includes(f.field)) continue;
      applied++;
      const bag = f.negate ? neg : where;
      (bag[f.field] = bag[f.field] || []).push(String(f.value));
    }
    return { where, neg, applied, negCount: Object.values(neg).reduce((a, v) => a + v.length, 0) };
  }
  async query(params, neg, signal) {
    const resp = await api.queryView(this.def.view, params, { signal });
    const gb = resp.group_by || (this.view && this.view.group_by) || [];
    const negIdx = Object.entries(neg).map(([f, vals]) => [gb.indexOf(f), new Set(vals)]).filter(([i]) => i >= 0);
    if (negIdx.length) {
      for (const b of resp.buckets || []) b.groups = b.groups.filter((g) => !negIdx.some(([i, s]) => s.has(String(g.key?.[i]))));
      resp.buckets = (resp.buckets || []).filter((b) => b.groups.length);
    }
    resp.buckets = resp.buckets || [];
    return resp;
  }
  precheck() {
    if (!this.ctx.viewsError) {
      const p = checkPanelAgainstView(this.def, this.view);
      if (p.length) { const e = new Error(p.join('; ')); e.code = 'panel_config'; throw e; }
    }
  }
  granularity(from, to, max) {
    const v = this.view;
    return pickGranularity(v ? v.granularity : this.def.granularity || 'hour', this.def.granularity, from, to, max);
  }
  meta(text, filt) {
    this.metaEl.replaceChildren(text);
    this.badgeEl.replaceChildren();
    if (filt && filt.applied) this.badgeEl.append(el('span', { class: 'badge badge-filter', title: 'Filters from the filter bar apply to this panel' }, `${filt.applied} filter${filt.applied > 1 ? 's' : ''}`));
    if (this.def.range) this.badgeEl.append(el('span', { class: 'badge', title: 'This panel has its own time range' }, this.def.range.replace('now-', 'last ')));
  }
  addFilterForKey(key) {
    const gb = (this.view && this.view.group_by) || [];
    if (!gb.length || !Array.isArray(key)) return;
    gb.forEach((f, i) => {
      if (key[i] === null || key[i] === undefined) this.ctx.toast(`Cannot filter on a missing ${f}`);
      else this.ctx.addFilter(f, key[i]);
    });
  }
  keyFromName(name) { return this.keys && this.keys.get(name); }
}

/** Sum (or min/max) a metric over groups and buckets. */
function aggregate(resp, metric) {
  let acc = null;
  for (const b of resp.buckets) for (const g of b.groups) {
    const v = g[metric];
    if (v === null || v === undefined) continue;
    if (acc === null) acc = v;
    else if (metric.startsWith('min:')) acc = Math.min(acc, v);
    else if (metric.startsWith('max:')) acc = Math.max(acc, v);
    else acc += v;
  }
  return acc;
}

function coverageBadge(resp) {
  const c = resp.coverage || {};
  const run = c.batch_run || 0;
  const cut = typeof c.batch_cut_at === 'string' ? Date.parse(c.batch_cut_at) : c.batch_cut_at;
  return el('span', {
    class: 'badge badge-src', title: run ? `Batch view of run #${run} (events before ${fmtDateTime(cut, true)} UTC) ⊕ real-time epochs ${(c.speed_epochs || []).join(', ') || '—'}` : 'No batch run published yet: real-time views only',
  }, run ? `batch #${run} ⊕ rt` : 'real-time');
}

// ---- time series
class TimeSeriesPanel extends DataPanel {
  async load(q, signal) {
    this.precheck();
    const { from, to } = this.range(q);
    const filt = this.filtersFor(q.filters);
    const granularity = this.granularity(from, to, 400);
    const m = this.def.metrics;
    const top = (this.def.top || 10) + filt.negCount;
    const grouped = (this.view?.group_by?.length ?? 1) > 0;
    const resp = await this.query({ from, to, granularity, where: filt.where, top: grouped ? top : undefined, order: grouped ? this.def.order || m[0] : undefined }, filt.neg, signal);
    return { resp, from, to, granularity, filt };
  }
  render({ resp, from, to, granularity, filt }, q) {
    this.meta(`${this.def.view} · per ${granularity}`, filt);
    this.badgeEl.append(coverageBadge(resp));
    if (!resp.buckets.length) { this.clearChart(); return this.empty(); }
    const metrics = this.def.metrics;
    const grouped = (resp.group_by || []).length > 0;
    const series = new Map(); // name -> {key, metric, points Map}
    this.keys = new Map();
    for (const b of resp.buckets) for (const g of b.groups) for (const m of metrics) {
      const kl = keyLabel(g.key);
      const name = grouped ? (metrics.length > 1 ? `${kl} · ${metricLabel(m, this.def.labels)}` : kl) : metricLabel(m, this.def.labels);
      if (!series.has(name)) series.set(name, { key: g.key, metric: m, points: new Map(), total: 0 });
      const s = series.get(name);
      s.points.set(b.ts, g[m]);
      s.total += typeof g[m] === 'number' ? g[m] : 0;
      this.keys.set(name, g.key);
    }
    // empty buckets are omitted by the API: they are zeros for counts and sums
    const end = Math.min(to, q.now);
    const ticks = [];
    if (granularity !== 'all') for (let t = alignDown(from, granularity); t < end && ticks.length < 3000; t = nextBucket(t, granularity)) ticks.push(t);
    const list = [...series.values()].sort((a, b) => b.total - a.total).slice(0, (this.def.top || 10) * metrics.length);
    const style = this.def.style || 'line';
    const per = PER[this.def.per] && granularity !== 'all' && PER[this.def.per] < (GRAN_MS[granularity] || 0) ? PER[this.def.per] : 0;
    if (per) this.metaEl.textContent = `${this.def.view} · ${granularity} buckets, average per ${this.def.per}`;
    const bars = style === 'bars' || style === 'stacked_bars' || (ticks.length > 0 && ticks.length <= 3); // a line of 1-3 points reads badly
    const names = [];
    const out = list.map((s, i) => {
      const name = [...series.entries()].find(([, v]) => v === s)[0];
      names.push(name);
      let data = ADDITIVE(s.metric) && ticks.length ? ticks.map((t) => [t, s.points.get(t) ?? 0]) : [...s.points.entries()].sort((a, b) => a[0] - b[0]);
      if (per && ADDITIVE(s.metric)) data = data.map(([t, v]) => [t, v === null ? v : Math.round((v / ((nextBucket(t, granularity) - t) / per)) * 100) / 100]);
      return {
        name, type: bars ? 'bar' : 'line', data, showSymbol: data.length < 4, symbolSize: 5, smooth: false,
        stack: style === 'stacked_bars' || style === 'area' ? 'total' : undefined,
        areaStyle: style === 'area' ? { opacity: 0.35 } : undefined,
        lineStyle: { width: 1.8 }, barMaxWidth: 28, barCategoryGap: '20%',
        emphasis: { focus: 'series' }, color: PALETTE[i % PALETTE.length],
      };
    });
    // where batch data ends and real-time data begins
    const c = resp.coverage || {};
    let cut = typeof c.batch_cut_at === 'string' ? Date.parse(c.batch_cut_at) : c.batch_cut_at;
    if (!c.batch_run) cut = null;
    if (!Number.isFinite(cut)) { const first = resp.buckets.find((b) => b.source !== 'batch'); cut = first && c.batch_run ? first.ts : null; }
    if (out.length && cut !== null && cut > from && cut < to) {
      out[0].markLine = {
        silent: true, symbol: ['none', 'none'], animation: false,
        lineStyle: { color: '#bd271e', type: 'dashed', width: 1.5 },
        label: { formatter: 'batch ◂ ▸ real-time', position: 'insideEndTop', color: '#bd271e', fontSize: fs(11) },
        data: [{ xAxis: cut }],
      };
      out[0].markArea = { silent: true, itemStyle: { color: 'rgba(96,146,192,0.07)' }, label: { show: false }, data: [[{ xAxis: cut }, { xAxis: to }]] };
    }
    this.el.dataset.cut = cut ?? '';
    const chart = this.ensureChart();
    const fmt = this.def.format;
    chart.setOption({
      useUTC: true, animationDuration: 250, color: PALETTE,
      grid: { left: 6, right: 18, top: 30, bottom: 4, containLabel: true },
      legend: { type: 'scroll', top: 0, left: 0, right: 0, icon: 'roundRect', itemWidth: fs(10), itemHeight: fs(10), itemGap: 14, textStyle: { color: '#343741', fontSize: fs(12) }, data: names, selectedMode: true },
      tooltip: { trigger: 'axis', order: 'valueDesc', confine: true, axisPointer: { type: bars ? 'shadow' : 'line' }, valueFormatter: (v) => fmtNum(v, fmt) },
      xAxis: { type: 'time', min: granularity === 'all' ? from : Math.min(from, alignDown(from, granularity)), max: to, axisLine: { lineStyle: { color: '#d3dae6' } }, axisLabel: { color: AXIS, hideOverlap: true, fontSize: fs(11) }, splitLine: { show: false } },
      yAxis: { type: 'value', axisLabel: { color: AXIS, formatter: fmtAxis, fontSize: fs(11) }, splitLine: { lineStyle: { color: GRIDLINE } } },
      brush: { xAxisIndex: 'all', brushType: 'lineX', brushMode: 'single', transformable: false, throttleType: 'debounce', throttleDelay: 50, brushStyle: { color: 'rgba(0,119,204,0.12)', borderColor: 'rgba(0,119,204,0.6)', borderWidth: 1 }, outOfBrush: { colorAlpha: 0.35 } },
      toolbox: { show: false },
      series: out,
    }, { notMerge: true });
    chart.dispatchAction({ type: 'takeGlobalCursor', key: 'brush', brushOption: { brushType: 'lineX', brushMode: 'single' } });
    if (!this.wired) {
      this.wired = true;
      chart.on('legendselectchanged', (e) => {
        chart.dispatchAction({ type: 'legendSelect', name: e.name }); // keep it visible: a click filters
        if (grouped) this.addFilterForKey(this.keyFromName(e.name));
      });
      chart.on('click', (e) => { if (e.componentType === 'series' && grouped) this.addFilterForKey(this.keyFromName(e.seriesName)); });
      chart.on('brushEnd', (e) => {
        const area = e.areas && e.areas[0];
        chart.dispatchAction({ type: 'brush', areas: [] });
        if (!area || !area.coordRange) return;
        const [a, b] = area.coordRange;
        if (Math.abs(b - a) < 1000) return;
        this.ctx.setAbsoluteRange(Math.round(Math.min(a, b)), Math.round(Math.max(a, b)));
      });
    }
    this.ready();
  }
  clearChart() { if (this.chart) this.chart.clear(); }
}

// ---- metric tile
class TilePanel extends DataPanel {
  constructor(def, ctx) {
    super(def, ctx);
    this.valueEl = el('div', { class: 'tile-value', 'data-role': 'value' }, '—');
    this.changeEl = el('div', { class: 'tile-change', 'data-role': 'change' });
    this.sparkEl = el('div', { class: 'tile-spark' });
    this.body.append(el('div', { class: 'tile-main' }, this.valueEl, this.changeEl), this.sparkEl);
  }
  async load(q, signal) {
    this.precheck();
    const { from, to } = this.range(q);
    const filt = this.filtersFor(q.filters);
    const m = this.def.metrics[0];
    const prevFrom = from - (to - from);
    const common = { where: filt.where };
    // the sparkline: the range's buckets, or the last 14 of the view's when the range holds too few
    let sg = this.granularity(from, to, 60), sparkFrom = from, sparkNote = '';
    if ((to - from) / (GRAN_MS[sg] || Infinity) < 3 && GRAN_MS[sg]) { sparkFrom = to - 14 * GRAN_MS[sg]; sparkNote = `trend: last 14 ${sg}s`; }
    const [cur, prev, spark] = await Promise.all([
      this.query({ ...common, from, to, granularity: 'all' }, filt.neg, signal),
      this.query({ ...common, from: prevFrom, to: from, granularity: 'all' }, filt.neg, signal).catch((e) => { if (e.name === 'AbortError') throw e; return null; }),
      this.query({ ...common, from: sparkFrom, to, granularity: sg }, filt.neg, signal).catch((e) => { if (e.name === 'AbortError') throw e; return null; }),
    ]);
    return { cur, prev, spark, from, to, m, filt, sparkNote };
  }
  render({ cur, prev, spark, from, to, m, filt, sparkNote }) {
    this.sparkEl.title = sparkNote || '';
    this.sparkEl.dataset.note = sparkNote || '';
    this.meta(`${this.def.view} · ${metricLabel(m, this.def.labels).toLowerCase()}`, filt);
    const v = aggregate(cur, m);
    if (v === null) { this.valueEl.textContent = '—'; this.changeEl.replaceChildren(); if (this.chart) this.chart.clear(); return this.empty(); }
    this.valueEl.textContent = fmtNum(v, this.def.format);
    this.valueEl.title = String(v);
    const p = prev ? aggregate(prev, m) : null;
    const span = spanLabel(Math.round(to - from));
    this.changeEl.replaceChildren();
    if (p === null || p === 0) this.changeEl.append(el('span', { class: 'chg flat' }, p === 0 ? 'new' : '—'), ` vs previous ${span}`);
    else {
      const pct = ((v - p) / Math.abs(p)) * 100;
      const cls = Math.abs(pct) < 0.05 ? 'flat' : pct > 0 ? 'up' : 'down';
      this.changeEl.append(el('span', { class: `chg ${cls}`, title: `previous: ${fmtNum(p, this.def.format)}` }, `${pct > 0 ? '▲' : pct < 0 ? '▼' : '■'} ${Math.abs(pct).toFixed(1)}%`), ` vs previous ${span}`);
    }
    this.sparkEl.classList.toggle('none', !(spark && spark.buckets.length > 2));
    if (spark && spark.buckets.length > 2) {
      const pts = spark.buckets.map((b) => [b.ts, b.groups.reduce((a, g) => a + (g[m] || 0), 0)]);
      const color = PALETTE[1];
      this.ensureChart(this.sparkEl).setOption({
        animation: false, grid: { left: 0, right: 0, top: 4, bottom: 0 },
        xAxis: { type: 'time', show: false }, yAxis: { type: 'value', show: false, min: 0 },
        tooltip: { show: false },
        series: [{ type: 'line', data: pts, showSymbol: false, smooth: 0.3, lineStyle: { width: 1.5, color }, areaStyle: { color, opacity: 0.18 } }],
      }, { notMerge: true });
    } else if (this.chart) this.chart.clear();
    this.ready();
  }
}

// ---- top-N table
class TablePanel extends DataPanel {
  async load(q, signal) {
    this.precheck();
    const { from, to } = this.range(q);
    const filt = this.filtersFor(q.filters);
    const order = this.def.order || this.def.metrics[0];
    const top = (this.def.top || 10) + filt.negCount;
    const resp = await this.query({ from, to, granularity: 'all', where: filt.where, top, order }, filt.neg, signal);
    return { resp, filt, order };
  }
  render({ resp, filt, order }) {
    this.meta(`${this.def.view} · top ${this.def.top || 10} by ${metricLabel(order, this.def.labels).toLowerCase()}`, filt);
    this.badgeEl.append(coverageBadge(resp));
    const metrics = this.def.metrics;
    const rows = new Map();
    for (const b of resp.buckets) for (const g of b.groups) {
      const k = JSON.stringify(g.key);
      const r = rows.get(k) || { key: g.key, v: {} };
      for (const m of metrics) {
        const x = g[m];
        if (x === null || x === undefined) continue;
        const old = r.v[m];
        r.v[m] = old === undefined ? x : m.startsWith('min:') ? Math.min(old, x) : m.startsWith('max:') ? Math.max(old, x) : old + x;
      }
      rows.set(k, r);
    }
    this.rows = [...rows.values()];
    if (!this.rows.length) { this.body.replaceChildren(); return this.empty(); }
    if (!this.sort) this.sort = { col: order, dir: -1 };
    this.gb = resp.group_by || [];
    this.drawTable();
    this.ready();
  }
  drawTable() {
    const metrics = this.def.metrics, gb = this.gb;
    const { col, dir } = this.sort;
    const val = (r, c) => (c.startsWith('key:') ? r.key[Number(c.slice(4))] : r.v[c]);
    const rows = this.rows.slice(0, this.def.top || 10).sort((a, b) => {
      const x = val(a, col), y = val(b, col);
      if (x === y) return 0;
      if (x === undefined || x === null) return 1;
      if (y === undefined || y === null) return -1;
      return (typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y))) * dir;
    });
    const first = metrics[0];
    const max = Math.max(1e-9, ...rows.map((r) => r.v[first] || 0));
    const th = (c, label, num) => el('th', {
      class: `${num ? 'num' : ''} sortable ${col === c ? 'sorted' : ''}`, scope: 'col', 'data-col': c, tabindex: 0,
      'aria-sort': col === c ? (dir > 0 ? 'ascending' : 'descending') : 'none',
      onclick: () => { this.sort = { col: c, dir: col === c ? -dir : (num ? -1 : 1) }; this.drawTable(); },
      onkeydown: (e) => { if (e.key === 'Enter') e.target.click(); },
    }, label, el('span', { class: 'sort-ind' }, col === c ? (dir > 0 ? '▲' : '▼') : '↕'));
    const head = el('tr', {}, (gb.length ? gb : ['group']).map((f, i) => th(`key:${i}`, f, false)), metrics.map((m) => th(m, metricLabel(m, this.def.labels), true)));
    const body = rows.map((r) => el('tr', {
      class: gb.length ? 'clickable' : '', title: gb.length ? 'Click to filter on this row' : '', 'data-key': JSON.stringify(r.key),
      onclick: () => this.addFilterForKey(r.key),
    },
    (gb.length ? r.key : ['all']).map((k) => el('td', { class: 'key' }, k === null ? '(missing)' : String(k))),
    metrics.map((m, i) => el('td', { class: 'num' }, i === 0 ? el('span', { class: 'cellbar', style: { width: `${((r.v[m] || 0) / max) * 100}%` } }) : null, el('span', { class: 'cellval' }, fmtNum(r.v[m], this.def.format))))));
    this.body.replaceChildren(el('div', { class: 'table-wrap' }, el('table', { class: 'data-table' }, el('thead', {}, head), el('tbody', {}, body))));
  }
}

// ---- pie / donut
class PiePanel extends DataPanel {
  async load(q, signal) {
    this.precheck();
    const { from, to } = this.range(q);
    const filt = this.filtersFor(q.filters);
    const m = this.def.metrics[0];
    const top = (this.def.top || 8) + filt.negCount;
    const resp = await this.query({ from, to, granularity: 'all', where: filt.where, top, order: m }, filt.neg, signal);
    return { resp, filt, m };
  }
  render({ resp, filt, m }) {
    this.meta(`${this.def.view} · ${metricLabel(m, this.def.labels).toLowerCase()}`, filt);
    this.badgeEl.append(coverageBadge(resp));
    const sums = new Map();
    this.keys = new Map();
    for (const b of resp.buckets) for (const g of b.groups) {
      const n = keyLabel(g.key);
      sums.set(n, (sums.get(n) || 0) + (g[m] || 0));
      this.keys.set(n, g.key);
    }
    const data = [...sums.entries()].map(([name, value]) => ({ name, value })).filter((d) => d.value > 0)
      .sort((a, b) => b.value - a.value).slice(0, this.def.top || 8);
    if (!data.length) { if (this.chart) this.chart.clear(); return this.empty(); }
    const total = data.reduce((a, d) => a + d.value, 0);
    const fmt = this.def.format;
    const donut = this.def.donut !== false;
    const chart = this.ensureChart();
    const wide = this.body.clientWidth > this.body.clientHeight * 1.25;
    chart.setOption({
      color: PALETTE, animationDuration: 250,
      tooltip: { trigger: 'item', confine: true, valueFormatter: (v) => fmtNum(v, fmt), formatter: (p) => `${p.marker}${p.name}<br/><b>${fmtNum(p.value, fmt)}</b> · ${p.percent}%` },
      legend: wide
        ? { type: 'scroll', orient: 'vertical', right: 4, top: 'middle', icon: 'roundRect', itemWidth: fs(10), itemHeight: fs(10), textStyle: { color: '#343741', fontSize: fs(12) } }
        : { type: 'scroll', bottom: 0, left: 'center', icon: 'roundRect', itemWidth: fs(10), itemHeight: fs(10), textStyle: { color: '#343741', fontSize: fs(12) } },
      title: donut ? { text: fmtNum(total, fmt === 'currency' ? 'currency' : undefined), subtext: 'total', left: wide ? '34%' : 'center', top: wide ? 'middle' : '38%', textAlign: 'center', textVerticalAlign: 'middle', textStyle: { fontSize: fs(16), fontWeight: 600, color: '#1a1c21' }, subtextStyle: { color: AXIS, fontSize: fs(11) }, itemGap: 2 } : undefined,
      series: [{
        type: 'pie', radius: donut ? ['48%', '74%'] : [0, '74%'], center: wide ? ['35%', '50%'] : ['50%', '44%'],
        avoidLabelOverlap: true, label: { show: false }, labelLine: { show: false },
        itemStyle: { borderColor: '#fff', borderWidth: 2, borderRadius: donut ? 3 : 0 },
        emphasis: { scaleSize: 4 }, data,
      }],
    }, { notMerge: true });
    if (!this.wired) {
      this.wired = true;
      chart.on('legendselectchanged', (e) => { chart.dispatchAction({ type: 'legendSelect', name: e.name }); this.addFilterForKey(this.keyFromName(e.name)); });
      chart.on('click', (e) => { if (e.componentType === 'series') this.addFilterForKey(this.keyFromName(e.name)); });
    }
    this.ready();
  }
}

// ---------------------------------------------------------------- pipeline

const TERMINAL = new Set(['succeeded', 'failed']);
const toMs = (t) => (t === null || t === undefined ? NaN : typeof t === 'number' ? t : Date.parse(t));
const runNo = (r) => r.run ?? r.id ?? r.k;

class PipelinePanel extends Panel {
  constructor(def, ctx) {
    super(def, ctx);
    this.kpis = el('div', { class: 'kpis' });
    this.runBox = el('div', { class: 'runbox' });
    this.hist = el('div', { class: 'run-history' });
    this.btn = el('button', { type: 'button', class: 'btn primary', 'data-role': 'run-batch', onclick: () => this.runNow() }, '▶ Run batch now');
    this.body.append(this.kpis, this.runBox, this.hist);
    this.hasContent = false;
  }
  async load(q, signal) {
    const [status, runs] = await Promise.allSettled([api.getStatus({ signal }), api.listRuns({ signal })]);
    for (const r of [status, runs]) if (r.status === 'rejected' && r.reason.name === 'AbortError') throw r.reason;
    if (status.status === 'rejected' && runs.status === 'rejected') throw status.reason;
    return { status: status.value, runs: runs.value, statusErr: status.reason, runsErr: runs.reason };
  }
  render({ status, runs, statusErr, runsErr }) {
    this.metaEl.replaceChildren('status · batch runs');
    const s = status || {};
    const speedLag = s.speed?.lag, archLag = s.archive?.lag;
    const eps = s.kafka?.events_per_s ?? s.speed?.events_per_s ?? s.events_per_s;
    const cur = s.batch?.current_run;
    if (runs) this.runs = runs.slice().sort((a, b) => runNo(b) - runNo(a));
    const curRun = (this.runs || []).find((r) => runNo(r) === cur);
    const cutAt = toMs(s.batch?.cut_at ?? curRun?.cut_at);
    const lagCls = (v) => (typeof v !== 'number' ? '' : v < 1000 ? 'ok' : v < 100000 ? 'warn' : 'bad');
    const kpi = (label, value, unit, cls, sub, role) => el('div', { class: `kpi ${cls || ''}`, 'data-role': role },
      el('div', { class: 'kpi-label' }, label), el('div', { class: 'kpi-value' }, value, unit ? el('span', { class: 'kpi-unit' }, unit) : null), el('div', { class: 'kpi-sub' }, sub || '\u00a0'));
    this.kpis.replaceChildren(
      kpi('Speed-layer lag', fmtNum(speedLag), 'events', lagCls(speedLag), statusErr ? 'status unavailable' : 'not yet in real-time views', 'speed-lag'),
      kpi('Ingest rate', typeof eps === 'number' ? fmtNum(Math.round(eps * 10) / 10) : '—', 'events/s', '', 'into Kafka, last few seconds', 'eps'),
      kpi('Archiver lag', fmtNum(archLag), 'events', lagCls(archLag), 'not yet in the master dataset', 'archive-lag'),
      kpi('Batch view', cur ? `#${cur}` : 'none', '', '', Number.isFinite(cutAt) ? `cut ${fmtAgo(cutAt)}` : cur ? 'newest published run' : 'real-time views only', 'current-run'),
    );
    const active = (this.runs || []).find((r) => !TERMINAL.has(r.status));
    if (active) this.track(runNo(active));
    this.drawRun(active || (this.runs || [])[0], runsErr);
    this.drawHistory(runsErr);
    this.ready();
  }
  drawRun(r, err) {
    const rows = [];
    if (r) {
      const p = r.progress || { records: r.records, records_total: r.records_total };
      const total = p.records_total || 0, done = p.records || 0;
      const pct = r.status === 'succeeded' ? 100 : total > 0 ? Math.min(100, (done / total) * 100) : 0;
      const inflight = !TERMINAL.has(r.status);
      rows.push(el('div', { class: 'run-line' },
        el('span', { class: 'run-title' }, inflight ? 'Current run' : 'Last run', ' ', el('b', {}, `#${runNo(r)}`)),
        el('span', { class: `status-tag st-${r.status}`, 'data-role': 'run-status' }, r.status),
        el('span', { class: 'run-when' }, inflight ? (r.started_at ? `started ${fmtAgo(toMs(r.started_at))}` : `requested ${fmtAgo(toMs(r.requested_at))}`) : (Number.isFinite(toMs(r.finished_at)) ? `finished ${fmtAgo(toMs(r.finished_at))}` : ''))));
      rows.push(el('div', { class: `progress ${inflight ? 'active' : ''} st-${r.status}`, role: 'progressbar', 'data-role': 'progress', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': Math.round(pct), 'data-status': r.status },
        el('div', { class: 'progress-fill', style: { width: `${pct}%` } }),
        el('span', { class: 'progress-text' }, total ? `${fmtNum(done)} / ${fmtNum(total)} records · ${Math.round(pct)}%` : inflight ? 'waiting for the batch layer…' : `${Math.round(pct)}%`)));
      if (r.status === 'failed' && r.error) rows.push(el('div', { class: 'run-error' }, String(r.error)));
    } else rows.push(el('div', { class: 'run-line muted' }, err ? `Batch runs unavailable: ${err.message}` : 'No batch run yet.'));
    this.btn.disabled = !!(r && !TERMINAL.has(r.status));
    this.btn.textContent = this.btn.disabled ? 'Run in progress…' : '▶ Run batch now';
    this.runBox.replaceChildren(el('div', { class: 'run-main' }, ...rows), el('div', { class: 'run-actions' }, this.btn, this.tokenForm));
  }
  drawHistory(err) {
    const runs = (this.runs || []).slice(0, 6);
    if (!runs.length) { this.hist.replaceChildren(); return; }
    this.hist.replaceChildren(el('table', { class: 'data-table compact' },
      el('thead', {}, el('tr', {}, el('th', {}, 'Run'), el('th', {}, 'Status'), el('th', {}, 'Requested (UTC)'), el('th', { class: 'num' }, 'Duration'), el('th', { class: 'num' }, 'Records'))),
      el('tbody', {}, runs.map((r) => {
        const st = toMs(r.started_at), fi = toMs(r.finished_at);
        const recs = r.progress?.records_total ?? r.records_total ?? r.progress?.records ?? r.records;
        return el('tr', { 'data-run': runNo(r) }, el('td', {}, `#${runNo(r)}`), el('td', {}, el('span', { class: `status-tag st-${r.status}` }, r.status)),
          el('td', {}, fmtDateTime(toMs(r.requested_at))), el('td', { class: 'num' }, Number.isFinite(st) ? fmtDuration((Number.isFinite(fi) ? fi : Date.now()) - st) : '—'),
          el('td', { class: 'num' }, fmtNum(recs)));
      }))));
  }
  async runNow() {
    this.btn.disabled = true;
    try {
      const r = await api.startRun();
      this.ctx.toast(`Batch run #${r.run} ${r.status}`);
      this.upsert({ run: r.run, status: r.status, requested_at: new Date().toISOString(), progress: { records: 0, records_total: 0 } });
      this.track(r.run);
    } catch (e) {
      this.btn.disabled = false;
      if (e.status === 401 || e.status === 403) this.askToken(e);
      else this.ctx.toast(`Could not start a batch run: ${e.message}`, 'error');
    }
  }
  askToken(e) {
    const input = el('input', { type: 'password', placeholder: 'admin token', 'aria-label': 'Admin token', size: 14 });
    this.tokenForm = el('form', { class: 'token-form', onsubmit: (ev) => { ev.preventDefault(); localStorage.setItem('lam.adminToken', input.value); this.tokenForm = null; this.runNow(); } },
      el('span', { class: 'muted' }, `${e.message} — `), input, el('button', { class: 'btn small', type: 'submit' }, 'Use'));
    this.drawRun((this.runs || [])[0]);
  }
  upsert(r) {
    this.runs = this.runs || [];
    const i = this.runs.findIndex((x) => runNo(x) === runNo(r));
    if (i >= 0) this.runs[i] = { ...this.runs[i], ...r }; else this.runs.unshift(r);
    this.runs.sort((a, b) => runNo(b) - runNo(a));
    this.drawRun(this.runs.find((x) => runNo(x) === runNo(r)));
    this.drawHistory();
  }
  /** Poll GET /v1/batch/runs/{k} until the run ends, then refresh the dashboard. */
  track(k) {
    if (this.tracking === k) return;
    this.tracking = k;
    const poll = async () => {
      if (this.tracking !== k) return;
      try {
        const r = await api.getRun(k);
        this.upsert(r);
        if (TERMINAL.has(r.status)) {
          this.tracking = null;
          this.ctx.toast(`Batch run #${k} ${r.status}${r.error ? ': ' + r.error : ''}`, r.status === 'failed' ? 'error' : 'ok');
          if (r.status === 'succeeded') this.ctx.refreshAll('batch run finished');
          return;
        }
      } catch (e) { /* keep polling: the run may not be visible yet */ }
      this.timer = setTimeout(poll, 1000);
    };
    clearTimeout(this.timer);
    this.timer = setTimeout(poll, 500);
  }
}

// ---------------------------------------------------------------- live tail

class TailPanel extends Panel {
  async load(q, signal) {
    try {
      return { body: await api.getTail(this.def.limit || 50, { signal }) };
    } catch (e) {
      if (e.status === 404 || e.status === 405 || e.status === 501) return { unavailable: e };
      throw e;
    }
  }
  render({ body, unavailable }, q) {
    this.metaEl.replaceChildren(`GET /v1/tail · last ${this.def.limit || 50}`);
    if (unavailable) {
      this.body.replaceChildren();
      return this.setState('unavailable', 'Live tail unavailable', `This server does not provide GET /v1/tail (${unavailable.message}).`);
    }
    let events = (body && body.events) || [];
    const active = q.filters.filter((f) => events.some((ev) => f.field in ev));
    events = events.filter((ev) => active.every((f) => !(f.field in ev) || (String(ev[f.field]) === String(f.value)) !== !!f.negate));
    this.badgeEl.replaceChildren(active.length ? el('span', { class: 'badge badge-filter' }, `${active.length} filter${active.length > 1 ? 's' : ''}`) : '', el('span', { class: 'badge badge-live' }, '● live'));
    if (!events.length) { this.body.replaceChildren(); return this.empty('No events'); }
    const seen = this.seen || new Set();
    const fresh = new Set();
    const rows = events.slice(0, this.def.limit || 50).map((ev) => {
      const id = ev.id ?? `${ev.ts}`;
      if (this.seen && !seen.has(id)) fresh.add(id);
      const fields = Object.entries(ev).filter(([k]) => !['id', 'ts', 'type'].includes(k));
      return el('tr', { class: fresh.has(id) ? 'fresh' : '', 'data-id': id },
        el('td', { class: 'mono nowrap' }, Number.isFinite(toMs(ev.ts)) ? `${fmtDateTime(toMs(ev.ts)).slice(5, 10)} ${fmtTime(toMs(ev.ts))}.${String(toMs(ev.ts) % 1000).padStart(3, '0')}` : '—'),
        el('td', {}, el('button', { type: 'button', class: `type-tag t-${String(ev.type).replace(/[^a-z0-9_]/gi, '')}`, title: `Filter type: ${ev.type}`, onclick: () => this.ctx.addFilter('type', ev.type) }, String(ev.type))),
        el('td', { class: 'fields' }, fields.slice(0, 8).map(([k, v]) => el('span', { class: 'kv' }, el('span', { class: 'k' }, k), el('span', { class: 'v' }, v === null ? 'null' : String(v))))),
        el('td', { class: 'mono muted id' }, String(ev.id ?? '').slice(0, 13)));
    });
    this.seen = new Set(events.map((ev) => ev.id ?? `${ev.ts}`));
    this.body.replaceChildren(el('div', { class: 'table-wrap' }, el('table', { class: 'data-table tail' },
      el('thead', {}, el('tr', {}, el('th', {}, 'Time (UTC)'), el('th', {}, 'Type'), el('th', {}, 'Fields'), el('th', {}, 'Id'))),
      el('tbody', {}, rows))));
    this.ready();
  }
}

const TYPES = { timeseries: TimeSeriesPanel, tile: TilePanel, table: TablePanel, pie: PiePanel, pipeline: PipelinePanel, tail: TailPanel };
export function createPanel(def, ctx) { return new TYPES[def.type](def, ctx); }
export { GRAN_MS };
