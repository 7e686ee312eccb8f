import { Batch, Outputs, dropPacket } from "wirepath";
import { ClassifierState } from "./layout";
import { classify, NO_MATCH } from "./program";

export function process(self: ClassifierState, batch: Batch, out: Outputs): void {
  const program = self.program;
  for (let i: u32 = 0; i < batch.count; i++) {
    const p = batch.packet(i);
    const output = classify(program, p);
    if (output == NO_MATCH) { self.unmatched++; dropPacket(p); }
    else out.push(<i32>output, p);
  }
}
