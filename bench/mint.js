// bench/mint.js — mints HS256 JWTs for the persisted scenario when `chatd token` is not available.
// Same claims as `chatd token --org O --typ T --sub ID` (sub, org, typ, name, iat, exp).
//   node bench/mint.js SECRET ORG TYP PREFIX COUNT   -> COUNT tokens, sub = PREFIX-0 … PREFIX-(COUNT-1)
import { createHmac } from 'node:crypto';

const [secret, org, typ, prefix, count] = process.argv.slice(2);
if (!secret || !org || !typ || !prefix || !count) {
  console.error('usage: node bench/mint.js SECRET ORG TYP PREFIX COUNT');
  process.exit(2);
}
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
const header = b64({ alg: 'HS256', typ: 'JWT' });
const now = Math.floor(Date.now() / 1000);
const lines = [];
for (let i = 0; i < Number(count); i++) {
  const body = b64({ sub: `${prefix}-${i}`, org, typ, name: `${prefix} ${i}`, iat: now, exp: now + 86400 });
  const sig = createHmac('sha256', secret).update(`${header}.${body}`).digest('base64url');
  lines.push(`${header}.${body}.${sig}`);
}
console.log(lines.join('\n'));
