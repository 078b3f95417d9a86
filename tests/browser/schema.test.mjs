// schema.test.mjs - the dashboard files in dashboards/ are valid, and the validator reports
// malformed files with their position and paths (no browser needed).
import { it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseJSONWithPosition, validateDashboard, checkPanelAgainstView, locateJSONError } from '../../dashboards/app/schema.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const views = new Map(JSON.parse(fs.readFileSync(path.join(root, 'shared', 'views.json'), 'utf8')).views.map((v) => [v.name, v]));
const dashboards = fs.readdirSync(path.join(root, 'dashboards')).filter((f) => f.endsWith('.json') && !f.startsWith('package'));

it('every dashboard in dashboards/ is valid against shared/views.json', () => {
  assert.ok(dashboards.includes('default.json'));
  for (const f of dashboards) {
    const d = parseJSONWithPosition(fs.readFileSync(path.join(root, 'dashboards', f), 'utf8'), f);
    assert.deepEqual(validateDashboard(d), [], f);
    assert.equal(d.id, f.slice(0, -5), `${f}: id matches the file name`);
    for (const p of d.panels) if (p.view) assert.deepEqual(checkPanelAgainstView(p, views.get(p.view)), [], `${f}: ${p.title}`);
  }
});

it('a malformed file is reported with its line and column', () => {
  const text = fs.readFileSync(path.join(root, 'tests', 'browser', 'fixtures', 'broken.json'), 'utf8');
  assert.throws(() => parseJSONWithPosition(text, 'broken.json'), /broken\.json: not valid JSON: .*\(line 6 column 5\)/);
  assert.equal(locateJSONError('{"a": 1,}'), 8);
  assert.equal(locateJSONError('{"a": [1, {"b": null}]}'), -1);
});

it('an invalid dashboard lists its problems with paths', () => {
  const d = JSON.parse(fs.readFileSync(path.join(root, 'tests', 'browser', 'fixtures', 'invalid.json'), 'utf8'));
  const p = validateDashboard(d).join('\n');
  assert.match(p, /refresh: must be one of/);
  assert.match(p, /panels\[0\]\.type: must be one of/);
  assert.match(p, /panels\[1\]\.metrics: required/);
  assert.match(p, /panels\[1\]\.grid: x \+ w = 28/);
  assert.deepEqual(validateDashboard([]), ['the file must hold a JSON object']);
  assert.match(checkPanelAgainstView({ view: 'signups', metrics: ['sum:price'] }, views.get('signups')).join(), /no metric sum:price/);
});
