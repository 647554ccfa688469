'use strict';
// deferred.js: the Node.js peer of scripts/bench/deferred (Promises).
//   chain: N times, new Promise + three .then + resolve; timed until every
//          chain has completed (the microtask queue is FIFO, so awaiting the
//          last chain waits for all of them).
//   await: N `await Promise.resolve(i)` inside one async function.
// Run with --expose-gc so setup can collect. Prints key=value lines; exits 1
// when the work did not happen.
const N = Number(process.argv[2] || 1000000);
const now = () => Number(process.hrtime.bigint()) / 1e9;
const gc = () => { if (global.gc) global.gc(); };

function fail(msg) {
  process.stderr.write('error: ' + msg + '\n');
  process.exit(1);
}

async function main() {
  // chain
  let acc = 0;
  const cb1 = (x) => x + 1;
  const cb2 = (x) => x + 1;
  const cb3 = (x) => { acc += x; return x; };
  gc();
  const t0 = now();
  let last;
  for (let i = 1; i <= N; i++) {
    let resolve;
    const p = new Promise((r) => { resolve = r; });
    last = p.then(cb1).then(cb2).then(cb3);
    resolve(i);
  }
  await last;
  const t1 = now();
  let want = N * (N + 1) / 2 + 2 * N;
  if (acc !== want) fail('chain: callbacks summed ' + acc + ', expected ' + want);

  // await
  async function body(m) {
    let s = 0;
    for (let i = 1; i <= m; i++) s += await Promise.resolve(i);
    return s;
  }
  gc();
  const t2 = now();
  const r = await body(N);
  const t3 = now();
  want = N * (N + 1) / 2;
  if (r !== want) fail('await: the function returned ' + r + ', expected ' + want);

  console.log('n=' + N);
  console.log('impl=node');
  console.log('chain_s=' + (t1 - t0).toFixed(6));
  console.log('await_s=' + (t3 - t2).toFixed(6));
}

main().catch((e) => fail(e && e.stack || String(e)));
