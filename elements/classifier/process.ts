import { Batch, Outputs, dropPacket } from "wirepath";
import { ClassifierState } from "./layout";
import { Interpreter, NO_MATCH } from "./program";

/** The batch loop around a decider (program.ts): a type parameter, so its call is direct. */
@inline export function processWith<Decider>(self: ClassifierState, batch: Batch, out: Outputs): void {
  const decider = changetype<Decider>(0);
  const program = self.program;
  // In locals: the pushes' stores could alias the batch's count and the state's counter.
  const n = batch.count;
  let unmatched: u64 = 0;
  for (let i: u32 = 0; i < n; i++) {
    const p = batch.packet(i);
    const output = decider.decide(program, p);
    if (output == NO_MATCH) { unmatched++; dropPacket(p); }
    else out.push(<i32>output, p);
  }
  self.unmatched += unmatched;
}

export function process(self: ClassifierState, batch: Batch, out: Outputs): void {
  processWith<Interpreter>(self, batch, out);
}
