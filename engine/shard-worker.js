// A shard: one worker thread running the compiled graph on batches from its receive ring.
// Plain JavaScript so that a worker starts without a TypeScript loader.

import { workerData, parentPort } from 'node:worker_threads';

const { module, memory, context, descriptor, batch, control, rxRing, clock } = workerData;
const STOP = 0;
const SPIN_BEFORE_SLEEP = 200;

const env = { memory, abort: () => { throw new Error('abort called in the fast path'); }, seed: () => 0, trace: () => {} };
const instance = new WebAssembly.Instance(module, { env });
const { shardInit, shardStep } = instance.exports;
shardInit(context);

const ring = new Int32Array(memory.buffer, rxRing, 64);
const HEAD = 0, TAIL = 16, SLEEP = 32; // RingLayout offsets / 4
const flags = new Int32Array(control);

try {
  let idle = 0;
  while (Atomics.load(flags, STOP) === 0) {
    const taken = shardStep(descriptor, batch, clock === 'wall' ? process.hrtime.bigint() : 0n);
    if (taken) { idle = 0; continue; }
    if (++idle < SPIN_BEFORE_SLEEP) continue;
    Atomics.store(ring, SLEEP, 1);
    const tail = Atomics.load(ring, TAIL);
    if (Atomics.load(ring, HEAD) === tail) Atomics.wait(ring, HEAD, tail, 20);
    Atomics.store(ring, SLEEP, 0);
  }
  parentPort.postMessage({ stopped: true });
} catch (error) {
  parentPort.postMessage({ error: { message: error.message, stack: error.stack } });
}
