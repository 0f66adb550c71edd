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
    ['seq_gaps', 'seq gaps seen by receivers', 1, 0, 'lo'],
  ],
  persistramp: [
    ['ramp_best_offered_msgs_per_s', 'max msgs/s (ack p99<=50ms)', 1, 0, 'hi'],
    ['ack_p99_ms', 'ack p99 ms at that rate', 1, 2, 'lo'],
    ['cpu_per_1k_msgs', 'stack CPU-s per 1k msgs at that rate', 1, 4, 'lo'],
    ['seq_gaps', 'seq gaps seen by receivers (whole run)', 1, 0, 'lo'],
    ['seq_disorder', 'seq out of order (whole run)', 1, 0, 'lo'],
  ],
};

const median = (a) => {
  const s = [...a].sort((x, y) => x - y);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
};
const fmt = (v, d) => (v === undefined || Number.isNaN(v) ? '–' : v.toFixed(d));

const cases = [...new Set(rows.map((r) => r.case))];
// 'base': a second chatd binary (BENCH_CHATD_BASE), shown only when present
const hasBase = rows.some((r) => r.target === 'base');
const targets = hasBase ? ['chatd', 'base', 'node', 'relay'] : ['chatd', 'node', 'relay'];
const out = [];
out.push(`# chatd benchmark — ${new Date().toISOString()}`);
out.push('');
out.push('Medians of the repetitions, (min–max) in brackets. Ratio = chatd / Node and chatd / relay.');
out.push('');
out.push(`| case | metric | chatd |${hasBase ? ' base |' : ''} Node | relay | chatd/Node | chatd/relay |${hasBase ? ' base/Node | chatd/base |' : ''}`);
out.push(`|---|---|---|---|---|---|---|${hasBase ? '---|---|' : ''}`);
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
    const b = hasBase ? [show('base'), ratio('base', 'node'), ratio('chatd', 'base')] : [];
    out.push(`| ${c} | ${label} | ${show('chatd')} |${hasBase ? ` ${b[0]} |` : ''} ${show('node')} | ${show('relay')} | ${ratio('chatd', 'node')} | ${ratio('chatd', 'relay')} |${hasBase ? ` ${b[1]} | ${b[2]} |` : ''}`);
  }
}
// The ramp is what a busy shared machine distorts most: show, per target, the repetition during
// which the rest of the machine was quietest (other_busy_cores of the best step) beside the median.
const rampCases = cases.filter((c) => c.includes('ramp'));
if (rampCases.length) {
  out.push('');
  out.push('Ramps, repetition with the least other load on the machine (max rate, other cores busy during its best step):');
  out.push('');
  out.push(`| case | chatd |${hasBase ? ' base |' : ''} Node | relay | chatd/Node |`);
  out.push(`|---|---|---|---|---|${hasBase ? '---|' : ''}`);
  for (const c of rampCases) {
    const field = c.startsWith('persist') ? 'ramp_best_offered_msgs_per_s' : 'ramp_best_delivered_per_s';
    const q = {};
    for (const t of targets) {
      const rs = rows.filter((r) => r.case === c && r.target === t);
      if (!rs.length) continue;
      rs.sort((a, b) => (a.other_busy_cores ?? 9) - (b.other_busy_cores ?? 9));
      q[t] = rs[0];
    }
    const show = (t) => (q[t] ? `${(q[t][field] || 0).toFixed(0)} (other ${Math.max(0, q[t].other_busy_cores ?? 0).toFixed(2)})` : '–');
    const ratio = q.chatd && q.node && q.node[field] ? `${(q.chatd[field] / q.node[field]).toFixed(2)}×` : '–';
    out.push(`| ${c} | ${show('chatd')} |${hasBase ? ` ${show('base')} |` : ''} ${show('node')} | ${show('relay')} | ${ratio} |`);
  }
}

// Calibration: the generator's own CPU per 1,000 deliveries beside each server's, over every
// WebSocket fan-out/ramp result (the generator must cost less per delivery than what it measures),
// and the highest rate it drove the relay to.
const fan = rows.filter((r) => (r.case.startsWith('fanout') || r.case.startsWith('ramp')) && r.delivered_per_s > 0 && r.window_s > 0);
if (fan.length) {
  out.push('');
  out.push('Generator calibration (WebSocket fan-out and ramp results; CPU-s per 1,000 deliveries, median):');
  out.push('');
  out.push('| target | server | generator | generator / server |');
  out.push('|---|---|---|---|');
  for (const t of targets) {
    const rs = fan.filter((r) => r.target === t);
    if (!rs.length) continue;
    const srv = median(rs.map((r) => r.cpu_per_1k_deliveries));
    const gen = median(rs.map((r) => (r.gen_cpu_s * 1000) / (r.delivered_per_s * r.window_s)));
    out.push(`| ${t} | ${srv.toFixed(4)} | ${gen.toFixed(4)} | ${(gen / srv).toFixed(2)} |`);
  }
  const relayRamp = rows.filter((r) => r.case === 'ramp-100x10' && r.target === 'relay');
  if (relayRamp.length) {
    const best = relayRamp.reduce((a, b) => ((b.ramp_best_delivered_per_s || 0) > (a.ramp_best_delivered_per_s || 0) ? b : a));
    out.push('');
    out.push(`Highest rate driven against the relay (100 rooms x 10, p99 <= 50 ms): ${(best.ramp_best_delivered_per_s || 0).toFixed(0)} ` +
      `deliveries/s, the generator using ${(best.gen_util || 0).toFixed(2)} of its core at that step.`);
  }
}
console.log(out.join('\n'));
