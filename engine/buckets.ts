// The dispatcher's bucket indirection table (as in RSS): a packet's symmetric hash picks one of
// BUCKETS buckets, and the table says which shard owns it. Scaling moves buckets, not flows.

export const BUCKETS = 1024;
/** Table value of a bucket whose state is moving (or that waits beside one, on a trace's time): its packets are held until the move ends. */
export const HELD = 0xff;

/**
 * The assignment of buckets to `to` shards that moves the fewest buckets from `current` (over `from`
 * shards): each shard ends with BUCKETS/to buckets (±1); buckets stay where they are while their shard
 * survives and is not over its share.
 */
export function planBuckets(current: Uint8Array, from: number, to: number): Uint8Array {
  const next = new Uint8Array(BUCKETS);
  const share = (s: number) => Math.floor(BUCKETS / to) + (s < BUCKETS % to ? 1 : 0);
  const owned = new Array(to).fill(0);
  const homeless: number[] = [];
  for (let b = 0; b < BUCKETS; b++) {
    const s = from === 0 ? -1 : current[b];
    if (s >= 0 && s < to && owned[s] < share(s)) { next[b] = s; owned[s]++; } else homeless.push(b);
  }
  let s = 0;
  for (const b of homeless) {
    while (owned[s] >= share(s)) s++;
    next[b] = s;
    owned[s]++;
  }
  return next;
}

/** The buckets that change owner, grouped by (from, to). */
export function bucketMoves(current: Uint8Array, next: Uint8Array): { from: number; to: number; buckets: number[] }[] {
  const moves = new Map<string, { from: number; to: number; buckets: number[] }>();
  for (let b = 0; b < BUCKETS; b++) {
    if (current[b] === next[b]) continue;
    const key = `${current[b]}>${next[b]}`;
    if (!moves.has(key)) moves.set(key, { from: current[b], to: next[b], buckets: [] });
    moves.get(key)!.buckets.push(b);
  }
  return [...moves.values()];
}
