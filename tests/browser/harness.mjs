// harness.mjs - shared set-up for the browser tests: a server (the mock, or the real stack when
// LAM_DASHBOARD_URL is set) and Debian's Chromium driven by playwright-core.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startMock } from './mock-server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(here, '..', '..');
export const ARTIFACTS = path.join(ROOT, 'tests', 'artifacts');
export const REAL = !!process.env.LAM_DASHBOARD_URL;
export const CHROMIUM = process.env.LAM_CHROMIUM || '/usr/bin/chromium';
export const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'];

export async function startServer() {
  if (REAL) return { url: process.env.LAM_DASHBOARD_URL.replace(/\/$/, ''), close: async () => {}, real: true };
  return startMock(0);
}

export async function launch() {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: install Debian's chromium (make deps) or set LAM_CHROMIUM`);
  const userDataDir = fs.mkdtempSync(path.join(process.env.TMPDIR || '/tmp', 'lam-chromium-'));
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: [...FLAGS, `--user-data-dir=${userDataDir}`].filter((f) => f !== '--headless' && !f.startsWith('--user-data-dir')) });
  return { browser, close: async () => { await browser.close(); fs.rmSync(userDataDir, { recursive: true, force: true }); } };
}

/** A page that records every /v1/ request it makes, and every page error. */
export async function openPage(browser, base, pathname, { width = 1600, height = 1000 } = {}) {
  const context = await browser.newContext({ viewport: { width, height }, acceptDownloads: true, timezoneId: 'UTC' });
  const page = await context.newPage();
  const requests = [];
  const errors = [];
  page.on('request', (r) => { const u = new URL(r.url()); if (u.pathname.startsWith('/v1/')) requests.push({ method: r.method(), path: u.pathname, params: u.searchParams, url: r.url() }); });
  page.on('pageerror', (e) => errors.push(String(e)));
  // the page must live with serving's Content-Security-Policy (no inline script or style)
  page.on('console', (m) => { if (m.type() === 'error' && /Content.Security.Policy/i.test(m.text())) errors.push(m.text()); });
  await page.goto(base + pathname);
  return { page, context, requests, errors };
}

export async function waitReady(page, timeout = 20000) {
  await page.waitForFunction(() => document.body.dataset.ready, null, { timeout });
}
/** Wait until no panel is loading. */
export async function waitPanelsSettled(page, timeout = 20000) {
  await page.waitForFunction(() => {
    const ps = [...document.querySelectorAll('.panel')];
    return ps.length > 0 && ps.every((p) => p.dataset.state !== 'loading');
  }, null, { timeout });
}
export async function panelStates(page) {
  return page.$$eval('.panel', (ps) => Object.fromEntries(ps.map((p) => [p.dataset.panel, { state: p.dataset.state, type: p.dataset.type, msg: p.querySelector('.panel-msg')?.textContent || '' }])));
}
export function shot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  return page.screenshot({ path: path.join(ARTIFACTS, name), fullPage: true });
}
