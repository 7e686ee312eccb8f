// The load balancer's table in shared memory, as the control plane writes it and process.ts reads it.
// All of the table's state lives here (names, and the weights the health checks took, included), so a
// snapshot or a reload restores it whole.
//
//   header  64 B: [size M u32][vip count u32][max backends u32][generation u32][buckets moved by the last change u32]
//                 [4 B unused][clock start u64: the time of the first packet after a change made before any]
//   vips    16 B each: [address u32][port u16][protocol u8][any port u8][8 B unused]
//   backends 48 B per slot: [address u32][weight u32][present u32][drained from u32][name, 32 B UTF-8, NUL-padded]
//            (drained from: the weight the health checks drained it from, plus 1; 0 when they did not)
//   buckets 16 B each: [current slot u16][previous slot u16][generation of the last change u32][time of the last change u64]
//
// A removed backend's slot keeps its address while some bucket still names it as previous backend,
// and is reused only after that. A bucket's first word (current, previous, generation) is stored in
// one atomic write, after its time, so the fast path never sees half a change. Before the first packet the
// clock stands at 0: a change then is stamped 0 and clock start zeroed, which the first packet sets to its
// time, so that the change counts as made then (not as never: age 2^32 - 1 ms, as for no previous backend).

import { formatIPv4 } from '../../engine/params.ts';
import { maglevTable, withoutBuckets, NO_BACKEND } from './maglev.ts';

export const HEADER = 64;
export const VIP_ENTRY = 16;
export const BACKEND_ENTRY = 48;
export const BUCKET_ENTRY = 16;
export const NAME_BYTES = 32;
/** A bucket with no current or previous backend. */
export const NONE = 0xffff;

const H_SIZE = 0, H_VIPS = 4, H_MAX_BACKENDS = 8, H_GENERATION = 12, H_MOVED = 16, H_CLOCK_START = 24;

export interface Vip {
  address: number;
  protocol: 'tcp' | 'udp';
  /** undefined: any port. */
  port?: number;
}

export interface Backend {
  name: string;
  address: number;
  weight: number;
  /** The weight the health checks drained it from; undefined unless they drained it (a weight set by hand clears it). */
  drainedFrom?: number;
}

export interface TableParams {
  vips: Vip[];
  backends: Backend[];
  table_size: number;
  max_backends: number;
}

export function tableBytes(p: TableParams): number {
  return HEADER + p.vips.length * VIP_ENTRY + p.max_backends * BACKEND_ENTRY + p.table_size * BUCKET_ENTRY;
}

export const STARVED_HINT = 'a prime table size well above 100 x the backends (65537 or 655373), or weights closer together';
export const starvedMessage = (starved: Backend[], size: number) =>
  `${starved.map((b) => `${b.name} (weight ${b.weight})`).join(', ')} would get none of the table's ${size} buckets: no traffic, though weighted`;

export const formatVip = (v: Vip) => `${formatIPv4(v.address)} ${v.protocol} ${v.port ?? 'any'}`;

/** The table as the parameters describe it: generation 0, no bucket with a previous backend. */
export function initTable(p: TableParams, view: DataView): void {
  view.setUint32(H_SIZE, p.table_size, true);
  view.setUint32(H_VIPS, p.vips.length, true);
  view.setUint32(H_MAX_BACKENDS, p.max_backends, true);
  p.vips.forEach((v, i) => {
    const at = HEADER + i * VIP_ENTRY;
    view.setUint32(at, v.address, true);
    view.setUint16(at + 4, v.port ?? 0, true);
    view.setUint8(at + 6, v.protocol === 'tcp' ? 6 : 17);
    view.setUint8(at + 7, v.port === undefined ? 1 : 0);
  });
  const table = new LiveTable(view);
  p.backends.forEach((b, slot) => table.writeBackend(slot, b));
  maglevTable(p.backends, p.table_size).forEach((slot, bucket) => table.writeBucket(bucket, slot === NO_BACKEND ? NONE : slot, NONE, 0, 0n));
}

export interface BucketState {
  current?: string;
  previous?: string;
  generation: number;
  changed_ns: bigint;
}

export class LiveTable {
  private readonly words: BigUint64Array;

  constructor(private readonly view: DataView) {
    this.words = new BigUint64Array(view.buffer, view.byteOffset, view.byteLength / 8);
  }

  get size(): number { return this.view.getUint32(H_SIZE, true); }
  get generation(): number { return this.view.getUint32(H_GENERATION, true); }
  get lastMoved(): number { return this.view.getUint32(H_MOVED, true); }
  private get maxBackends(): number { return this.view.getUint32(H_MAX_BACKENDS, true); }
  private get backendBase(): number { return HEADER + this.view.getUint32(H_VIPS, true) * VIP_ENTRY; }
  private get bucketBase(): number { return this.backendBase + this.maxBackends * BACKEND_ENTRY; }

  vips(): Vip[] {
    return Array.from({ length: this.view.getUint32(H_VIPS, true) }, (_, i) => {
      const at = HEADER + i * VIP_ENTRY;
      const port = this.view.getUint8(at + 7) ? undefined : this.view.getUint16(at + 4, true);
      return { address: this.view.getUint32(at, true), protocol: this.view.getUint8(at + 6) === 6 ? 'tcp' : 'udp', port };
    });
  }

  /** The backends in the table (weight 0 included), by slot. */
  backends(): Map<number, Backend> {
    const found = new Map<number, Backend>();
    for (let slot = 0; slot < this.maxBackends; slot++) {
      const at = this.backendBase + slot * BACKEND_ENTRY;
      if (!this.view.getUint32(at + 8, true)) continue;
      const name = Buffer.from(this.view.buffer, this.view.byteOffset + at + 16, NAME_BYTES).toString('utf8').replace(/\0+$/, '');
      const drained = this.view.getUint32(at + 12, true);
      found.set(slot, { name, address: this.view.getUint32(at, true), weight: this.view.getUint32(at + 4, true), drainedFrom: drained ? drained - 1 : undefined });
    }
    return found;
  }

  bucket(index: number): { current: number; previous: number; generation: number; changed_ns: bigint } {
    const word = Atomics.load(this.words, (this.bucketBase + index * BUCKET_ENTRY) / 8);
    return {
      current: Number(word & 0xffffn), previous: Number((word >> 16n) & 0xffffn), generation: Number(word >> 32n),
      changed_ns: this.view.getBigUint64(this.bucketBase + index * BUCKET_ENTRY + 8, true),
    };
  }

  /** Bucket by bucket: backend names (a removed backend's too, while a bucket remembers it). */
  describe(index: number): BucketState {
    const b = this.bucket(index);
    const name = (slot: number) => (slot === NONE ? undefined : this.nameAt(slot));
    const changed = b.previous !== NONE && !b.changed_ns ? this.view.getBigUint64(H_CLOCK_START, true) : b.changed_ns;
    return { current: name(b.current), previous: name(b.previous), generation: b.generation, changed_ns: changed };
  }

  private nameAt(slot: number): string {
    const at = this.backendBase + slot * BACKEND_ENTRY + 16;
    return Buffer.from(this.view.buffer, this.view.byteOffset + at, NAME_BYTES).toString('utf8').replace(/\0+$/, '');
  }

  writeBackend(slot: number, b: Backend | undefined): void {
    const at = this.backendBase + slot * BACKEND_ENTRY;
    if (!b) { this.view.setUint32(at + 8, 0, true); return; }
    this.view.setUint32(at, b.address, true);
    this.view.setUint32(at + 4, b.weight, true);
    this.view.setUint32(at + 8, 1, true);
    this.view.setUint32(at + 12, b.drainedFrom === undefined ? 0 : b.drainedFrom + 1, true);
    const name = new Uint8Array(this.view.buffer, this.view.byteOffset + at + 16, NAME_BYTES);
    name.fill(0);
    name.set(Buffer.from(b.name, 'utf8'));
  }

  writeBucket(index: number, current: number, previous: number, generation: number, changedNs: bigint): void {
    const at = this.bucketBase + index * BUCKET_ENTRY;
    this.view.setBigUint64(at + 8, changedNs, true);
    Atomics.store(this.words, at / 8, BigInt(current) | (BigInt(previous) << 16n) | (BigInt(generation) << 32n));
  }

  /**
   * Replaces the list of backends with `next` (checked by the caller) and rebuilds the table. Only the
   * buckets whose backend changes get a new previous backend, generation and time (`now`). Returns
   * the slots a backend took that were free (their counters are another backend's).
   */
  update(next: Backend[], now: bigint): number[] {
    const current = this.backends();
    const slotOf = new Map([...current].map(([slot, b]) => [b.name, slot]));
    const size = this.size;
    const referenced = new Set<number>();
    const taken: number[] = [];
    for (let i = 0; i < size; i++) {
      const b = this.bucket(i);
      referenced.add(b.current).add(b.previous);
    }
    const slots = next.map((b) => {
      const kept = slotOf.get(b.name);
      if (kept !== undefined) return kept;
      // Removed and added again, to the same address: the buckets that remember it as their previous backend still mean it.
      const remembered = [...referenced].find((slot) => slot < this.maxBackends && !current.has(slot) && this.nameAt(slot) === b.name
        && this.view.getUint32(this.backendBase + slot * BACKEND_ENTRY, true) === b.address);
      if (remembered !== undefined) return remembered;
      for (let slot = 0; slot < this.maxBackends; slot++) {
        if (!current.has(slot) && !referenced.has(slot)) {
          referenced.add(slot);
          taken.push(slot);
          return slot;
        }
      }
      throw new Error(`no free backend slot: all ${this.maxBackends} are in use or remembered by buckets as previous backend (raise max_backends in the config `
        + 'and reload: the running backends go on in the larger table, whose buckets forget their previous backends)');
    });
    const table = maglevTable(next, size);
    const starved = withoutBuckets(next, table);
    if (starved.length) throw new Error(`${starvedMessage(starved, size)} (${STARVED_HINT})`);
    for (const slot of current.keys()) if (!slots.includes(slot)) this.writeBackend(slot, undefined);
    next.forEach((b, i) => this.writeBackend(slots[i], b));
    if (!now) this.view.setBigUint64(H_CLOCK_START, 0n, true);
    const generation = this.generation + 1;
    let moved = 0;
    for (let i = 0; i < size; i++) {
      const target = table[i] === NO_BACKEND ? NONE : slots[table[i]];
      const b = this.bucket(i);
      if (b.current === target) continue;
      this.writeBucket(i, target, b.current, generation, now);
      moved++;
    }
    this.view.setUint32(H_MOVED, moved, true);
    this.view.setUint32(H_GENERATION, generation, true);
    return taken;
  }
}
