// build.mjs - the dashboard's only build step: copy Apache ECharts' prebuilt file (and its
// licence) from node_modules into app/vendor/, where serving serves it. Run `npm ci && npm run build`.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const src = path.join(here, 'node_modules', 'echarts');
const out = path.join(here, 'app', 'vendor');
if (!fs.existsSync(path.join(src, 'dist', 'echarts.min.js'))) {
  console.error('build: node_modules/echarts is missing: run `npm ci` in dashboards/ first');
  process.exit(1);
}
fs.mkdirSync(out, { recursive: true });
for (const [from, to] of [['dist/echarts.min.js', 'echarts.min.js'], ['LICENSE', 'echarts.LICENSE.txt'], ['NOTICE', 'echarts.NOTICE.txt']]) {
  const f = path.join(src, from);
  if (fs.existsSync(f)) fs.copyFileSync(f, path.join(out, to));
}
const version = JSON.parse(fs.readFileSync(path.join(src, 'package.json'), 'utf8')).version;
console.log(`build: echarts ${version} -> ${path.relative(process.cwd(), out) || '.'}/echarts.min.js`);
