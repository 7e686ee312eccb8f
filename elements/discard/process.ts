import { Batch, Outputs, freeBatch } from "wirepath";
import { DiscardState } from "./layout";

export function process(self: DiscardState, batch: Batch, out: Outputs): void {
  freeBatch(batch);
}
