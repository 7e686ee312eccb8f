// The pipeline memory's allocator (engine/memory.ts): what it lays out is zeroed, aligned, and resident before the
// first packet (no page faults on the fast path); what is laid out while packets flow is not touched at once.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { MemoryArena } from '../engine/memory.ts';
import { Pipeline } from '../engine/pipeline.ts';
import { loadConfig } from '../engine/config.ts';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './helpers.ts';

const MIB = 2 ** 20;

/** How much the process's resident size grows while `grow` runs. */
function residentGrowth(grow: () => void): number {
  const before = process.memoryUsage().rss;
  grow();
  return process.memoryUsage().rss - before;
}

test('a grown memory is resident at once: its pages are mapped before the first packet touches them', () => {
  const arena = new MemoryArena();
  let address = 0;
  const grown = residentGrowth(() => { address = arena.alloc(64 * MIB); });
  // Without the touch the kernel maps nothing until first use: the resident size would barely move.
  assert.ok(grown >= 60 * MIB, `resident size grew by ${(grown / MIB).toFixed(1)} MiB for 64 MiB laid out`);
  assert.is(address % 64, 0);
  assert.ok(arena.u8.subarray(address, address + 64 * MIB).every((byte) => byte === 0), 'laid-out memory reads as zeros');
});

/** The process's anonymous memory in transparent huge pages, in bytes. */
const hugeBytes = () => Number(/AnonHugePages:\s+(\d+) kB/.exec(readFileSync('/proc/self/smaps_rollup', 'utf8'))![1]) * 1024;
const THP = '/sys/kernel/mm/transparent_hugepage/enabled';
const thpMode = existsSync(THP) ? /\[(\w+)\]/.exec(readFileSync(THP, 'utf8'))?.[1] : undefined;
const thpOff = thpMode === undefined || thpMode === 'never';
const addonBuilt = existsSync(join(ROOT, 'native/build/Release/afpacket.node'));

test('a prefaulted memory comes in 2 MiB huge pages where the kernel has them (transparent huge pages, advised through the addon)', () => {
  if (thpOff || !addonBuilt) {
    console.log(`  (not checked: ${thpOff ? 'transparent huge pages are off on this machine' : 'the addon is not built'})`);
    return;
  }
  const arena = new MemoryArena();
  const before = hugeBytes();
  arena.alloc(64 * MIB);
  // The grown range's whole 2 MiB pages: all but its two ends, unless the kernel was short of free 2 MiB pages.
  assert.ok(hugeBytes() - before >= 32 * MIB, `${((hugeBytes() - before) / MIB).toFixed(0)} MiB of 64 in huge pages`);
  // With THP `always` the kernel gives every range huge pages, advised or not.
  if (thpMode !== 'madvise') return;
  const later = new MemoryArena();
  later.prefaulting = false;
  const beforeLater = hugeBytes();
  later.alloc(64 * MIB);
  later.u8.fill(1, 0, 64 * MIB);
  assert.ok(hugeBytes() - beforeLater < 8 * MIB, 'pages that come at first use stay small');
});

test('without prefaulting (a running pipeline) the pages come at first use: the I/O thread is not held', () => {
  const arena = new MemoryArena();
  arena.prefaulting = false;
  const grown = residentGrowth(() => arena.alloc(64 * MIB));
  assert.ok(grown < 16 * MIB, `resident size grew by ${(grown / MIB).toFixed(1)} MiB`);
});

test('a pipeline prefaults while it is laid out, not once it has started; a reload\'s is built without', async () => {
  const config = await loadConfig('memory.yaml', { text: `
elements:
  src: { type: Generator, count: 1 }
  drop: { type: Discard }
connections:
  - src -> drop
` });
  const pipeline = await Pipeline.create(config, { threads: 'inline' });
  assert.ok(pipeline.arena.prefaulting, 'laid out before the first packet');
  await pipeline.run();
  assert.not.ok(pipeline.arena.prefaulting, 'what a running pipeline lays out later (a scale event) comes at first use');
  assert.not.ok((await Pipeline.create(config, { threads: 'inline', prefault: false })).arena.prefaulting);
});

test.run();
