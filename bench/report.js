// bench/report.js — turns results.jsonl (bench/run.sh) into one Markdown table:
// median (min–max) per case, metric and target, with the chatd/Node and chatd/relay ratios.
//
//   node bench/report.js build/bench/run-…/results.jsonl
import { readFileSync } from 'node:fs';

const file = process.argv[2];
if (!file) {
  console.error('usage: node bench/report.js results.jsonl');
  process.exit(2);
}
const rows = readFileSync(file, 'utf8').split('\n').filter((l) => l.startsWith('{')).map((l) => {
  try { return JSON.parse(l); } catch { return null; }
}).filter((r) => r && r.kind === 'result');

// metric: [json field, label, scale, digits, better ('hi'|'lo')]
const M = {
  idle: [
    ['connect_per_s', 'connects/s', 1, 0, 'hi'],
    ['rss_per_conn_b', 'RSS per connection (KB)', 1 / 1024, 2, 'lo'],
    ['connected', 'connected', 1, 0, 'hi'],
  ],
  fanout: [
    ['delivered_per_s', 'delivered/s', 1, 0, 'hi'],
    ['delivered_ratio', 'delivered ratio', 1, 4, 'hi'],
    ['lat_p50_ms', 'p50 ms', 1, 2, 'lo'],
    ['lat_p99_ms', 'p99 ms', 1, 2, 'lo'],
    ['lat_p999_ms', 'p99.9 ms', 1, 2, 'lo'],
    ['cpu_per_1k_deliveries', 'server CPU-s per 1k deliveries', 1, 4, 'lo'],
    ['gen_util', 'generator CPU utilisation', 1, 2, 'lo'],
    ['other_busy_cores', 'other load on the machine (cores)', 1, 2, 'lo'],
  ],
  ramp: [
    ['ramp_best_delivered_per_s', 'max delivered/s (p99<=50ms, >=99.9%)', 1, 0, 'hi'],
    ['lat_p99_ms', 'p99 ms at that rate', 1, 2, 'lo'],
    ['cpu_per_1k_deliveries', 'CPU-s per 1k at that rate', 1, 4, 'lo'],
    ['gen_util', 'generator CPU utilisation at that rate', 1, 2, 'lo'],
    ['other_busy_cores', 'other load on the machine (cores)', 1, 2, 'lo'],
  ],
  poll: [
    ['delivered_per_s', 'delivered/s', 1, 0, 'hi'],
    ['delivered_ratio', 'delivered ratio', 1, 4, 'hi'],
    ['lat_p50_ms', 'p50 ms', 1, 2, 'lo'],
    ['lat_p99_ms', 'p99 ms', 1, 2, 'lo'],
    ['cpu_per_1k_deliveries', 'server CPU-s per 1k deliveries', 1, 4, 'lo'],
    ['connect_per_s', 'polling connects/s', 1, 0, 'hi'],
  ],
  storm: [
    ['connect_per_s', 'connects/s', 1, 0, 'hi'],
    ['connect_p50_ms', 'connect p50 ms', 1, 1, 'lo'],
    ['connect_p99_ms', 'connect p99 ms', 1, 1, 'lo'],
    ['failed', 'failed', 1, 0, 'lo'],
  ],
  persist: [
    ['msgs_acked_per_s', 'acked msgs/s (fixed rate)', 1, 0, 'hi'],
    ['ack_p50_ms', 'ack p50 ms', 1, 2, 'lo'],
    ['ack_p99_ms', 'ack p99 ms', 1, 2, 'lo'],
    ['lat_p99_ms', 'delivery p99 ms', 1, 2, 'lo'],
    ['cpu_per_1k_msgs', 'stack CPU-s per 1k msgs', 1, 4, 'lo'],
  ],
  persistramp: [
    ['ramp_best_offered_msgs_per_s', 'max msgs/s (ack p99<=50ms)', 1, 0, 'hi'],
    ['ack_p99_ms', 'ack p99 ms at that rate', 1, 2, 'lo'],
    ['cpu_per_1k_msgs', 'stack CPU-s per 1k msgs at that rate', 1, 4, 'lo'],
  ],
};

const median = (a) => {
  const s = [...a].sort((x, y) => x - y);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
};
const fmt = (v, d) => (v === undefined || Number.isNaN(v) ? '–' : v.toFixed(d));

const cases = [...new Set(rows.map((r) => r.case))];
const targets = ['chatd', 'node', 'relay'];
const out = [];
out.push(`# chatd benchmark — ${new Date().toISOString()}`);
out.push('');
out.push('Medians of the repetitions, (min–max) in brackets. Ratio = chatd / Node and chatd / relay.');
out.push('');
out.push('| case | metric | chatd | Node | relay | chatd/Node | chatd/relay |');
out.push('|---|---|---|---|---|---|---|');
for (const c of cases) {
  const kind = c.startsWith('persist-ramp') ? 'persistramp' : c.split('-')[0];
  const metrics = M[kind] || [];
  for (const [field, label, scale, digits] of metrics) {
    const cell = {};
    for (const t of targets) {
      const v = rows.filter((r) => r.case === c && r.target === t && typeof r[field] === 'number')
        .map((r) => r[field] * scale).filter((x) => x >= 0);
      if (!v.length) continue;
      cell[t] = { med: median(v), min: Math.min(...v), max: Math.max(...v), n: v.length };
    }
    if (!Object.keys(cell).length) continue;
    const show = (t) => (cell[t]
      ? (cell[t].n > 1 ? `${fmt(cell[t].med, digits)} (${fmt(cell[t].min, digits)}–${fmt(cell[t].max, digits)})` : fmt(cell[t].med, digits))
      : '–');
    const ratio = (a, b) => (cell[a] && cell[b] && cell[b].med ? `${(cell[a].med / cell[b].med).toFixed(2)}×` : '–');
    out.push(`| ${c} | ${label} | ${show('chatd')} | ${show('node')} | ${show('relay')} | ${ratio('chatd', 'node')} | ${ratio('chatd', 'relay')} |`);
  }
}
const relayRamp = rows.filter((r) => r.case === 'ramp-100x10' && r.target === 'relay');
if (relayRamp.length) {
  const best = Math.max(...relayRamp.map((r) => r.ramp_best_delivered_per_s || 0));
  const util = median(relayRamp.map((r) => r.gen_util || 0));
  out.push('');
  out.push(`Generator ceiling: against the relay it sustained ${best.toFixed(0)} deliveries/s (100 rooms x 10) ` +
    `at ${util.toFixed(2)} of one core (median), i.e. the generator is not the limit below that rate.`);
}
console.log(out.join('\n'));
