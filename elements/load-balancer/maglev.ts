// Maglev's lookup table (Eisenbud et al., NSDI'16, §3.4) with weights, built on the control plane.
// Each backend walks its own permutation of the M slots, (offset + j * skip) mod M, from two hashes of
// its name; backends take turns claiming their next free slot until the table is full. Weights: a
// backend takes a turn only when its credit (its weight added each round) reaches the largest weight,
// so turns, and therefore slots, are in proportion to weight (Katran and Envoy weigh turns the same way).

import { createHash } from 'node:crypto';

export interface WeightedName {
  name: string;
  weight: number;
}

/** No backend: a table of backends whose weights are all 0 maps every bucket here. */
export const NO_BACKEND = -1;

/**
 * The table: for each of `size` buckets (size prime), the index in `backends` of its backend. Backends
 * are ordered by name first, so the table does not depend on the order of the list; weight 0 takes no slot.
 */
export function maglevTable(backends: readonly WeightedName[], size: number): Int32Array {
  const table = new Int32Array(size).fill(NO_BACKEND);
  const order = backends.map((_, i) => i).filter((i) => backends[i].weight > 0)
    .sort((a, b) => (backends[a].name < backends[b].name ? -1 : backends[a].name > backends[b].name ? 1 : 0));
  if (!order.length) return table;
  const n = order.length;
  const position = new Float64Array(n), skip = new Float64Array(n), credit = new Float64Array(n);
  const weight = order.map((i) => backends[i].weight);
  const most = Math.max(...weight);
  order.forEach((i, k) => {
    const h = createHash('sha256').update(backends[i].name).digest();
    position[k] = h.readUInt32LE(0) % size;
    skip[k] = (h.readUInt32LE(4) % (size - 1)) + 1;
  });
  for (let filled = 0; ;) {
    for (let k = 0; k < n; k++) {
      credit[k] += weight[k];
      if (credit[k] < most) continue;
      credit[k] -= most;
      let slot = position[k];
      while (table[slot] !== NO_BACKEND) slot = (slot + skip[k]) % size;
      table[slot] = order[k];
      position[k] = (slot + skip[k]) % size;
      if (++filled === size) return table;
    }
  }
}

/** The backends with a weight that `table` gives no bucket: a table too small for them, or weights too far apart. */
export function withoutBuckets<T extends WeightedName>(backends: readonly T[], table: Int32Array): T[] {
  const held = new Set(table);
  return backends.filter((b, i) => b.weight > 0 && !held.has(i));
}

export function isPrime(n: number): boolean {
  if (n < 2 || !Number.isInteger(n)) return false;
  for (let d = 2; d * d <= n; d++) if (n % d === 0) return false;
  return true;
}
