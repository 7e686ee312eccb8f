import { Batch, Outputs, now } from "wirepath";
import { CounterState } from "./layout";

export function process(self: CounterState, batch: Batch, out: Outputs): void {
  const n = batch.count;
  let bytes: u64 = 0;
  for (let i: u32 = 0; i < n; i++) bytes += batch.packet(i).wireLength;
  const t = now();
  if (self.packets == 0) self.first_ns = t; // a clock of 0 is a valid first time
  self.last_ns = t;
  self.packets += n;
  self.bytes += bytes;
  out.pushAll(0, batch);
}
