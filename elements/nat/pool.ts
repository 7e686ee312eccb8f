// The NAT's shared data (state `pool`): the external pool, the inside and exempt prefixes, who holds
// each port block, the IP ID counters, and the queue of block records the shards write and the main thread logs.
// process.ts reads the same layout (the POOL_* constants there mirror HEADER below).

import { randomBytes } from 'node:crypto';
import { formatIPv4, type Cidr } from '../../engine/params.ts';

export interface NatParams {
  pool: Cidr[];
  inside: Cidr[];
  exempt: Cidr[];
  exempt_ports: number[];
  ports_per_block: number;
  udp_timeout: number;
  deterministic: boolean;
  icmp_source?: number;
  log?: string;
  [other: string]: unknown;
}

/**
 * Byte offsets of the header's u32 fields, and of one u64: the pipeline time at which the PCP server first
 * answered, which every shard counts its epoch from (set by the first, with compare-and-swap).
 */
export const HEADER = {
  addresses: 0, blockShift: 4, deterministic: 8, detPorts: 12, detRatio: 16, insideCount: 20,
  logWrite: 24, logRead: 28, logCapacity: 32, exemptCount: 36, addressesAt: 40, blocksAt: 44,
  insideAt: 48, exemptAt: 52, logAt: 56, exemptPortsAt: 60, icmpSource: 64, poolMin: 68, poolMax: 72, salt: 76, logging: 80,
  undated: 84, pcpEpoch: 88, idsAt: 96, idBuckets: 100, size: 128,
} as const;

export const PROTOCOLS = ['tcp', 'udp', 'icmp'] as const;
const LOG_CAPACITY = 16384;
/** IP ID counters (a power of two), one per hash bucket of (external address, destination, protocol): process.ts renumber. */
const ID_BUCKETS = 2048;
const LOG_RECORD = 32;
/** Usable ports of an address in deterministic mode (1024-65535, RFC 7422). */
export const DETERMINISTIC_PORTS = 64512;
/** Most port blocks a pool may have (8 bytes of owner table each). */
export const MOST_BLOCKS = 1 << 23;

/** Every address of the pool, sorted, without duplicates. */
export function poolAddresses(p: NatParams): number[] {
  const all = new Set<number>();
  for (const c of p.pool) for (let i = 0; i < 2 ** (32 - c.prefix); i++) all.add((c.address + i) >>> 0);
  return [...all].sort((a, b) => a - b);
}

function blockShift(p: NatParams): number {
  return Math.floor(Math.log2(p.ports_per_block));
}

/** Port blocks of the pool's prefixes, over its three protocols (counted without listing the addresses: a /0 is a mistake to report, not to enumerate). */
export function blockCount(p: NatParams): number {
  return PROTOCOLS.length * p.pool.reduce((n, c) => n + 2 ** (32 - c.prefix), 0) * (65536 >> blockShift(p));
}

export function poolLayout(p: NatParams) {
  const addresses = poolAddresses(p);
  const blocks = PROTOCOLS.length * addresses.length * (65536 >> blockShift(p));
  const addressesAt = HEADER.size;
  const insideAt = addressesAt + addresses.length * 4;
  const exemptAt = insideAt + p.inside.length * 12;
  const exemptPortsAt = exemptAt + p.exempt.length * 8;
  const idsAt = exemptPortsAt + 8192;
  const logAt = idsAt + ID_BUCKETS * 4;
  const blocksAt = logAt + LOG_CAPACITY * LOG_RECORD;
  return { addresses, addressesAt, insideAt, exemptAt, exemptPortsAt, idsAt, logAt, blocksAt, size: blocksAt + (p.deterministic ? 0 : blocks * 8) };
}

export function writePool(p: NatParams, v: DataView): void {
  const l = poolLayout(p);
  const set = (at: number, value: number) => v.setUint32(at, value >>> 0, true);
  const { ratio, ports } = deterministicShare(p);
  set(HEADER.addresses, l.addresses.length);
  set(HEADER.blockShift, blockShift(p));
  set(HEADER.deterministic, p.deterministic ? 1 : 0);
  set(HEADER.detRatio, ratio);
  set(HEADER.detPorts, ports);
  set(HEADER.insideCount, p.inside.length);
  set(HEADER.logCapacity, LOG_CAPACITY);
  set(HEADER.logging, p.log ? 1 : 0);
  set(HEADER.exemptCount, p.exempt.length);
  set(HEADER.addressesAt, l.addressesAt);
  set(HEADER.blocksAt, l.blocksAt);
  set(HEADER.insideAt, l.insideAt);
  set(HEADER.exemptAt, l.exemptAt);
  set(HEADER.logAt, l.logAt);
  set(HEADER.exemptPortsAt, l.exemptPortsAt);
  set(HEADER.idsAt, l.idsAt);
  set(HEADER.idBuckets, ID_BUCKETS);
  set(HEADER.icmpSource, p.icmp_source ?? l.addresses[0]);
  set(HEADER.poolMin, l.addresses[0]);
  set(HEADER.poolMax, l.addresses[l.addresses.length - 1]);
  // Ports and blocks are picked from a place hashed with this salt: hard to guess (RFC 6888 REQ-15), and
  // the same in every run in deterministic mode (whose ranges are public anyway).
  set(HEADER.salt, p.deterministic ? 0 : randomBytes(4).readUInt32LE(0));
  // The ID counters start at random places, so that the IDs a NAT sends are hard to guess (RFC 7739).
  const ids = randomBytes(ID_BUCKETS * 4);
  new Uint8Array(v.buffer, v.byteOffset + l.idsAt, ids.length).set(ids);
  l.addresses.forEach((a, i) => set(l.addressesAt + i * 4, a));
  let first = 0;
  p.inside.forEach((c, i) => {
    set(l.insideAt + i * 12, c.address);
    set(l.insideAt + i * 12 + 4, c.mask);
    set(l.insideAt + i * 12 + 8, first);
    first += 2 ** (32 - c.prefix);
  });
  p.exempt.forEach((c, i) => {
    set(l.exemptAt + i * 8, c.address);
    set(l.exemptAt + i * 8 + 4, c.mask);
  });
  for (const port of p.exempt_ports) v.setUint8(l.exemptPortsAt + (port >> 3), v.getUint8(l.exemptPortsAt + (port >> 3)) | (1 << (port & 7)));
}

/**
 * Deterministic mode's split: inside addresses per pool address (`ratio`), and the ports each gets (0 when
 * the inside prefixes hold more addresses than the pool has ports for: a config error).
 */
export function deterministicShare(p: NatParams): { inside: number; ratio: number; ports: number } {
  const inside = p.inside.reduce((n, c) => n + 2 ** (32 - c.prefix), 0);
  const ratio = Math.max(1, Math.ceil(inside / poolAddresses(p).length));
  return { inside, ratio, ports: Math.floor(DETERMINISTIC_PORTS / ratio) };
}

/** The external address and port range of an inside address in deterministic mode (VPP's det44 arithmetic). */
export function deterministicRange(p: NatParams, inside: number): { address: number; first: number; last: number } | undefined {
  const addresses = poolAddresses(p);
  const { ratio, ports } = deterministicShare(p);
  let first = 0;
  for (const c of p.inside) {
    if (((inside & c.mask) >>> 0) === c.address) {
      const index = first + (inside - c.address);
      const start = 1024 + (index % ratio) * ports;
      return { address: addresses[Math.floor(index / ratio)], first: start, last: start + ports - 1 };
    }
    first += 2 ** (32 - c.prefix);
  }
  return undefined;
}

/** Blocks held now, per external address and protocol. */
export function blocksInUse(v: DataView): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  const t = blockTable(v);
  heldCounts(v).forEach((n, i) => {
    if (n) (out[formatIPv4(t.address(Math.floor(i / PROTOCOLS.length)))] ??= {})[PROTOCOLS[i % PROTOCOLS.length]] = n;
  });
  return out;
}

/**
 * How many blocks of each address and protocol someone holds ([address * 3 + protocol]; none in deterministic mode):
 * a count that makes no object per block, as a scrape of the counters at a million sessions asks (half a second, with one).
 */
export function heldCounts(v: DataView): Uint32Array {
  if (v.getUint32(HEADER.deterministic, true)) return new Uint32Array(0);
  const t = blockTable(v);
  const counts = new Uint32Array(t.count * PROTOCOLS.length);
  for (let a = 0; a < t.count; a++) {
    for (let c = 0; c < PROTOCOLS.length; c++) {
      const first = t.record(c, a, 0);
      let held = 0;
      for (let b = 0; b < t.perAddress; b++) if (v.getUint32(first + b * 8, true)) held++;
      counts[a * PROTOCOLS.length + c] = held;
    }
  }
  return counts;
}

/** A block a subscriber holds: its external address, protocol, and first port and size. */
export interface HeldBlock { subscriber: number; external: number; protocol: string; first: number; size: number }

/** A block to keep from other subscribers: its quarantine runs from `second` (the clock's). */
export interface KeptBlock { external: number; protocol: string; first: number; size: number; second: number }

/**
 * A released second no clock reaches: a block kept from everyone until its quarantine is dated (dateQuarantine).
 * The pool's header says whether it has any (HEADER.undated), so that reloads and snapshots carry that too.
 */
const UNDATED = 0xffffffff;

/** Where the pool data keeps who holds each block: [owner u32][released second u32] per block of each protocol and address. */
function blockTable(v: DataView) {
  const count = v.getUint32(HEADER.addresses, true);
  const shift = v.getUint32(HEADER.blockShift, true);
  const perAddress = 65536 >> shift;
  const blocksAt = v.getUint32(HEADER.blocksAt, true);
  const addressesAt = v.getUint32(HEADER.addressesAt, true);
  return {
    count, shift, perAddress,
    address: (a: number) => v.getUint32(addressesAt + a * 4, true),
    record: (c: number, a: number, b: number) => blocksAt + ((c * count + a) * perAddress + b) * 8,
  };
}

/**
 * The blocks of the pool data that someone holds or held (none in deterministic mode): who holds it (0: nobody) and
 * the second it was last given back (0: never).
 */
function* usedBlocks(v: DataView): Generator<HeldBlock & { released: number }> {
  if (v.getUint32(HEADER.deterministic, true)) return;
  const t = blockTable(v);
  for (let a = 0; a < t.count; a++) {
    for (let c = 0; c < PROTOCOLS.length; c++) {
      for (let b = 0; b < t.perAddress; b++) {
        const record = t.record(c, a, b);
        const subscriber = v.getUint32(record, true), released = v.getUint32(record + 4, true);
        if (subscriber || released) yield { subscriber, released, external: t.address(a), protocol: PROTOCOLS[c], first: b << t.shift, size: 1 << t.shift };
      }
    }
  }
}

/** Every block someone holds now: its subscriber, external address, protocol and first port. */
function* heldBlocks(v: DataView): Generator<HeldBlock> {
  for (const block of usedBlocks(v)) if (block.subscriber) yield block;
}

/**
 * The blocks that a NAT's pool data keeps from other subscribers at `second` (its clock's): those held, as if
 * given back then, and those given back within the quarantine before it, from when they were.
 */
export function keptBlocks(v: DataView, p: NatParams, second: number): KeptBlock[] {
  const since = second - Number(p.quarantine) / 1e9;
  const kept: KeptBlock[] = [];
  for (const { subscriber, released, external, protocol, first, size } of usedBlocks(v)) {
    if (subscriber || (released && released > since)) kept.push({ external, protocol, first, size, second: subscriber ? second : released });
  }
  return kept;
}

/**
 * The blocks another run's pool data (a snapshot's, laid out by other parameters) keeps from other subscribers, kept
 * from everyone until dateQuarantine: its seconds are that run's clock. The last block given back dates it at the
 * earliest, so the blocks given back within the quarantine before that are among them.
 */
export function undatedBlocks(v: DataView, p: NatParams): KeptBlock[] {
  let last = 0;
  for (const { released } of usedBlocks(v)) if (released > last && released !== UNDATED) last = released;
  return keptBlocks(v, p, last).map((block) => ({ ...block, second: UNDATED }));
}

/**
 * Puts into quarantine the blocks of this pool that overlap `kept` (blocks another NAT kept from others when it
 * ended: the one a reload replaced with this one, or a snapshot's, started afresh), so that no other subscriber gets
 * their ports before the quarantine is over (RFC 6888 REQ-8). Addresses not in this pool are left out.
 */
export function quarantineBlocks(v: DataView, p: NatParams, kept: Iterable<KeptBlock>): void {
  if (p.deterministic) return;
  const t = blockTable(v);
  const index = new Map(Array.from({ length: t.count }, (_, a) => [t.address(a), a]));
  for (const block of kept) {
    const a = index.get(block.external);
    if (a === undefined) continue;
    const c = PROTOCOLS.indexOf(block.protocol as (typeof PROTOCOLS)[number]);
    for (let b = block.first >> t.shift; b <= (block.first + block.size - 1) >> t.shift; b++) {
      const record = t.record(c, a, b);
      if (v.getUint32(record + 4, true) < block.second) v.setUint32(record + 4, block.second, true);
    }
    if (block.second === UNDATED) v.setUint32(HEADER.undated, 1, true);
  }
}

/** Dates the quarantine of the undated blocks (undatedBlocks), if the pool has any, from `second`. */
export function dateQuarantine(v: DataView, second: number): void {
  if (!v.getUint32(HEADER.undated, true)) return;
  const t = blockTable(v);
  for (let record = t.record(0, 0, 0); record < t.record(PROTOCOLS.length, 0, 0); record += 8) {
    if (v.getUint32(record + 4, true) === UNDATED) v.setUint32(record + 4, second, true);
  }
  v.setUint32(HEADER.undated, 0, true);
}

/** The block records of a NAT whose state begins or ends outside its shards (restored from a snapshot file, or ended with its run): one per block held. */
export function heldBlockRecords(v: DataView, event: BlockRecord['event'], ns: bigint): BlockRecord[] {
  return [...heldBlocks(v)].map((b) => ({
    time: recordTime(ns), event, subscriber: formatIPv4(b.subscriber), external: formatIPv4(b.external), ports: `${b.first}-${b.first + b.size - 1}`, protocol: b.protocol,
  }));
}

/** A block record's time: ISO 8601, to the millisecond. */
export const recordTime = (ns: bigint) => new Date(Number(ns / 1_000_000n)).toISOString();

export interface BlockRecord {
  time: string;
  event: 'allocate' | 'release';
  subscriber: string;
  external: string;
  ports: string;
  protocol: string;
}

/**
 * The block records the shards queued since the last call. A shard claims a record's index, writes it,
 * then stores its sequence number (index + 1) last: a record is complete once its number is there.
 */
export function drainLog(v: DataView): BlockRecord[] {
  const capacity = v.getUint32(HEADER.logCapacity, true);
  const at = v.getUint32(HEADER.logAt, true);
  let read = v.getUint32(HEADER.logRead, true);
  const records: BlockRecord[] = [];
  for (;;) {
    const r = at + (read % capacity) * LOG_RECORD;
    if (Atomics.load(new Uint32Array(v.buffer, v.byteOffset + r, 1), 0) !== ((read + 1) >>> 0)) break;
    const ns = v.getBigUint64(r + 24, true);
    records.push({
      time: recordTime(ns),
      event: v.getUint8(r + 4) === 1 ? 'allocate' : 'release',
      subscriber: formatIPv4(v.getUint32(r + 8, true)),
      external: formatIPv4(v.getUint32(r + 12, true)),
      ports: `${v.getUint16(r + 16, true)}-${v.getUint16(r + 18, true)}`,
      protocol: PROTOCOLS[v.getUint8(r + 5)],
    });
    read = (read + 1) >>> 0;
  }
  Atomics.store(new Uint32Array(v.buffer, v.byteOffset + HEADER.logRead, 1), 0, read);
  return records;
}
