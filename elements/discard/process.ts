import { Batch, Outputs, freePacket } from "wirepath";
import { DiscardState } from "./layout";

export function process(self: DiscardState, batch: Batch, out: Outputs): void {
  for (let i: u32 = 0; i < batch.count; i++) freePacket(batch.packet(i));
}
