// Unit tests of the order watch in assembly/order.ts, compiled on its own: the dispatcher's stamps and a
// shard's check count a packet taken after a later one of its bucket, and nothing else.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { compileGraph } from '../engine/compile.ts';
import { ENTRY_PATH } from '../engine/codegen.ts';
import { MemoryArena } from '../engine/memory.ts';
import { OrderWatch } from '../engine/layout.ts';

const HARNESS = `
import { Packet } from "wirepath/packet";
import { orderStamp, orderCheck } from "wirepath/order";
export function stamp(area: usize, slot: usize, bucket: u32): void {
  changetype<Packet>(slot).hash = bucket;
  orderStamp(area, changetype<Packet>(slot), bucket);
}
export function check(area: usize, slot: usize): void { orderCheck(area, changetype<Packet>(slot)); }
/** A packet of the bucket submitted before the watch began: steered, never stamped. */
export function early(slot: usize, bucket: u32): void { changetype<Packet>(slot).hash = bucket; }
`;

const BUCKETS = 16, SLOTS = 8, SLOT_SIZE = 256;

async function watch(watched: number[]) {
  const compiled = await compileGraph({ files: new Map([[ENTRY_PATH, HARNESS]]), entry: HARNESS, layouts: new Map(), types: new Map() }, []);
  const arena = new MemoryArena();
  const x = new WebAssembly.Instance(compiled.module, { env: { memory: arena.memory, abort: () => { throw new Error('abort'); } } }).exports as any;
  const pool = arena.alloc(SLOTS * SLOT_SIZE, SLOT_SIZE);
  const takenAt = OrderWatch.watchAt + BUCKETS, stampsAt = takenAt + 4 * BUCKETS;
  const area = arena.alloc(stampsAt + 4 * SLOTS, 64);
  const v = arena.view;
  v.setUint32(area + OrderWatch.watching, 1, true);
  v.setUint32(area + OrderWatch.poolBase, pool, true);
  v.setUint32(area + OrderWatch.slotShift, Math.log2(SLOT_SIZE), true);
  v.setUint32(area + OrderWatch.bucketMask, BUCKETS - 1, true);
  v.setUint32(area + OrderWatch.takenAt, takenAt, true);
  v.setUint32(area + OrderWatch.stampsAt, stampsAt, true);
  for (const b of watched) arena.u8[area + OrderWatch.watchAt + b] = 1;
  const slot = (i: number) => pool + i * SLOT_SIZE;
  return {
    /** The dispatcher submits the packet in slot i, of bucket b. */
    submit: (i: number, b: number) => x.stamp(area, slot(i), b),
    early: (i: number, b: number) => x.early(slot(i), b),
    /** The move of bucket b begins (a later group of the same scale event). */
    watchAlso: (b: number) => { arena.u8[area + OrderWatch.watchAt + b] = 1; },
    /** A shard takes the packet in slot i. */
    take: (i: number) => x.check(area, slot(i)),
    counts: () => ({ checked: v.getUint32(area + OrderWatch.checked, true), reordered: Number(v.getBigUint64(area + OrderWatch.reordered, true)) }),
  };
}

test('packets of a watched bucket taken in the order they came: checked, none reordered', async () => {
  const w = await watch([3]);
  for (let i = 0; i < 4; i++) w.submit(i, 3);
  for (let i = 0; i < 4; i++) w.take(i);
  assert.equal(w.counts(), { checked: 4, reordered: 0 });
});

test('a packet taken after a later one of its bucket is counted, once', async () => {
  const w = await watch([3]);
  for (let i = 0; i < 4; i++) w.submit(i, 3);
  w.take(0); w.take(2); w.take(1); w.take(3);
  assert.equal(w.counts(), { checked: 4, reordered: 1 });
});

test('buckets are apart: order across two watched buckets is free', async () => {
  const w = await watch([3, 5]);
  w.submit(0, 3); w.submit(1, 5); w.submit(2, 3); w.submit(3, 5);
  w.take(1); w.take(3); w.take(0); w.take(2);
  assert.equal(w.counts(), { checked: 4, reordered: 0 });
});

test('a packet from before the watch (unstamped) is older than every stamped one of its bucket', async () => {
  const inOrder = await watch([3]);
  inOrder.early(0, 3); inOrder.submit(1, 3);
  inOrder.take(0); inOrder.take(1);
  assert.equal(inOrder.counts(), { checked: 2, reordered: 0 });
  const late = await watch([3]);
  late.early(0, 3); late.submit(1, 3);
  late.take(1); late.take(0);
  assert.equal(late.counts(), { checked: 2, reordered: 1 });
});

test('a slot reused by a bucket whose move begins later carries no stamp of its previous packet', async () => {
  const w = await watch([3]);
  w.submit(0, 3); w.take(0);
  // Slot 0 comes back and carries a packet of bucket 5, then another one comes in slot 1: neither is stamped yet.
  w.submit(0, 5); w.submit(1, 5);
  w.watchAlso(5);
  w.take(0); w.take(1);
  assert.equal(w.counts(), { checked: 3, reordered: 0 });
});

test('unwatched buckets are neither stamped nor checked', async () => {
  const w = await watch([]);
  w.submit(0, 1); w.submit(1, 1);
  w.take(1); w.take(0);
  assert.equal(w.counts(), { checked: 0, reordered: 0 });
});

test.run();
