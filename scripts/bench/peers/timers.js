'use strict';
// timers.js: the Node.js peer of scripts/bench/timers (setTimeout/clearTimeout).
//
// Same workload as every peer: N calls with delays of (x mod 1e6) microseconds,
// x from the minimal-standard generator (x = x * 48271 mod 2^31-1, x0 = 1).
// Node's timers count whole milliseconds (libuv's resolution), so the delay
// given is floor(us / 1000) ms. Run with --expose-gc so setup can collect.
// Prints key=value lines; exits 1 when the work did not happen.
const fs = require('fs');

const N = Number(process.argv[2] || 1000000);
const now = () => Number(process.hrtime.bigint()) / 1e9;
const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };
const gc = () => { if (global.gc) global.gc(); };

function statusKb(field) {
  const m = fs.readFileSync('/proc/self/status', 'utf8').match(new RegExp('^' + field + ':\\s+(\\d+)', 'm'));
  return m ? Number(m[1]) : -1;
}

function fail(msg) {
  process.stderr.write('error: ' + msg + '\n');
  process.exit(1);
}

// setup, untimed
const ms = new Int32Array(N);
let x = 1, sum = 0;
for (let i = 0; i < N; i++) {
  x = (x * 48271) % 2147483647;  // < 2^47: exact in a double
  const us = x % 1000000;
  sum += us;
  ms[i] = Math.floor(us / 1000);
}

const out = { n: N, delay_sum_us: sum };
let fired = 0, fired2 = 0, tDone = 0, cpuDone = 0;

function onFire() {
  if (++fired === N) {
    tDone = now();
    cpuDone = cpu();
    setImmediate(phase2);
  }
}

function onFire2() { fired2++; }  // must never run: every phase-2 call is cancelled

// phase 2: schedule N again (timed apart) with the same spread 1000 s out, so
// none falls due; one loop turn (untimed); then cancel each and time until the
// next loop turn, which absorbs whatever cancelling left.
function phase2() {
  gc();
  const h = new Array(N).fill(null);
  const t2 = now();
  for (let i = 0; i < N; i++) h[i] = setTimeout(onFire2, 1000000 + ms[i]);
  const t3 = now();
  out.schedule2_s = t3 - t2;
  setImmediate(() => {
    const t4 = now();
    for (let i = 0; i < N; i++) clearTimeout(h[i]);
    const t5 = now();
    setImmediate(() => {
      const t6 = now();
      const left = process.getActiveResourcesInfo().filter((s) => s === 'Timeout').length;
      if (left !== 0) fail('phase 2: ' + left + ' timers still pending after clearTimeout');
      out.cancel_s = t6 - t4;
      out.cancel_calls_s = t5 - t4;
      out.fire_cpu_s = cpuDone - c1;
      out.total_s = tDone - t0;
      out.fired = fired;
      process.on('exit', () => {
        if (fired2 !== 0) { process.stderr.write('error: phase 2: a cancelled call ran\n'); process.exitCode = 1; return; }
        for (const [k, v] of Object.entries(out)) console.log(k + '=' + (Number.isInteger(v) ? v : v.toFixed(6)));
      });
    });
  });
}

// phase 1: schedule N, then run until all have fired
gc();
const rss0 = statusKb('VmRSS');
const t0 = now();
for (let i = 0; i < N; i++) setTimeout(onFire, ms[i]);
const t1 = now();
const hwm = statusKb('VmHWM');
const c1 = cpu();
out.schedule_s = t1 - t0;
out.rss_before_kb = rss0;
out.hwm_pending_kb = hwm;
out.bytes_per_call = (hwm - rss0) * 1024 / N;
process.on('exit', () => {
  if (fired !== N) { process.stderr.write('error: phase 1: ' + fired + ' of ' + N + ' calls fired\n'); process.exitCode = 1; }
});
// the loop starts when this script returns: fire time is counted from c1
