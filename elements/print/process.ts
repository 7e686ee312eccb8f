import { Batch, ioRelease } from "wirepath";

/** Returns the slots of a printed batch to the pool and empties it. */
export function release(batch: Batch): void {
  for (let i: u32 = 0; i < batch.count; i++) ioRelease(batch.packet(i));
  batch.count = 0;
}
