import { Packet, ioAllocate, ioDroppedNoSlot, ioRelease, ioSubmit } from "wirepath";
import { FromDeviceState } from "./layout";

// FromDevice's per-burst loops on the I/O side. The addon (native/afpacket.cc) copies frames into
// slots popped from a stack of reserved slots and writes a 24-byte descriptor per frame:
// [slot u32][length u32][wire length u32][status u32][timestamp u64].

const DESC_BYTES: usize = 24;
const RX_NO_SLOT: u32 = 1;
const RX_OVERSIZE: u32 = 2;
const RX_CSUM_PARTIAL: u32 = 4;

/** Tops the stack of reserved slots at `stack` up from `have` to `want` entries; returns how many it holds. */
export function reserve(stack: usize, have: u32, want: u32): u32 {
  while (have < want) {
    const p = ioAllocate();
    if (!p) break;
    store<u32>(stack + (<usize>have << 2), changetype<u32>(p));
    have++;
  }
  return have;
}

/** Submits the frames the addon described and counts the dropped ones; returns the slots it used. */
export function submit(self: FromDeviceState, descs: usize, count: u32, port: u16): u32 {
  let used: u32 = 0;
  for (let i: u32 = 0; i < count; i++) {
    const d = descs + <usize>i * DESC_BYTES;
    const status = load<u32>(d, 12);
    if (status & RX_CSUM_PARTIAL) self.csum_partial++;
    if (status & RX_OVERSIZE) { self.oversize++; continue; }
    if (status & RX_NO_SLOT) { self.no_slot++; ioDroppedNoSlot(1); continue; }
    const p = changetype<Packet>(load<u32>(d));
    p.length = load<u32>(d, 4);
    p.wireLength = load<u32>(d, 8);
    p.timestamp = load<u64>(d, 16);
    self.packets++;
    self.bytes += p.wireLength;
    used++;
    ioSubmit(p, port);
  }
  return used;
}

/** Gives the reserved slots back to the pool. */
export function unreserve(stack: usize, count: u32): void {
  for (let i: u32 = 0; i < count; i++) ioRelease(changetype<Packet>(load<u32>(stack + (<usize>i << 2))));
}
