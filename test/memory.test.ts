// The pipeline memory's allocator (engine/memory.ts): what it lays out is zeroed, aligned, and resident before the
// first packet (no page faults on the fast path).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { MemoryArena } from '../engine/memory.ts';

const MIB = 2 ** 20;

test('a grown memory is resident at once: its pages are mapped before the first packet touches them', () => {
  const arena = new MemoryArena();
  const before = process.memoryUsage().rss;
  const address = arena.alloc(64 * MIB);
  const grown = process.memoryUsage().rss - before;
  // Without the touch the kernel maps nothing until first use: the resident size would barely move.
  assert.ok(grown >= 60 * MIB, `resident size grew by ${(grown / MIB).toFixed(1)} MiB for 64 MiB laid out`);
  assert.is(address % 64, 0);
  assert.ok(arena.u8.subarray(address, address + 64 * MIB).every((byte) => byte === 0), 'laid-out memory reads as zeros');
});

test.run();
