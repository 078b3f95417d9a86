// views.mjs - the DuckDB reference for `make bench`: compute every view of a views file over the
// same events as NDJSON (read + parse + aggregate), with exact decimal sums and HLL distincts.
// usage: node views.mjs VIEWS.json EVENTS.ndjson [FIELDS.csv]  ->  one JSON line {"events","rows","seconds"}
// FIELDS.csv (after the timed part): ts and every field the views use, with a header, so that
// bench/pg_views.py loads the same events into PostgreSQL without parsing the NDJSON again.
import { DuckDBInstance } from '@duckdb/node-api';
import { readFileSync } from 'node:fs';

const [viewsPath, eventsPath, csvPath] = process.argv.slice(2);
const views = JSON.parse(readFileSync(viewsPath, 'utf8')).views;
const quote = (p) => `"${p.replaceAll('"', '""')}"`;
// Canonical events carry flattened names ("geo.cc" is one column); nested input is a struct path.
let flatColumns = new Set();
const ident = (f) => (flatColumns.has(f) ? quote(f) : f.split('.').map(quote).join('.'));
const lit = (v) => (typeof v === 'string' ? `'${v.replaceAll("'", "''")}'` : v === null ? 'NULL' : String(v));

function viewSql(v) {
  const where = Object.entries(v.where || {}).map(([f, val]) =>
    Array.isArray(val) ? `${ident(f)} IN (${val.map(lit).join(', ')})` : `${ident(f)} = ${lit(val)}`);
  const bucket = `date_trunc('${v.granularity}', make_timestamp(ts * 1000))`;
  const groups = (v.group_by || []).map(ident);
  const metrics = v.metrics.map((m) => {
    const [kind, field] = m.split(':');
    const num = field && `TRY_CAST(${ident(field)} AS DECIMAL(38, 6))`;
    return { count: 'count(*)', sum: `sum(${num})`, min: `min(${num})`, max: `max(${num})`,
             distinct: field && `approx_count_distinct(${ident(field)})` }[kind];
  });
  return `SELECT ${[bucket + ' AS bucket', ...groups, ...metrics].join(', ')} FROM ev` +
    (where.length ? ` WHERE ${where.join(' AND ')}` : '') +
    ` GROUP BY ${['bucket', ...groups].join(', ')}`;
}

const db = await DuckDBInstance.create(':memory:');
const con = await db.connect();
const t0 = process.hrtime.bigint();
await con.run(`CREATE TABLE ev AS SELECT * FROM read_json('${eventsPath.replaceAll("'", "''")}',
  format = 'newline_delimited', sample_size = -1)`);
flatColumns = new Set((await con.runAndReadAll('DESCRIBE ev')).getRows().map((r) => r[0]));
const n = Number((await con.runAndReadAll('SELECT count(*) FROM ev')).getRows()[0][0]);
let rows = 0;
for (const v of views) rows += (await con.runAndReadAll(viewSql(v))).getRows().length;
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
if (csvPath) {
  const fields = new Set();
  for (const v of views) {
    for (const f of [...Object.keys(v.where || {}), ...(v.group_by || []), ...v.metrics.map((m) => m.split(':')[1])])
      if (f && f !== 'ts') fields.add(f);
  }
  const cols = ['ts', ...fields].map((f) => `${ident(f)} AS ${quote(f)}`);
  await con.run(`COPY (SELECT ${cols.join(', ')} FROM ev) TO '${csvPath.replaceAll("'", "''")}' (FORMAT csv, HEADER)`);
}
console.log(JSON.stringify({ events: n, rows, seconds }));
