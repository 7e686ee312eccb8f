// Unit tests of the SPSC ring in assembly/ring.ts, compiled on its own: wrap-around, full, empty,
// and batch publishing (the consumer sees nothing until the producer publishes its head).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { compileGraph } from '../engine/compile.ts';
import { ENTRY_PATH } from '../engine/codegen.ts';
import { MemoryArena } from '../engine/memory.ts';
import { RingLayout } from '../engine/layout.ts';

const HARNESS = `
import { Ring } from "wirepath/ring";
/** Producer: writes count entries from head on and returns the new head, or 0xffffffff when full. */
export function produce(ring: usize, head: u32, first: u32, count: u32, publish: bool): u32 {
  const r = changetype<Ring>(ring);
  for (let i: u32 = 0; i < count; i++) {
    if (head == r.limit()) return 0xffffffff;
    r.setEntry(head, first + i);
    head++;
  }
  if (publish) r.publishHead(head);
  return head;
}
/** Consumer: sums up to max published entries from its tail, publishes the tail, returns how many it took. */
export function consume(ring: usize, out: usize, max: u32): u32 {
  const r = changetype<Ring>(ring);
  let tail = r.tail;
  const head = r.head;
  let taken: u32 = 0;
  while (tail != head && taken < max) { store<u32>(out + (<usize>taken << 2), r.entry(tail)); tail++; taken++; }
  r.publishTail(tail);
  return taken;
}
`;

const CAPACITY = 8;

async function ring() {
  const compiled = await compileGraph({ files: new Map([[ENTRY_PATH, HARNESS]]), entry: HARNESS, layouts: new Map(), types: new Map() }, []);
  const arena = new MemoryArena();
  const x = new WebAssembly.Instance(compiled.module, { env: { memory: arena.memory, abort: () => { throw new Error('abort'); } } }).exports as any;
  const address = arena.alloc(RingLayout.entries + 4 * CAPACITY, 64);
  arena.view.setUint32(address + RingLayout.mask, CAPACITY - 1, true);
  const out = arena.alloc(4 * 64, 8);
  const taken = (max: number) => {
    const n = x.consume(address, out, max);
    return Array.from({ length: n }, (_, i) => arena.view.getUint32(out + 4 * i, true));
  };
  const indices = () => ({ head: arena.view.getUint32(address + RingLayout.head, true), tail: arena.view.getUint32(address + RingLayout.tail, true) });
  const produce = (head: number, first: number, count: number, publish: boolean) => x.produce(address, head, first, count, publish) >>> 0;
  return { produce, arena, address, taken, indices };
}

test('empty: a consumer of an empty ring takes nothing', async () => {
  const { taken } = await ring();
  assert.equal(taken(4), []);
});

test('batch publish: entries are invisible until the head is published, then all at once', async () => {
  const { produce, taken, indices } = await ring();
  const head = produce(0, 100, 3, false);
  assert.is(head, 3);
  assert.equal(taken(8), [], 'nothing published yet');
  produce(head, 103, 2, true);
  assert.equal(indices().head, 5);
  assert.equal(taken(8), [100, 101, 102, 103, 104]);
});

test('full: the producer stops at capacity until the consumer frees entries', async () => {
  const { produce, taken } = await ring();
  const head = produce(0, 1, CAPACITY, true);
  assert.is(head, CAPACITY);
  assert.is(produce(head, 99, 1, true), 0xffffffff, 'full');
  assert.equal(taken(2), [1, 2]);
  assert.is(produce(head, 9, 2, true), CAPACITY + 2, 'room again after the tail moved');
  assert.is(produce(CAPACITY + 2, 99, 1, true), 0xffffffff);
});

test('wrap-around: indices run free past the capacity and past 2^32, entries keep their order', async () => {
  const { produce, taken, indices } = await ring();
  let head = 0;
  const seen: number[] = [];
  for (let round = 0; round < 50; round++) {
    head = produce(head, round * 5, 5, true);
    seen.push(...taken(5));
  }
  assert.equal(seen, Array.from({ length: 250 }, (_, i) => i));
  assert.is(indices().tail, 250);
  // Both indices just below 2^32: they wrap to 0 and the ring does not notice.
  const near = await ring();
  const top = 0xfffffffe;
  near.arena.view.setUint32(near.address + RingLayout.head, top, true);
  near.arena.view.setUint32(near.address + RingLayout.tail, top, true);
  assert.is(near.produce(top, 7, 4, true), (top + 4) >>> 0);
  assert.equal(near.taken(8), [7, 8, 9, 10]);
  assert.is(near.indices().tail, 2);
});

test.run();
