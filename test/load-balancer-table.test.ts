// LoadBalancer's Maglev table on its own: shares follow weights, removing one of N backends moves
// about 1/N of the buckets, and the table does not depend on the order of the backend list.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { maglevTable, NO_BACKEND, type WeightedName } from '../elements/load-balancer/maglev.ts';

const M = 65537;
const named = (n: number, weight = (i: number) => 1): WeightedName[] => Array.from({ length: n }, (_, i) => ({ name: `backend-${i}`, weight: weight(i) }));

function shares(table: Int32Array, n: number): number[] {
  const counts = new Array(n).fill(0);
  for (const slot of table) counts[slot]++;
  return counts.map((c) => c / table.length);
}

test('every bucket has a backend; each share is within 1% of its weight share (M = 65537)', () => {
  for (const backends of [named(3), named(10), named(7, (i) => i + 1), named(5, (i) => [1, 2, 3, 10, 100][i]), named(100, (i) => 1 + (i % 4))]) {
    const table = maglevTable(backends, M);
    assert.not.ok(table.includes(NO_BACKEND));
    const total = backends.reduce((s, b) => s + b.weight, 0);
    shares(table, backends.length).forEach((share, i) => {
      const want = backends[i].weight / total;
      assert.ok(Math.abs(share - want) <= 0.01 * want, `${backends.length} backends, ${backends[i].name}: share ${share} for weight share ${want}`);
    });
  }
});

test('weight 0 takes no bucket; all weights 0 leaves every bucket without a backend', () => {
  const backends = named(4, (i) => (i === 2 ? 0 : 1));
  const table = maglevTable(backends, M);
  assert.not.ok(table.includes(2));
  assert.ok(maglevTable(named(3, () => 0), M).every((slot) => slot === NO_BACKEND));
});

test('the same table whatever the order of the backend list', () => {
  const backends = named(9, (i) => 1 + (i % 3));
  const reversed = [...backends].reverse();
  const a = maglevTable(backends, M), b = maglevTable(reversed, M);
  for (let i = 0; i < M; i++) assert.is(backends[a[i]].name, reversed[b[i]].name, `bucket ${i}`);
});

test('removing one of N backends moves about 1/N of the buckets', () => {
  for (const n of [3, 5, 10, 50]) {
    const before = named(n);
    const after = before.filter((_, i) => i !== 1);
    const a = maglevTable(before, M), b = maglevTable(after, M);
    let moved = 0, ownMoved = 0;
    for (let i = 0; i < M; i++) {
      if (before[a[i]].name === after[b[i]].name) continue;
      moved++;
      if (a[i] === 1) ownMoved++;
    }
    const fraction = moved / M;
    console.log(`  remove 1 of ${n}: ${moved} of ${M} buckets moved (${(fraction * 100).toFixed(2)}%, 1/N = ${(100 / n).toFixed(2)}%; `
      + `${moved - ownMoved} beyond the removed backend's own)`);
    assert.ok(fraction >= 1 / n - 0.01 && fraction <= (1 / n) * 1.5, `${n} backends: moved ${fraction}`);
  }
});
test.run();
