import { Batch, Outputs, dropPacket } from "wirepath";
import { ClassifierState } from "./layout";
import { Interpreter, NO_MATCH } from "./program";

/** The batch loop around a decider (program.ts): a type parameter, so its call is direct. */
@inline export function processWith<Decider>(self: ClassifierState, batch: Batch, out: Outputs): void {
  const decider = changetype<Decider>(0);
  const program = self.program;
  for (let i: u32 = 0; i < batch.count; i++) {
    const p = batch.packet(i);
    const output = decider.decide(program, p);
    if (output == NO_MATCH) { self.unmatched++; dropPacket(p); }
    else out.push(<i32>output, p);
  }
}

export function process(self: ClassifierState, batch: Batch, out: Outputs): void {
  processWith<Interpreter>(self, batch, out);
}
