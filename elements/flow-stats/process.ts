import { Batch, Outputs, FlowKey, flowCreated, keyBuffer, now } from "wirepath";
import { FlowStatsState, FlowStatsFlowsEntry, FlowStatsSourcesEntry } from "./layout";

export function process(self: FlowStatsState, batch: Batch, out: Outputs): void {
  const key = keyBuffer();
  const t = now();
  for (let i: u32 = 0; i < batch.count; i++) {
    const p = batch.packet(i);
    if (!FlowKey.fromPacket(p, key)) { self.not_ipv4++; continue; }
    const bytes = <u64>p.wireLength;
    self.total_packets++;
    self.total_bytes += bytes;
    const flow = self.flows.lookupOrInsert(key, FlowKey.hash(key), t, p);
    if (flow) {
      const f = changetype<FlowStatsFlowsEntry>(flow);
      if (flowCreated) { self.new_flows++; f.first_ns = p.timestamp; }
      f.packets++;
      f.bytes += bytes;
      f.last_ns = p.timestamp;
    }
    FlowKey.fromSource(p, key);
    const source = self.sources.lookupOrInsert(key, FlowKey.hash(key), t);
    if (source) {
      const s = changetype<FlowStatsSourcesEntry>(source);
      s.packets++;
      s.bytes += bytes;
      s.last_ns = p.timestamp;
    }
    // A packet, once, whichever of the two tables was full.
    if (!flow || !source) self.untracked++;
  }
  self.flows.sweep(t, 8);
  self.sources.sweep(t, 8);
  out.pushAll(0, batch);
}
