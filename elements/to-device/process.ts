import { Batch, ioRelease } from "wirepath";
import { ToDeviceState } from "./layout";

/**
 * Takes the frames a capture cut short (snaplen, or a pcap's snap length) out of `batch`, counted in truncated and
 * freed: sent, they would leave with headers that promise bytes they lack. Returns how many frames stay.
 */
export function keepWhole(self: ToDeviceState, batch: Batch): u32 {
  let kept: u32 = 0;
  for (let i: u32 = 0; i < batch.count; i++) {
    const p = batch.packet(i);
    if (p.length < p.wireLength) {
      self.truncated++;
      ioRelease(p);
    } else batch.set(kept++, p);
  }
  batch.count = kept;
  return kept;
}

/**
 * Writes (frame address, length) pairs for packets [start, start + most) of `batch` to `descs`, for
 * the addon's sendmmsg; returns how many.
 */
export function frames(self: ToDeviceState, batch: Batch, start: u32, most: u32, descs: usize): u32 {
  const end = batch.count - start < most ? batch.count : start + most;
  for (let i = start; i < end; i++) {
    const p = batch.packet(i);
    const d = descs + (<usize>(i - start) << 3);
    store<u32>(d, <u32>p.data);
    store<u32>(d, p.length, 4);
  }
  return end - start;
}

/**
 * Counts a burst of `count` packets from `start` of which the kernel took `sent` (the addon set the others' lengths
 * in `descs` to 0), and frees their slots.
 */
export function sent(self: ToDeviceState, batch: Batch, start: u32, count: u32, sent: u32, descs: usize): void {
  for (let i: u32 = 0; i < count; i++) {
    self.bytes += load<u32>(descs + (<usize>i << 3), 4);
    ioRelease(batch.packet(start + i));
  }
  self.packets += sent;
  self.errors += count - sent;
}
