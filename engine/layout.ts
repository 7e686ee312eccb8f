// Memory layouts shared by the TypeScript side and the AssemblyScript side. The runtime's own
// structures mirror the constants in assembly/*.ts; each element's layout class is generated here
// from its declaration, so its parameters and state are written and read at the same offsets.

import type { ElementType } from './element.ts';
import type { FastType } from './params.ts';
import type { Graph, GraphNode } from './graph.ts';

/** assembly/packet.ts */
export const Meta = { length: 0, wireLength: 4, timestamp: 8, dataOffset: 16, l3Offset: 18, port: 20, annotation: 24, size: 32, defaultDataOffset: 128 } as const;

/** Bytes of a frame a fresh slot holds: the slot after its metadata and headroom. */
export const slotRoom = (slotSize: number): number => slotSize - Meta.defaultDataOffset;
/** assembly/ring.ts */
export const RingLayout = { head: 0, tail: 64, sleep: 128, mask: 192, entries: 256 } as const;
/** assembly/ring.ts ENTRY_RECYCLE: a ring entry that carries a free slot, not a packet. */
export const ENTRY_RECYCLE = 1;
/** assembly/shard.ts */
export const ShardContext = { rxRing: 0, outRing: 4, stash: 8, slotSize: 12, batches: 16, packets: 24, noBuffer: 32, leaked: 40, key: 48, taken: 64, now: 72, scratch: 80, order: 84, resteeredAgain: 88, overrun: 96, misrouted: 104, misroutedBy: 112, graph: 116, index: 120, outWritten: 124, size: 128 } as const;
/** assembly/shard.ts BATCH_SCRATCH_BYTES: each shard's scratch for elements' per-batch arrays. */
export const BATCH_SCRATCH_BYTES = 16384;
/** assembly/io.ts */
export const IoContext = { freeStack: 0, shardCount: 4, shards: 8, buckets: 12, bucketMask: 16, sinks: 20, noSlot: 24, slotSize: 32, steer: 36, held: 40, sourceSteering: 44, steeringState: 48, fragments: 52, order: 56, clockFloor: 64, clockShifts: 72, overlong: 80, size: 88, shardRecord: 32 } as const;
/** assembly/io.ts IO_STEER bits and the area where later fragments wait for their first (FRAGMENTS_*). */
export const Steering = { buckets: 1, fragments: 2, hash: 4, orderFragments: 0x80 } as const;
/** assembly/order.ts ORDER_*: the area where the order of moving buckets' packets is watched. */
export const OrderWatch = { watching: 0, checked: 4, reordered: 8, poolBase: 20, slotShift: 24, bucketMask: 28, takenAt: 32, stampsAt: 36, watchAt: 64 } as const;
export const FragmentArea = { waited: 16, unmatched: 24, size: 64 + 4096 * 4 + 256 * 8 + 256 * 4 } as const;
/** assembly/flowtable.ts: the FlowTable header and its entries. */
export const FlowTableLayout = {
  slots: 0, entrySize: 4, capacity: 8, live: 12, timeout: 16, cursor: 24, entries: 28, inserts: 32, full: 40, expired: 48, expiryHandler: 56, expiryContext: 60, fullSweepAfter: 64, size: 72,
  entryKey: 8, entryExpires: 24, entryValue: 32,
} as const;
/** assembly/flowtable.ts ENTRY_LIVE. */
export const FLOW_ENTRY_LIVE = 1;

type FieldType = FastType | 'FlowTable' | 'usize';
const SIZE: Record<FieldType, number> = { u64: 8, u32: 4, i32: 4, FlowTable: 4, usize: 4, u16: 2, u8: 1, bool: 1 };

export interface LayoutField {
  name: string;
  type: FieldType;
  offset: number;
  /** Where the value comes from: a parameter (index = which of its fields), the has_ flag of an optional one, or state. */
  from: { param: string; index: number } | { has: string } | { state: string };
}

export interface ClassLayout {
  className: string;
  fields: LayoutField[];
  size: number;
}

export interface ElementLayout extends ClassLayout {
  tables: { state: string; entry: ClassLayout }[];
}

/** Orders fields by falling size so that natural alignment leaves no gaps and offsets are plain sums. */
function place(className: string, fields: Omit<LayoutField, 'offset'>[]): ClassLayout {
  const sorted = fields.map((f, i) => ({ f, i })).sort((a, b) => SIZE[b.f.type] - SIZE[a.f.type] || a.i - b.i).map(({ f }) => f);
  let offset = 0;
  const placed = sorted.map((f) => { const p = { ...f, offset }; offset += SIZE[f.type]; return p; });
  return { className, fields: placed, size: Math.ceil(offset / 8) * 8 };
}

export function elementLayout(type: ElementType): ElementLayout {
  const fields: Omit<LayoutField, 'offset'>[] = [];
  for (const [name, spec] of Object.entries(type.params)) {
    const fast = spec.type.fast?.(name) ?? [];
    fast.forEach((f, index) => fields.push({ name: f.name, type: f.type, from: { param: name, index } }));
    if (fast.length && !spec.required && spec.default === undefined) fields.push({ name: `has_${name}`, type: 'bool', from: { has: name } });
  }
  const tables: ElementLayout['tables'] = [];
  for (const [name, s] of Object.entries(type.state ?? {})) {
    if (s.kind === 'scalar') fields.push({ name, type: s.type, from: { state: name } });
    else if (s.kind === 'data') fields.push({ name, type: 'usize', from: { state: name } });
    else {
      fields.push({ name, type: 'FlowTable', from: { state: name } });
      const entryFields = Object.entries(s.value).map(([n, t]) => ({ name: n, type: t, from: { state: n } }));
      tables.push({ state: name, entry: place(`${type.type}${capitalise(name)}Entry`, entryFields) });
    }
  }
  return { ...place(`${type.type}State`, fields), tables };
}

function capitalise(s: string): string {
  return s.replace(/(^|_)([a-z])/g, (_, __, c: string) => c.toUpperCase());
}

/** The AssemblyScript source of an element's `layout.ts`, imported by its process.ts. */
export function layoutSource(type: ElementType, layout: ElementLayout): string {
  const cls = (c: ClassLayout, doc: string) => [
    `/** ${doc} */`,
    '@unmanaged',
    `export class ${c.className} {`,
    ...c.fields.map((f) => `  ${f.name}: ${f.type}; // @${f.offset}`),
    '}',
  ].join('\n');
  return [
    `// Generated by wirepath from ${type.type}'s element.ts: do not edit.`,
    layout.tables.length ? 'import { FlowTable } from "wirepath";' : '',
    cls(layout, `${type.type}'s parameters and state, one block per instance and shard.`),
    ...layout.tables.map((t) => cls(t.entry, `The value of one entry of ${type.type}.${t.state}.`)),
    '',
  ].join('\n');
}

/** Offsets of one node's record in a shard's graph descriptor. */
export interface NodeRecord {
  base: number;
  self: number;
  inputs: number[];
  /** The number of outputs, followed by `outputs`: the element's Outputs. */
  outputCount: number;
  outputs: number[];
  /** Per output, the input batch it feeds when the port has a batch of its own (see sharesTarget). */
  forwards: number[];
  inPackets: number;
  holeDrops: number;
  /** The clock when an element that ticks last ran (process or tick): the generated code ticks it once it has been idle TICK_NS. */
  lastRun: number;
  outPackets: number[];
  size: number;
}

/**
 * The graph descriptor: [source table addr][hole batch addr][node running now][misrouted batch addr] then one
 * record per node. The running node tells a crash report which element failed (and the runtime which one pushed a
 * packet to an output it does not have: the misrouted batch has no room, so each such push is counted and dropped).
 */
export const GraphHeader = { sourceTable: 0, hole: 4, running: 8, misrouted: 12, size: 16 } as const;

export function nodeRecords(graph: Graph): NodeRecord[] {
  let base: number = GraphHeader.size;
  return graph.nodes.map((node: GraphNode) => {
    const inputs = Array.from({ length: node.inputs }, (_, i) => base + 4 + 4 * i);
    // The element's Outputs: the number of its outputs, then their batches (assembly/batch.ts Outputs.port checks it).
    const outputCount = base + 4 + 4 * node.inputs;
    const outputs = node.outputs.map((_, i) => outputCount + 4 + 4 * i);
    const forwards = node.outputs.map((_, i) => outputCount + 4 + 4 * node.outputs.length + 4 * i);
    let at = Math.ceil((outputCount + 4 + 8 * node.outputs.length) / 8) * 8;
    const inPackets = at; at += 8;
    const holeDrops = at; at += 8;
    const lastRun = at; at += 8;
    const outPackets = node.outputs.map(() => { const o = at; at += 8; return o; });
    const record = { base, self: base, inputs, outputCount, outputs, forwards, inPackets, holeDrops, lastRun, outPackets, size: at - base };
    base = at;
    return record;
  });
}
