import { Batch, Outputs, now } from "wirepath";
import { CounterState } from "./layout";

export function process(self: CounterState, batch: Batch, out: Outputs): void {
  const n = batch.count;
  let bytes: u64 = 0;
  for (let i: u32 = 0; i < n; i++) bytes += batch.packet(i).wireLength;
  self.packets += n;
  self.bytes += bytes;
  const t = now();
  if (self.first_ns == 0) self.first_ns = t;
  self.last_ns = t;
  out.pushAll(0, batch);
}
