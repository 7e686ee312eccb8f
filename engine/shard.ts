// One shard: its region of the shared memory (rings, clone stash, context block, graph descriptor
// with its batches and element state blocks) and the thread that runs the compiled graph on it: a
// worker, or the I/O thread itself in inline mode. The engine talks to a running worker through a
// small mailbox in shared memory that the worker checks between batches.

import { setTimeout as sleep } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import { RingLayout, ShardContext } from './layout.ts';
import type { MemoryArena } from './memory.ts';
import { IdleTicks } from './idle-ticks.js';

/** Mailbox words (Int32Array indices); shard-worker.js uses the same numbers. */
export const Mailbox = { stop: 0, posted: 1, done: 2, op: 3, args: 4, result: 10, result2: 11, holdTicks: 12, ticksHeld: 13, size: 16 } as const;
export const Op = { export: 1, import: 2 } as const;

/**
 * The wall clock (`--clock wall`) in ns since the epoch, as block logs and deadlines compared with packet times
 * need, advancing with the monotonic clock (setting the system's clock moves nothing): one offset for every thread.
 */
const WALL_OFFSET = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();
export const wallNanos = (): bigint => WALL_OFFSET + process.hrtime.bigint();

export interface ShardMemory {
  context: number;
  descriptor: number;
  rxRing: number;
  outRing: number;
  stash: number;
  /** Address of each node's state block (0 for sources and sinks). */
  blocks: number[];
}

export class Shard {
  readonly mailbox = new Int32Array(new SharedArrayBuffer(4 * Mailbox.size));
  private worker?: Worker;
  private instance?: Record<string, any>;
  private failure?: Error;

  /** Called when the worker's fast path throws (a trap); the engine reports it and restarts the shard. */
  onCrash: (error: Error) => void = (error) => { this.failure ??= error; };

  constructor(readonly id: number, readonly memory: ShardMemory, private readonly arena: MemoryArena) {}

  get failed(): Error | undefined {
    return this.failure;
  }

  /** True while a thread runs the shard (after stop(), the engine may touch its state directly). */
  get running(): boolean {
    return this.worker !== undefined || this.instance !== undefined;
  }

  /**
   * Starts the worker; resolves once it has instantiated the module and is ready for batches (starting a
   * thread and instantiating take a hundred milliseconds or more here: packets sent before then would wait
   * in the ring).
   */
  startWorker(module: WebAssembly.Module, batch: number, clock: 'trace' | 'wall', ticks: boolean): Promise<void> {
    this.worker = new Worker(new URL('./shard-worker.js', import.meta.url), {
      workerData: {
        module, memory: this.arena.memory, context: this.memory.context, descriptor: this.memory.descriptor,
        batch, mailbox: this.mailbox.buffer, rxRing: this.memory.rxRing, clock, wallOffset: WALL_OFFSET, ticking: ticks,
      },
    });
    let ready: () => void;
    const started = new Promise<void>((resolve) => { ready = resolve; });
    this.worker.on('message', (m) => {
      if (m.ready) ready();
      if (m.crash) {
        this.worker = undefined;
        const error = new Error(m.crash.message);
        error.stack = m.crash.stack;
        this.onCrash(error);
      }
    });
    this.worker.on('error', (e) => { this.failure ??= e; ready(); });
    return started;
  }

  startInline(module: WebAssembly.Module, imports: WebAssembly.Imports): void {
    this.instance = new WebAssembly.Instance(module, imports).exports as Record<string, any>;
    this.instance.shardInit(this.memory.context);
  }

  private inlineTicks?: IdleTicks;

  /**
   * Inline mode: runs steps until the receive ring is empty. With `ticks` (the clock is real time and the engine is not
   * reading the state), a shard that has had no packets for a while ticks. A trap in an element is a crash, as in a worker.
   */
  runInline(batch: number, time: bigint, clock: 'trace' | 'wall', ticks: boolean): void {
    const instance = this.instance;
    if (!instance) return;
    try {
      let taken = 0;
      while (instance.shardStep(this.memory.descriptor, batch, time)) taken++;
      if (!ticks) return;
      this.inlineTicks ??= new IdleTicks(clock, WALL_OFFSET);
      const tickAt = this.inlineTicks.after(taken, instance.shardNow);
      if (tickAt) instance.shardTick(this.memory.descriptor, tickAt);
    } catch (e) {
      if (!(e instanceof WebAssembly.RuntimeError)) throw e;
      this.instance = undefined;
      this.onCrash(e);
    }
  }

  /**
   * While the engine reads the shard's state (a snapshot), it does no timed work of its own, so that what it reads is
   * one picture: resolves once a worker has seen the hold (a tick under way has ended).
   */
  async holdTicks(hold: boolean): Promise<void> {
    // Each hold a number of its own, which the worker echoes: an echo of an earlier one answers nothing.
    const epoch = hold ? ++this.holdEpoch : 0;
    Atomics.store(this.mailbox, Mailbox.holdTicks, epoch);
    if (!this.worker || !hold) return;
    this.wake();
    while (Atomics.load(this.mailbox, Mailbox.ticksHeld) !== epoch && this.worker && !this.failure) await sleep(1);
  }

  private holdEpoch = 0;

  /** Wakes the worker if it sleeps on its receive ring. */
  wake(): void {
    Atomics.notify(this.arena.i32, (this.memory.rxRing + RingLayout.head) >>> 2);
  }

  /** True when the shard has finished every batch it was given and everything it sent was collected. */
  idle(): boolean {
    const v = this.arena.view;
    const { rxRing, outRing } = this.memory;
    return v.getUint32(rxRing + RingLayout.head, true) === v.getUint32(rxRing + RingLayout.tail, true)
      && v.getUint32(outRing + RingLayout.head, true) === v.getUint32(outRing + RingLayout.tail, true);
  }

  /** Where the receive ring's published head (or, with `out`, the out ring's head) is now. */
  head(ring: 'rx' | 'out'): number {
    return this.arena.view.getUint32((ring === 'rx' ? this.memory.rxRing : this.memory.outRing) + RingLayout.head, true);
  }

  /** Where the ring's consumer is: the next index it will take. */
  tail(ring: 'rx' | 'out'): number {
    return this.arena.view.getUint32((ring === 'rx' ? this.memory.rxRing : this.memory.outRing) + RingLayout.tail, true);
  }

  /** True once the ring's consumer has taken every entry before index `mark` (indices run free and wrap). */
  passed(ring: 'rx' | 'out', mark: number): boolean {
    const tail = this.arena.view.getUint32((ring === 'rx' ? this.memory.rxRing : this.memory.outRing) + RingLayout.tail, true);
    return ((tail - mark) | 0) >= 0;
  }

  /**
   * Runs an operation on the shard's own thread, between two batches, and returns its results:
   * export or import of flow table entries (a shard's tables are written only by its thread).
   */
  async run(op: number, args: number[]): Promise<[number, number]> {
    if (this.instance) return this.runHere(op, args);
    const m = this.mailbox;
    m[Mailbox.op] = op;
    args.forEach((a, i) => { m[Mailbox.args + i] = a; });
    const posted = Atomics.add(m, Mailbox.posted, 1) + 1;
    this.wake();
    while (Atomics.load(m, Mailbox.done) !== posted) {
      if (this.failure) throw this.failure;
      // A shard stopped (the run ended) answers nothing more: a scale event waiting on it ends with this.
      if (!this.worker) throw new Error(`shard ${this.id} stopped before it answered`);
      const seen = Atomics.load(m, Mailbox.done);
      const wait = (Atomics as any).waitAsync(m, Mailbox.done, seen, 50);
      if (wait.async) await wait.value;
    }
    return [m[Mailbox.result], m[Mailbox.result2]];
  }

  private runHere(op: number, args: number[]): [number, number] {
    const x = this.instance!;
    const now = x.shardNow();
    if (op === Op.export) {
      const [table, buckets, mask, out, capacity, resume, owner] = args;
      const n = x.tableExport(table, buckets, mask, out, capacity, now, resume, owner);
      return [n, x.exportDone(table) ? 1 : 0];
    }
    const [table, input, count] = args;
    return [x.tableImport(table, input, count, now), 0];
  }

  /** The shard's counters from its context block; misrouted_by is the index + 1 of the element that last pushed to an output it does not have. */
  counters(): { batches: number; packets: number; no_buffer: number; resteered_again: number; overrun: number; misrouted: number; misrouted_by: number } {
    const v = this.arena.view;
    const c = this.memory.context;
    return {
      batches: Number(v.getBigUint64(c + ShardContext.batches, true)),
      packets: Number(v.getBigUint64(c + ShardContext.packets, true)),
      no_buffer: Number(v.getBigUint64(c + ShardContext.noBuffer, true)),
      resteered_again: Number(v.getBigUint64(c + ShardContext.resteeredAgain, true)),
      overrun: Number(v.getBigUint64(c + ShardContext.overrun, true)),
      misrouted: Number(v.getBigUint64(c + ShardContext.misrouted, true)),
      misrouted_by: v.getUint32(c + ShardContext.misroutedBy, true),
    };
  }

  async stop(): Promise<void> {
    // A crash reported while it stops must not start it again.
    this.onCrash = () => {};
    Atomics.store(this.mailbox, Mailbox.stop, 1);
    this.wake();
    // It ends its step and says so before the thread goes, so that its rings and stash are left whole.
    const worker = this.worker;
    if (worker) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 2000);
        const done = () => { clearTimeout(timer); resolve(); };
        worker.on('message', (m) => { if (m.stopped) done(); });
        worker.once('exit', done);
      });
    }
    await this.worker?.terminate();
    this.worker = undefined;
    this.instance = undefined;
  }
}
