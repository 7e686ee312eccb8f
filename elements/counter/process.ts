import { Batch, Outputs } from "wirepath";
import { CounterState } from "./layout";

export function process(self: CounterState, batch: Batch, out: Outputs): void {
  const n = batch.count;
  if (!n) return;
  let bytes: u64 = 0;
  let first = batch.packet(0).timestamp;
  let last = first;
  for (let i: u32 = 0; i < n; i++) {
    const p = batch.packet(i);
    bytes += p.wireLength;
    // Batches that joined from several sources need not be in time order.
    const t = p.timestamp;
    first = min(first, t);
    last = max(last, t);
  }
  if (self.packets == 0 || first < self.first_ns) self.first_ns = first; // a time of 0 is a valid first one
  if (last > self.last_ns) self.last_ns = last;
  self.packets += n;
  self.bytes += bytes;
  out.pushAll(0, batch);
}
