import { defineElement, param, state } from '../../engine/api.ts';

export default defineElement({
  type: 'FlowStats',
  summary: 'keeps per-flow, per-source and total packet and byte counts',
  description: 'Counts every IPv4 packet three ways, one for each scope of state the engine knows how to move: '
    + 'per flow (5-tuple: packets, bytes, first and last seen), per source address (cross-flow: packets, bytes; each '
    + 'shard keeps the part it saw and the parts add up) and in total (all-flows), bytes as on the wire: a capture cut '
    + 'short (snaplen) counts as the traffic it recorded, its headers are all it needs. Packets pass unchanged. A full table '
    + 'tracks no new entry (counted in untracked); nothing live is evicted. When the pipeline scales, each flow\'s entry '
    + 'moves to the shard its packets are steered to (also by a NAT\'s steering, or behind a Rewrite), the engine\'s work.',
  inputs: 1,
  outputs: [{ name: 'out', doc: 'every packet' }],
  params: {
    capacity: param.int('most flows tracked at once by each shard', 1, 1 << 24, { default: 65536 }),
    timeout: param.duration('idle time after which a flow is forgotten', { default: 300e9 }),
    sources_capacity: param.int('most source addresses tracked at once by each shard', 1, 1 << 24, { default: 65536 }),
  },
  state: {
    flows: state.flowTable({
      doc: 'per-flow packets, bytes, first and last seen (ns)',
      value: { packets: 'u64', bytes: 'u64', first_ns: 'u64', last_ns: 'u64' },
      capacity: (p) => p.capacity,
      timeout: (p) => p.timeout,
    }),
    sources: state.sourceTable({
      doc: 'per-source-address packets, bytes and last seen (ns)',
      value: { packets: 'u64', bytes: 'u64', last_ns: 'u64' },
      // Each shard keeps the part of a source it saw: counts add up, the last-seen time is the latest.
      merge: { last_ns: 'max' },
      capacity: (p) => p.sources_capacity,
      timeout: (p) => p.timeout,
    }),
    total_packets: state.counter('IPv4 packets counted'),
    total_bytes: state.counter('their bytes, as on the wire'),
    new_flows: state.counter('flows seen for the first time (or again after expiring)'),
    untracked: state.counter('packets whose flow or source a full table could not take'),
    not_ipv4: state.counter('packets without an IPv4 header (passed, not counted)'),
  },
  example: 'stats: { type: FlowStats, capacity: 1000000, timeout: 5m }',
});
