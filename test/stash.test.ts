// Unit tests of a shard's stash of free slots (assembly/shard.ts freeBatch), compiled on its own: a batch of
// freed packets goes into the stash in one copy when it fits, and otherwise slot by slot, the rest back to the
// I/O side through the out ring; never past the stash, also when a growing shard count has lowered the
// stash's capacity below what it holds.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { compileGraph } from '../engine/compile.ts';
import { ENTRY_PATH } from '../engine/codegen.ts';
import { MemoryArena } from '../engine/memory.ts';
import { RingLayout, ShardContext, ENTRY_RECYCLE } from '../engine/layout.ts';

const HARNESS = `
import { Batch } from "wirepath/batch";
import { freeBatch } from "wirepath/shard";
export { shardInit } from "wirepath/shard";
export function free(batch: usize): void { freeBatch(changetype<Batch>(batch)); }
`;

/** Entries the stash has room for in memory; a guard region follows them. */
const STASH_ENTRIES = 32;
const GUARD_BYTES = 256;
const RING_ENTRIES = 64;

async function shard() {
  const compiled = await compileGraph({ files: new Map([[ENTRY_PATH, HARNESS]]), entry: HARNESS, layouts: new Map(), types: new Map() }, []);
  const arena = new MemoryArena();
  const x = new WebAssembly.Instance(compiled.module, { env: { memory: arena.memory, abort: () => { throw new Error('abort'); } } }).exports as any;

  const ring = () => {
    const at = arena.alloc(RingLayout.entries + 4 * RING_ENTRIES, 64);
    arena.view.setUint32(at + RingLayout.mask, RING_ENTRIES - 1, true);
    return at;
  };
  const rxRing = ring();
  const outRing = ring();
  const stash = arena.alloc(8 + 4 * STASH_ENTRIES + GUARD_BYTES, 8);
  const guard = stash + 8 + 4 * STASH_ENTRIES;
  arena.u8.fill(0xaa, guard, guard + GUARD_BYTES);
  const context = arena.alloc(ShardContext.size, 64);
  arena.view.setUint32(context + ShardContext.rxRing, rxRing, true);
  arena.view.setUint32(context + ShardContext.outRing, outRing, true);
  arena.view.setUint32(context + ShardContext.stash, stash, true);
  arena.view.setUint32(context + ShardContext.slotSize, 2048, true);
  x.shardInit(context);
  const batch = arena.alloc(8 + 4 * 64, 8);
  /** Frees `count` packets (fake slot addresses from 0x100000, 256 apart) with the stash holding `count`
   * of `capacity`; returns the stash's count and entries, the out ring's entries and whether the guard is whole. */
  const free = (packets: number, held: number, capacity: number) => {
    arena.view.setUint32(stash, held, true);
    arena.view.setUint32(stash + 4, capacity, true);
    arena.view.setUint32(batch, packets, true);
    arena.view.setUint32(batch + 4, 64, true);
    const slots = Array.from({ length: packets }, (_, i) => 0x100000 + 256 * i);
    slots.forEach((slot, i) => arena.view.setUint32(batch + 8 + 4 * i, slot, true));
    x.free(batch);
    const count = arena.view.getUint32(stash, true);
    const stashed = Array.from({ length: Math.min(count, STASH_ENTRIES) - held }, (_, i) => arena.view.getUint32(stash + 8 + 4 * (held + i), true));
    const recycled = Array.from({ length: RING_ENTRIES }, (_, i) => arena.view.getUint32(outRing + RingLayout.entries + 4 * i, true)).filter((e) => e !== 0);
    const guardWhole = arena.u8.subarray(guard, guard + GUARD_BYTES).every((b) => b === 0xaa);
    arena.u8.fill(0, outRing + RingLayout.entries, outRing + RingLayout.entries + 4 * RING_ENTRIES);
    return { count, stashed, recycled, guardWhole, slots };
  };
  return { free, x, context };
}

test('a batch that fits goes into the stash in one copy', async () => {
  const { free } = await shard();
  const r = free(10, 4, STASH_ENTRIES);
  assert.is(r.count, 14);
  assert.equal(r.stashed, r.slots);
  assert.equal(r.recycled, []);
  assert.ok(r.guardWhole);
});

test('a batch that does not fit fills the stash and sends the rest back through the out ring', async () => {
  const { free } = await shard();
  const r = free(10, STASH_ENTRIES - 3, STASH_ENTRIES);
  assert.is(r.count, STASH_ENTRIES);
  assert.equal(r.stashed, r.slots.slice(0, 3));
  assert.equal(r.recycled, r.slots.slice(3).map((s) => s | ENTRY_RECYCLE));
  assert.ok(r.guardWhole, 'nothing written past the stash');
});

test('a stash holding more than its lowered capacity takes nothing: every slot goes back, nothing past the stash', async () => {
  // A scale-up lowers each stash's capacity to its share of the pool; a full stash then stands above it.
  const { free } = await shard();
  const r = free(16, STASH_ENTRIES, STASH_ENTRIES / 2);
  assert.is(r.count, STASH_ENTRIES);
  assert.equal(r.recycled, r.slots.map((s) => s | ENTRY_RECYCLE));
  assert.ok(r.guardWhole, 'nothing written past the stash');
});

test.run();
