import { Packet, DEFAULT_DATA_OFFSET, PACKET_RESTEERED, PORT_RESTEER } from "./packet";
import { Ring, Stack, ENTRY_RECYCLE } from "./ring";
import { Batch, BATCH_HEADER } from "./batch";
import { copyBytes } from "./bytes";
import { orderWatching, orderCheck } from "./order";

// Per-instance (that is, per-shard) state lives in WebAssembly globals, which every instance has
// its own copy of, and in the shard context block the engine lays out in shared memory.

/** Shard context block, written by the engine (engine/layout.ts mirrors these offsets). */
export const CTX_RX_RING: u32 = 0;
export const CTX_OUT_RING: u32 = 4;
export const CTX_STASH: u32 = 8;
export const CTX_SLOT_SIZE: u32 = 12;
export const CTX_BATCHES: u32 = 16;
export const CTX_PACKETS: u32 = 24;
export const CTX_NO_BUFFER: u32 = 32;
export const CTX_LEAKED: u32 = 40;
/** 16 bytes of scratch for building flow keys. */
export const CTX_KEY: u32 = 48;
/** The receive index after the batch being processed: a restarted shard resumes there. */
export const CTX_TAKEN: u32 = 64;
/** The shard's clock at its last batch with packets or tick, for the control plane (views, handlers that stamp changes). */
export const CTX_NOW: u32 = 72;
/** Address of this shard's BATCH_SCRATCH_BYTES of scratch (batchScratch). */
export const CTX_SCRATCH: u32 = 80;
/** Bytes of batchScratch(): 4 per packet of the largest batch the config allows. */
export const BATCH_SCRATCH_BYTES: u32 = 16384;
/** Address of the area where the order of moving buckets' packets is watched (assembly/order.ts). */
export const CTX_ORDER: u32 = 84;
/** Packets an element handed back (resteer) a second time: dropped, or they could go round forever. */
export const CTX_RESTEERED_AGAIN: u32 = 88;
/** Packets pushed to an output batch that was full (an element that sends more than it receives without `expands`): dropped. */
export const CTX_OVERRUN: u32 = 96;
/** Packets an element pushed to an output it does not have (Outputs.port): dropped; and which element did, last (index + 1). */
export const CTX_MISROUTED: u32 = 104;
export const CTX_MISROUTED_BY: u32 = 112;
/** Address of the shard's graph descriptor (engine/layout.ts GraphHeader mirrors the offsets below). */
export const CTX_GRAPH: u32 = 116;
/** The shard's index, 0 to MAX_SHARDS - 1: no two running shards have the same (a shard made by a scale event takes a retired one's). */
export const CTX_INDEX: u32 = 120;
/**
 * How far this shard has written its out ring (published at the end of a batch): after a crash, the entries of the
 * batch it was on, which the engine then publishes (packets for sinks, slots given back) and does not count as lost.
 */
export const CTX_OUT_WRITTEN: u32 = 124;
/** In the graph descriptor: the element running now, and the batch, of no room, that Outputs.port gives for an output an element does not have. */
const GRAPH_RUNNING: u32 = 8;
const GRAPH_MISROUTED: u32 = 12;

let ctx: usize = 0;
let rxRing: Ring = changetype<Ring>(0);
let outRing: Ring = changetype<Ring>(0);
let stash: Stack = changetype<Stack>(0);
let slotSize: u32 = 0;
let outHead: u32 = 0;
let outLimit: u32 = 0;
let receivedTail: u32 = 0;
let batchTime: u64 = 0;
/** On trace time a batch holds at most one tick of the trace (ns), and its clock is the tick's last nanosecond. */
const TRACE_TICK: u64 = 1_000_000;
let scratch: usize = 0;
let order: usize = 0;
let graph: usize = 0;
let misroutedBatch = changetype<Batch>(0);

export function shardInit(context: usize): void {
  ctx = context;
  rxRing = changetype<Ring>(load<u32>(context, CTX_RX_RING));
  outRing = changetype<Ring>(load<u32>(context, CTX_OUT_RING));
  stash = changetype<Stack>(load<u32>(context, CTX_STASH));
  slotSize = load<u32>(context, CTX_SLOT_SIZE);
  scratch = <usize>load<u32>(context, CTX_SCRATCH);
  order = <usize>load<u32>(context, CTX_ORDER);
  graph = <usize>load<u32>(context, CTX_GRAPH);
  misroutedBatch = changetype<Batch>(load<u32>(graph, GRAPH_MISROUTED));
  outHead = outRing.head;
  store<u32>(ctx, outHead, CTX_OUT_WRITTEN);
  outLimit = outRing.limit();
}

/** The shard's clock for the engine's own use (exports between batches). */
export function shardNow(): u64 {
  return batchTime;
}

/**
 * This shard's index, 0 to 63: no two running shards share one, so a row of counters per index (Filter's hits) is
 * written by one shard at a time. A shard a scale event makes takes the index of one that retired, and adds onto its row.
 */
@inline export function shardIndex(): u32 {
  return load<u32>(ctx, CTX_INDEX);
}

/** The time of the current batch in nanoseconds: read once per batch, the same for every element. */
@inline export function now(): u64 {
  return batchTime;
}

/** This shard's 16-byte scratch buffer for a flow key (FlowKey.fromPacket writes into it). */
@inline export function keyBuffer(): usize {
  return ctx + CTX_KEY;
}

/**
 * This shard's BATCH_SCRATCH_BYTES of scratch, for an element's arrays over one batch (a hash per
 * packet, say): what is written there lasts until the element's process returns.
 */
@inline export function batchScratch(): usize {
  return scratch;
}

/** Bytes a packet's slot can hold from its current data offset on. */
@inline export function packetRoom(p: Packet): u32 {
  return slotSize - <u32>p.dataOffset;
}

@inline function sendOut(entry: u32): void {
  if (outHead == outLimit) {
    outLimit = outRing.limit();
    if (outHead == outLimit) {
      // The out ring holds every slot of the pool, so this is unreachable; count rather than overrun.
      store<u64>(ctx, load<u64>(ctx, CTX_LEAKED) + 1, CTX_LEAKED);
      return;
    }
  }
  outRing.setEntry(outHead, entry);
  outHead++;
  store<u32>(ctx, outHead, CTX_OUT_WRITTEN);
}

/** Gives a packet's slot back: kept for clones while the stash has room, else returned to the I/O side. */
@inline export function freePacket(p: Packet): void {
  if (!stash.push(changetype<u32>(p))) recycle(p);
}

function recycle(p: Packet): void {
  sendOut(changetype<u32>(p) | ENTRY_RECYCLE);
}

/** Gives back the slots of every packet in `batch` (Discard), in one copy while the stash has room for all. */
export function freeBatch(batch: Batch): void {
  const n = batch.count;
  const have = stash.count;
  // The count may stand above a capacity lowered when the shard count grew.
  if (have <= stash.capacity && n <= stash.capacity - have) {
    copyBytes(changetype<usize>(stash) + 8 + (<usize>have << 2), changetype<usize>(batch) + BATCH_HEADER, <usize>n << 2);
    stash.count = have + n;
    return;
  }
  for (let i: u32 = 0; i < n; i++) freePacket(batch.packet(i));
}

/** Drops a packet. Elements count their own drop reasons; this only recycles the slot. */
@inline export function dropPacket(p: Packet): void {
  freePacket(p);
}

/**
 * Drops a packet pushed to a full batch (Batch.push): counted in the runtime's overrun, or, pushed to an output the
 * running element does not have (the misrouted batch, which has no room), in misrouted, naming the element.
 */
export function dropFull(batch: Batch, p: Packet): void {
  if (batch == misroutedBatch) {
    store<u64>(ctx, load<u64>(ctx, CTX_MISROUTED) + 1, CTX_MISROUTED);
    store<u32>(ctx, load<u32>(graph, GRAPH_RUNNING) + 1, CTX_MISROUTED_BY);
  } else {
    store<u64>(ctx, load<u64>(ctx, CTX_OVERRUN) + 1, CTX_OVERRUN);
  }
  dropPacket(p);
}

/** Where Outputs.port sends a packet for an output the element does not have: a batch of no room (dropFull). */
@inline export function misrouted(): Batch {
  return misroutedBatch;
}

/** Hands a packet to sink number `sink` on the I/O side (a file or a device writer). */
@inline export function sendToSink(p: Packet, sink: u16): void {
  p.port = sink;
  sendOut(changetype<u32>(p));
}

/**
 * Hands a packet back to the dispatcher, which steers it again as if its source had just read it: for
 * a packet that another shard's state must handle (a NAT's hairpinned packet to a subscriber on
 * another shard). It enters the graph there at its source, with PACKET_RESTEERED set in `flags`. A packet handed
 * back once already is dropped instead (counted in the runtime's resteered_again): it would go round forever.
 */
export function resteer(p: Packet): void {
  if (p.flags & PACKET_RESTEERED) {
    store<u64>(ctx, load<u64>(ctx, CTX_RESTEERED_AGAIN) + 1, CTX_RESTEERED_AGAIN);
    dropPacket(p);
    return;
  }
  p.flags |= PACKET_RESTEERED;
  p.port |= PORT_RESTEER;
  sendOut(changetype<u32>(p));
}

/**
 * An empty packet in a new slot (zero metadata, the usual headroom), or null when no slot is free
 * (counted as no_buffer). Slots come from the shard's stash (refilled every I/O round up to its share of the pool): an
 * element that makes packets for many of those it receives declares how many (`clones`) to size it.
 */
export function newPacket(): Packet | null {
  const slot = stash.pop();
  if (slot == 0) {
    store<u64>(ctx, load<u64>(ctx, CTX_NO_BUFFER) + 1, CTX_NO_BUFFER);
    return null;
  }
  v128.store(slot, i64x2.splat(0));
  v128.store(slot, i64x2.splat(0), 16);
  const q = changetype<Packet>(slot);
  q.dataOffset = DEFAULT_DATA_OFFSET;
  return q;
}

/**
 * A copy of `p` in a new slot, or null when no slot is free (counted as no_buffer). The frame keeps its offset in the
 * slot: it fits there, as in the original's, however far an element moved it into the headroom and grew it.
 */
export function clonePacket(p: Packet): Packet | null {
  const q = newPacket();
  if (!q) return null;
  copyBytes(changetype<usize>(q), changetype<usize>(p), 32); // metadata, the frame's offset with it
  copyBytes(q.data, p.data, p.length);
  return q;
}

/**
 * Takes up to `max` packets from the receive ring and appends each to the batch of the source that
 * read it (`sources` is an array of batch addresses indexed by source number). Slots the I/O side
 * sends to refill the stash arrive marked ENTRY_RECYCLE. `time` is the batch's wall-clock time in ns,
 * or 0 to run on trace time. Returns the number of ring entries taken.
 */
export function shardReceive(sources: usize, max: u32, time: u64): u32 {
  // time 0 selects trace time: the clock follows the packets' own timestamps. A batch ends where the trace
  // enters the next millisecond and its clock is the end of its packets' millisecond, so each packet sees a
  // clock never behind its own time and at most 1 ms ahead, however the ring's packets were batched: runs
  // over a file are deterministic (the virtual clock of the tests), also when a shard takes seconds of a
  // sparse trace at once, and a timer never fires before its time.
  if (time) batchTime = time;
  let tickEnd: u64 = 0;
  const head = rxRing.head;
  let tail = load<u32>(changetype<usize>(rxRing), 64);
  let taken: u32 = 0;
  let packets: u32 = 0;
  // The batch being filled and its count stay in locals while packets come from one source in a row.
  let port: u32 = 0xffffffff;
  let batch = changetype<Batch>(0);
  let count: u32 = 0;
  let capacity: u32 = 0;
  const watching = orderWatching(order);
  while (tail != head && taken < max) {
    const entry = rxRing.entry(tail);
    if (entry & ENTRY_RECYCLE) {
      tail++;
      taken++;
      freePacket(changetype<Packet>(entry & ~ENTRY_RECYCLE));
      continue;
    }
    const p = changetype<Packet>(entry);
    if (!time) {
      const ts = p.timestamp;
      if (!packets) {
        tickEnd = ts - ts % TRACE_TICK + TRACE_TICK;
        if (tickEnd - 1 > batchTime) batchTime = tickEnd - 1;
      } else if (ts >= tickEnd) break;
    }
    tail++;
    taken++;
    if (watching) orderCheck(order, p);
    if (<u32>p.port != port) {
      if (port != 0xffffffff) batch.count = count;
      port = <u32>p.port;
      batch = changetype<Batch>(load<u32>(sources + (<usize>port << 2)));
      count = batch.count;
      capacity = batch.capacity;
    }
    if (count < capacity) {
      store<u32>(changetype<usize>(batch) + BATCH_HEADER + (<usize>count << 2), entry);
      count++;
    } else {
      dropPacket(p); // cannot happen when capacities come from the graph compiler; never overrun
    }
    packets++;
  }
  if (port != 0xffffffff) batch.count = count;
  receivedTail = tail;
  store<u32>(ctx, tail, CTX_TAKEN);
  if (packets) {
    store<u64>(ctx, load<u64>(ctx, CTX_BATCHES) + 1, CTX_BATCHES);
    store<u64>(ctx, load<u64>(ctx, CTX_PACKETS) + packets, CTX_PACKETS);
    store<u64>(ctx, batchTime, CTX_NOW);
  }
  return taken;
}


/** An element that declares `tick` and has had no packets for this long on the shard's clock ticks (engine/idle-ticks.js). */
export const TICK_NS: u64 = 100_000_000;

/** Moves the clock on to `time` (never back) between batches, as a tick does for a shard without packets. */
export function shardAdvance(time: u64): void {
  if (time > batchTime) batchTime = time;
  store<u64>(ctx, batchTime, CTX_NOW);
}

/** Publishes the batch's output entries, then the receive tail that marks the batch done. */
export function shardPublish(): void {
  outRing.publishHead(outHead);
  rxRing.publishTail(receivedTail);
}

