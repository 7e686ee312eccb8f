import { Batch, ioRelease, copyBytes } from "wirepath";
import { ToPcapState } from "./layout";

/**
 * Serialises packets [start, ...) of `batch` as pcap records into `buf` while they fit, and returns
 * their slots to the pool. Returns the bytes written into `buf`; self.packets counts the records.
 */
export function writePcap(self: ToPcapState, batch: Batch, start: u32, buf: usize, capacity: u32, nanos: bool): u32 {
  let at: u32 = 0;
  for (let i = start; i < batch.count; i++) {
    const p = batch.packet(i);
    const len = p.length < self.snaplen ? p.length : self.snaplen;
    if (at + 16 + len > capacity) break;
    const rec = buf + at;
    const ts = p.timestamp;
    const fraction = ts % 1_000_000_000;
    const seconds = ts / 1_000_000_000;
    if (seconds > <u64>u32.MAX_VALUE) self.wrapped_times++;
    store<u32>(rec, <u32>seconds);
    store<u32>(rec, <u32>(nanos ? fraction : fraction / 1000), 4);
    store<u32>(rec, len, 8);
    store<u32>(rec, p.wireLength > p.length ? p.wireLength : p.length, 12);
    copyBytes(rec + 16, p.data, len);
    ioRelease(p);
    self.packets++;
    self.bytes += len;
    at += 16 + len;
  }
  return at;
}

/** Releases packets [start, ...) of `batch` unwritten, counted in self.lagged: a FIFO's reader took no more bytes. */
export function skipPcap(self: ToPcapState, batch: Batch, start: u32): void {
  for (let i = start; i < batch.count; i++) ioRelease(batch.packet(i));
  if (batch.count > start) self.lagged += batch.count - start;
}
