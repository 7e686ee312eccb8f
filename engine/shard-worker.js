// A shard: one worker thread running the compiled graph on batches from its receive ring, and,
// between batches, the operations the engine posts in its mailbox (engine/shard.ts).
// Plain JavaScript so that a worker starts without a TypeScript loader.

import { workerData, parentPort } from 'node:worker_threads';
import { IdleTicks } from './idle-ticks.js';

const { module, memory, context, descriptor, batch, mailbox, rxRing, clock, wallOffset, ticking } = workerData;
/** Polling this long without work before sleeping: a futex wake-up costs tens of microseconds here. */
const SPIN_NS = 200_000n;
const M = { stop: 0, posted: 1, done: 2, op: 3, args: 4, result: 10, result2: 11, holdTicks: 12, ticksHeld: 13 };
const OP_EXPORT = 1;

const env = { memory, abort: () => { throw new Error('abort called in the fast path'); }, seed: () => 0, trace: () => {} };
const x = new WebAssembly.Instance(module, { env }).exports;
x.shardInit(context);
parentPort.postMessage({ ready: true });

const ring = new Int32Array(memory.buffer, rxRing, 64);
const HEAD = 0, TAIL = 16, SLEEP = 32; // RingLayout offsets / 4
const box = new Int32Array(mailbox);

function runPosted() {
  const a = (i) => box[M.args + i];
  const now = x.shardNow();
  if (box[M.op] === OP_EXPORT) {
    box[M.result] = x.tableExport(a(0), a(1), a(2), a(3), a(4), now, a(5), a(6));
    box[M.result2] = x.exportDone(a(0)) ? 1 : 0;
  } else {
    box[M.result] = x.tableImport(a(0), a(1), a(2), now);
  }
  Atomics.store(box, M.done, Atomics.load(box, M.posted));
  Atomics.notify(box, M.done);
}

try {
  let idleSince = 0n;
  // On real time, a shard without packets ticks (unless the engine reads its state meanwhile).
  const ticks = ticking ? new IdleTicks(clock, wallOffset) : undefined;
  while (Atomics.load(box, M.stop) === 0) {
    if (Atomics.load(box, M.posted) !== Atomics.load(box, M.done)) runPosted();
    const taken = x.shardStep(descriptor, batch, clock === 'wall' ? wallOffset + process.hrtime.bigint() : 0n);
    // A hold the engine asked for (its number) is answered once no tick runs, nor will until it is lifted.
    const hold = Atomics.load(box, M.holdTicks);
    if (box[M.ticksHeld] !== hold) Atomics.store(box, M.ticksHeld, hold);
    const tickAt = ticks?.after(taken, x.shardNow) ?? 0n;
    if (tickAt && !hold) x.shardTick(descriptor, tickAt);
    if (taken) { idleSince = 0n; continue; }
    const now = process.hrtime.bigint();
    if (idleSince === 0n) idleSince = now;
    if (now - idleSince < SPIN_NS) continue;
    idleSince = 0n;
    Atomics.store(ring, SLEEP, 1);
    const tail = Atomics.load(ring, TAIL);
    if (Atomics.load(ring, HEAD) === tail && Atomics.load(box, M.posted) === Atomics.load(box, M.done)) Atomics.wait(ring, HEAD, tail, 20);
    Atomics.store(ring, SLEEP, 0);
  }
  parentPort.postMessage({ stopped: true });
} catch (error) {
  // The engine reports where it happened (the descriptor names the running element) and restarts the shard.
  parentPort.postMessage({ crash: { message: error.message, stack: error.stack } });
}
