import { Packet, DEFAULT_DATA_OFFSET } from "./packet";
import { Ring, Stack, RING_TAIL, ENTRY_RECYCLE } from "./ring";
import { Batch } from "./batch";
import { zeroBytes } from "./bytes";
import { IPv4, Transport } from "./headers";

// The I/O side: the thread that reads sources and writes sinks. It alone allocates slots from the
// pool's free stack; shards give slots back through their out rings. Sources call ioAllocate and
// ioSubmit per packet; the engine calls ioPublish and ioCollect once per batch.

/** I/O context block, laid out by the engine (engine/layout.ts mirrors these offsets). */
export const IO_FREE_STACK: u32 = 0;
export const IO_SHARD_COUNT: u32 = 4;
export const IO_SHARDS: u32 = 8;
export const IO_BUCKETS: u32 = 12;
export const IO_BUCKET_MASK: u32 = 16;
export const IO_SINKS: u32 = 20;
export const IO_NO_SLOT: u32 = 24;
export const IO_SLOT_SIZE: u32 = 32;
/** Per shard record: [rx ring][out ring][stash][rx head][ring-full drops u64][rx limit]. */
export const SHARD_RECORD: u32 = 32;

let io: usize = 0;
let freeSlots: Stack = changetype<Stack>(0);

export function ioInit(context: usize): void {
  io = context;
  freeSlots = changetype<Stack>(load<u32>(context, IO_FREE_STACK));
  const shards = load<u32>(context, IO_SHARD_COUNT);
  for (let s: u32 = 0; s < shards; s++) {
    const rec = shardRecord(s);
    const ring = changetype<Ring>(load<u32>(rec));
    store<u32>(rec, ring.head, 12);
    store<u32>(rec, ring.limit(), 24);
  }
}

@inline function shardRecord(shard: u32): usize {
  return <usize>load<u32>(io, IO_SHARDS) + <usize>shard * SHARD_RECORD;
}

/** A fresh slot from the pool, or null when every slot is in use (counted as no_slot). */
export function ioAllocate(): Packet | null {
  const slot = freeSlots.pop();
  if (slot == 0) {
    store<u64>(io, load<u64>(io, IO_NO_SLOT) + 1, IO_NO_SLOT);
    return null;
  }
  const p = changetype<Packet>(slot);
  zeroBytes(slot, 32);
  p.dataOffset = DEFAULT_DATA_OFFSET;
  return p;
}

/** Bytes a fresh packet's slot can hold. */
@inline export function ioRoom(p: Packet): u32 {
  return load<u32>(io, IO_SLOT_SIZE) - <u32>p.dataOffset;
}

/** Returns a slot to the pool without sending it anywhere. */
@inline export function ioRelease(p: Packet): void {
  freeSlots.push(changetype<u32>(p));
}

/**
 * Hands a packet read by source number `source` to the shard that owns it. When that shard's ring
 * is full the packet is dropped and counted for the shard: a source is never blocked forever.
 */
export function ioSubmit(p: Packet, source: u16): void {
  p.port = source;
  const shards = load<u32>(io, IO_SHARD_COUNT);
  const shard = shards == 1 ? 0 : steer(p);
  if (!enqueue(shardRecord(shard), changetype<u32>(p))) {
    store<u64>(shardRecord(shard), load<u64>(shardRecord(shard), 16) + 1, 16);
    ioRelease(p);
  }
}

@inline function enqueue(rec: usize, entry: u32): bool {
  const ring = changetype<Ring>(load<u32>(rec));
  const head = load<u32>(rec, 12);
  if (head == load<u32>(rec, 24)) {
    const limit = ring.limit();
    store<u32>(rec, limit, 24);
    if (head == limit) return false;
  }
  ring.setEntry(head, entry);
  store<u32>(rec, head + 1, 12);
  return true;
}

/** Free entries of a shard's receive ring (reads the consumer's tail: once per batch, not per packet). */
@inline function ringSpace(rec: usize): u32 {
  const limit = changetype<Ring>(load<u32>(rec)).limit();
  store<u32>(rec, limit, 24);
  return limit - load<u32>(rec, 12);
}

/** The shard for a packet: a symmetric 5-tuple hash looked up in the bucket indirection table. */
function steer(p: Packet): u32 {
  const h = symmetricHash(p);
  p.hash = h;
  return <u32>load<u8>(<usize>load<u32>(io, IO_BUCKETS) + <usize>(h & load<u32>(io, IO_BUCKET_MASK)));
}

/** A hash that is the same for both directions of a connection (RSS with a symmetric key). */
export function symmetricHash(p: Packet): u32 {
  const ip = IPv4.header(p);
  if (!ip) return 0;
  const a = IPv4.src(ip), b = IPv4.dst(ip);
  let ports: u32 = 0;
  const l4 = Transport.header(p, ip);
  if (l4) ports = <u32>Transport.srcPort(l4) ^ <u32>Transport.dstPort(l4);
  let h = (a ^ b) * 0x9e3779b1 + (a + b);
  h ^= (ports | (<u32>IPv4.protocol(ip) << 16)) * 0x85ebca77;
  h ^= h >>> 16; h *= 0x85ebca6b; h ^= h >>> 13; h *= 0xc2b2ae35; h ^= h >>> 16;
  return h;
}

/**
 * How many packets a source may submit now without any being dropped: the fewest free entries of
 * any shard's receive ring, and no more than the free slots. Sources that read files respect it;
 * live sources do not wait and count drops instead.
 */
export function ioSpace(): u32 {
  const shards = load<u32>(io, IO_SHARD_COUNT);
  let space = freeSlots.count;
  for (let s: u32 = 0; s < shards; s++) {
    const free = ringSpace(shardRecord(s));
    if (free < space) space = free;
  }
  return space;
}

/** Publishes every shard's receive head; returns a bit mask of shards that wait to be woken. */
export function ioPublish(): u32 {
  const shards = load<u32>(io, IO_SHARD_COUNT);
  let sleeping: u32 = 0;
  for (let s: u32 = 0; s < shards; s++) {
    const rec = shardRecord(s);
    const ring = changetype<Ring>(load<u32>(rec));
    ring.publishHead(load<u32>(rec, 12));
    if (atomic.load<u32>(changetype<usize>(ring), 128)) sleeping |= 1 << s;
  }
  return sleeping;
}

/**
 * Keeps each shard's clone stash at least half full by sending it free slots (marked
 * ENTRY_RECYCLE) through its receive ring. Call before ioPublish.
 */
export function ioTopUpStashes(): void {
  const shards = load<u32>(io, IO_SHARD_COUNT);
  for (let s: u32 = 0; s < shards; s++) {
    const rec = shardRecord(s);
    const stash = changetype<Stack>(load<u32>(rec, 8));
    const want = <i32>(stash.capacity >> 1) - <i32>atomic.load<u32>(changetype<usize>(stash));
    for (let i = 0; i < want; i++) {
      const slot = freeSlots.pop();
      if (slot == 0) return;
      if (!enqueue(rec, slot | ENTRY_RECYCLE)) { freeSlots.push(slot); return; }
    }
  }
}

/**
 * Takes what the shards sent out: recycles freed slots and appends packets for sinks to the sink's
 * batch (`IO_SINKS` is an array of batch addresses indexed by sink number). Returns packets for sinks.
 */
export function ioCollect(): u32 {
  const shards = load<u32>(io, IO_SHARD_COUNT);
  const sinks = <usize>load<u32>(io, IO_SINKS);
  let toSinks: u32 = 0;
  for (let s: u32 = 0; s < shards; s++) {
    const out = changetype<Ring>(load<u32>(shardRecord(s), 4));
    const head = out.head;
    let tail = load<u32>(changetype<usize>(out), RING_TAIL);
    while (tail != head) {
      const entry = out.entry(tail);
      tail++;
      if (entry & ENTRY_RECYCLE) {
        freeSlots.push(entry & ~ENTRY_RECYCLE);
      } else {
        const p = changetype<Packet>(entry);
        changetype<Batch>(load<u32>(sinks + (<usize>p.port << 2))).push(p);
        toSinks++;
      }
    }
    out.publishTail(tail);
  }
  return toSinks;
}

/** Packets still owned by shards: submitted or in flight back (free stack size vs. pool size). */
export function ioSlotsInUse(): u32 {
  return freeSlots.capacity - freeSlots.count;
}
