// format.js - number and label formatting, small DOM helpers.
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'style' && typeof v === 'object') for (const [sk, sv] of Object.entries(v)) e.style.setProperty(sk.startsWith('--') ? sk : sk.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase()), String(sv));
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) e.append(c instanceof Node ? c : String(c));
  return e;
}

const nf0 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const nf1 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 });
const nf2 = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });

export function fmtNum(v, format) {
  if (v === null || v === undefined || Number.isNaN(v)) return '—';
  if (typeof v !== 'number') return String(v);
  if (format === 'currency') return fmtCompact(v, true);
  if (format === 'ms') return v >= 1000 ? nf1.format(v / 1000) + ' s' : nf0.format(v) + ' ms';
  if (Math.abs(v) >= 1e6) return fmtCompact(v);
  if (Number.isInteger(v)) return nf0.format(v);
  return Math.abs(v) < 100 ? nf2.format(v) : nf1.format(v);
}
export function fmtCompact(v, money = false) {
  const pre = money ? '$' : '';
  const a = Math.abs(v);
  if (a >= 1e9) return pre + nf2.format(v / 1e9) + 'B';
  if (a >= 1e6) return pre + nf2.format(v / 1e6) + 'M';
  if (a >= 1e4 && !money) return pre + nf1.format(v / 1e3) + 'k';
  return pre + (money ? nf2.format(v) : nf0.format(v));
}
export function fmtAxis(v) {
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(1).replace(/\.0$/, '') + 'B';
  if (a >= 1e6) return (v / 1e6).toFixed(1).replace(/\.0$/, '') + 'M';
  if (a >= 1e3) return (v / 1e3).toFixed(1).replace(/\.0$/, '') + 'k';
  return String(Math.round(v * 100) / 100);
}

/** "sum:price" -> "Sum of price" (or the panel's own label). */
export function metricLabel(m, labels) {
  if (labels && labels[m]) return labels[m];
  if (m === 'count') return 'Count';
  const [fn, f] = m.split(':');
  return { sum: 'Sum of', min: 'Min', max: 'Max', distinct: 'Unique' }[fn] + ' ' + f;
}
export function keyLabel(key) {
  if (!Array.isArray(key) || key.length === 0) return 'all';
  return key.map((k) => (k === null ? '(missing)' : String(k))).join(' · ');
}

export const PALETTE = ['#54b399', '#6092c0', '#d36086', '#9170b8', '#ca8eae', '#d6bf57', '#b9a888', '#da8b45', '#aa6556', '#e7664c', '#7b9fce', '#a5c871'];
