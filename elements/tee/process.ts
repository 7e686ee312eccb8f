import { Batch, Outputs, clonePacket } from "wirepath";
import { TeeState } from "./layout";

export function process(self: TeeState, batch: Batch, out: Outputs): void {
  const n = batch.count;
  for (let port: u32 = 1; port < self.outputs; port++) {
    const dest = out.port(port);
    for (let i: u32 = 0; i < n; i++) {
      const copy = clonePacket(batch.packet(i));
      if (copy) dest.push(copy);
      else self.no_buffer++;
    }
  }
  out.pushAll(0, batch);
}
