// The receive path alone, for bench/veth.ts: lets a TPACKET_V3 (or V2) ring fill while nobody reads it,
// then drains it into slots of a shared WebAssembly.Memory as FromDevice does (bursts of 256 through
// the addon) and times the drain. The slots are reused as the engine's pool reuses them: the pool is a
// stack, so a slot freed by the shard is the next one taken, and the slots in use at any time are one
// I/O round's worth (4096 packets in worker mode), not the whole pool.
//   node --import tsx bench/rx-drain.ts DEVICE [2|3]
// Prints "ready" once the socket is open, waits for a line on stdin (the ring is full), then prints
// {"frames": n, "seconds": s} as JSON.

import { createInterface } from 'node:readline';
import { afpacket } from '../native/afpacket.ts';

const BURST = 256;
const SLOT = 2048;
const SLOTS_IN_USE = 4096;
const POOL_SLOTS = 16384;
const DATA_OFFSET = 128;
const addon = afpacket('rx-drain');
const socket = addon.openRx(process.argv[2], { room: SLOT - DATA_OFFSET, snaplen: 65535, ringBytes: 128 << 20, version: process.argv[3] === '2' ? 2 : 3, retireMs: 1, fanout: 0, promiscuous: true });
const memory = new WebAssembly.Memory({ initial: 1 + (POOL_SLOTS * SLOT) / 65536, maximum: 1 + (POOL_SLOTS * SLOT) / 65536, shared: true });
const u8 = new Uint8Array(memory.buffer);
// Touch every page first: a running engine's slots are warm, page faults are not the receive path.
u8.fill(1);
const stack = new Uint32Array(memory.buffer, 0, BURST);
const descs = 4096;
const firstSlot = 65536;
const slotsInUse = Uint32Array.from({ length: SLOTS_IN_USE }, (_, i) => firstSlot + i * SLOT);
console.log('ready');
const input = createInterface({ input: process.stdin });
await new Promise((resolve) => input.once('line', resolve));
input.close();
process.stdin.destroy();
let frames = 0;
let next = 0;
const start = process.hrtime.bigint();
for (;;) {
  stack.set(slotsInUse.subarray(next, next + BURST));
  next = (next + BURST) % SLOTS_IN_USE;
  const n = addon.receive(socket, u8, 0, BURST, descs, BURST, DATA_OFFSET, SLOT - DATA_OFFSET, 65535);
  if (n === 0) break;
  frames += n;
}
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
console.log(JSON.stringify({ frames, seconds }));
addon.close(socket);
