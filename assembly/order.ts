import { Packet } from "./packet";

// Per-flow order during a scale event, measured rather than assumed. While a group of buckets moves,
// the dispatcher stamps each packet of those buckets with a rising number (orderStamp), and every
// shard, as it takes a packet of a watched bucket from its ring, keeps the highest stamp taken for
// that bucket so far (orderCheck): a packet whose stamp is lower than one already taken, or an
// unstamped one (submitted before the watch began, so older than every stamped one) taken after a
// stamped one, left its bucket out of order. A bucket's flows never span buckets, so 0 here is 0
// reordered within every flow. The engine (engine/pipeline.ts OrderWatch) lays the area out:
//   [watching u32][checked u32][reordered u64][next stamp u32][pool base u32][slot shift u32][bucket mask u32]
//   [taken at u32][stamps at u32] ... then, from ORDER_WATCH_AT, one byte per bucket (1: watched), and at
//   `taken at` the highest stamp taken per bucket (u32), at `stamps at` one stamp per pool slot (u32).

export const ORDER_WATCHING: u32 = 0;
export const ORDER_CHECKED: u32 = 4;
export const ORDER_REORDERED: u32 = 8;
export const ORDER_NEXT_STAMP: u32 = 16;
export const ORDER_POOL_BASE: u32 = 20;
export const ORDER_SLOT_SHIFT: u32 = 24;
export const ORDER_BUCKET_MASK: u32 = 28;
export const ORDER_TAKEN_AT: u32 = 32;
export const ORDER_STAMPS_AT: u32 = 36;
export const ORDER_WATCH_AT: u32 = 64;

@inline function stampAt(area: usize, p: Packet): usize {
  const slot = (changetype<usize>(p) - <usize>load<u32>(area, ORDER_POOL_BASE)) >> load<u32>(area, ORDER_SLOT_SHIFT);
  return area + <usize>load<u32>(area, ORDER_STAMPS_AT) + (slot << 2);
}

/** True while the engine watches a move (read once per ring round by shards, per packet by the dispatcher). */
@inline export function orderWatching(area: usize): bool {
  return atomic.load<u32>(area, ORDER_WATCHING) != 0;
}

/**
 * The dispatcher's half, for every packet submitted while watching: stamps a packet of a watched bucket,
 * and clears the stamp of any other, so that its slot's previous packet's stamp cannot make it look stamped
 * once its own bucket's move begins (the groups of a scale event are watched one after another).
 */
export function orderStamp(area: usize, p: Packet, bucket: u32): void {
  let stamp: u32 = 0;
  if (load<u8>(area + ORDER_WATCH_AT + <usize>bucket)) {
    stamp = load<u32>(area, ORDER_NEXT_STAMP) + 1;
    store<u32>(area, stamp, ORDER_NEXT_STAMP);
  }
  store<u32>(stampAt(area, p), stamp);
}

/** A shard's half: checks a packet it takes from its ring against what was taken of its bucket before. */
export function orderCheck(area: usize, p: Packet): void {
  const bucket = p.hash & load<u32>(area, ORDER_BUCKET_MASK);
  if (!load<u8>(area + ORDER_WATCH_AT + <usize>bucket)) return;
  atomic.add<u32>(area, 1, ORDER_CHECKED);
  const stamp = load<u32>(stampAt(area, p));
  const taken = area + <usize>load<u32>(area, ORDER_TAKEN_AT) + (<usize>bucket << 2);
  let highest = atomic.load<u32>(taken);
  if (stamp == 0) {
    if (highest != 0) atomic.add<u64>(area, 1, ORDER_REORDERED);
    return;
  }
  // Shards take packets of one bucket concurrently only while it moves: raise the mark atomically.
  while (stamp > highest) {
    const seen = atomic.cmpxchg<u32>(taken, highest, stamp);
    if (seen == highest) return;
    highest = seen;
  }
  if (stamp < highest) atomic.add<u64>(area, 1, ORDER_REORDERED);
}
