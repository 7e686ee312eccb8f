// The machine line every benchmark reports, so figures are read with the hardware they came from.

import { cpus, release } from 'node:os';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

export interface Machine {
  nproc: number;
  cpu: string;
  node: string;
  kernel: string;
}

export function machine(): Machine {
  return { nproc: availableParallelism(), cpu: cpus()[0]?.model ?? 'unknown', node: process.version, kernel: release() };
}

export function machineLine(m: Machine): string {
  return `${m.nproc} × ${m.cpu}, node ${m.node}, kernel ${m.kernel}`;
}

export const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/**
 * Nanoseconds for a value to go from this thread to another and back through one shared cache line
 * (two threads spinning, for `ms`). What handing packets to a shard worker costs depends on it: on a
 * virtual machine the host may place the two vCPUs on one socket (about 100 ns here) or on two (about
 * 500 ns), and move them while a benchmark runs; a worker row is read next to it.
 */
export async function coreRoundTripNs(ms = 20): Promise<number> {
  const line = new Int32Array(new SharedArrayBuffer(256));
  const STOP = 32;
  const echo = new Worker(`const line = require('node:worker_threads').workerData;
    for (let v = 1; ; v += 2) { while (Atomics.load(line, 0) !== v); if (Atomics.load(line, ${STOP})) break; Atomics.store(line, 0, v + 1); }`,
  { eval: true, workerData: line });
  let v = 1;
  const trip = () => { Atomics.store(line, 0, v); while (Atomics.load(line, 0) !== v + 1); v += 2; };
  for (let i = 0; i < 10_000; i++) trip(); // the echo thread is up and both are compiled
  let trips = 0;
  const start = performance.now();
  while (performance.now() - start < ms) { for (let i = 0; i < 1000; i++) trip(); trips += 1000; }
  const ns = ((performance.now() - start) * 1e6) / trips;
  Atomics.store(line, STOP, 1);
  Atomics.store(line, 0, v);
  await echo.terminate();
  return ns;
}
