// A running pipeline: lays out memory, instantiates the I/O side and starts the shard workers, then
// moves batches between sources, shards and sinks until the sources are done or it is stopped.

import { Worker } from 'node:worker_threads';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import type { PipelineConfig } from './config.ts';
import { buildGraph, type Graph, type GraphNode } from './graph.ts';
import { generateGraph } from './codegen.ts';
import { compileGraph, type CompiledGraph } from './compile.ts';
import { MemoryArena } from './memory.ts';
import { Meta, RingLayout, ShardContext, IoContext, FlowTableLayout, GraphHeader, nodeRecords, type ElementLayout, type NodeRecord, type LayoutField } from './layout.ts';
import type { ElementView, SinkDriver, SourceDriver, IoContext as DriverContext } from './element.ts';
import { EnvironmentError } from './errors.ts';
import { handlersOf } from './handlers.ts';

export interface PipelineOptions {
  /** 'trace' runs the elements' clock on the packets' timestamps (deterministic); 'wall' on real time. */
  clock?: 'trace' | 'wall';
  /**
   * 'worker' runs the shard in a worker thread fed through the rings; 'inline' runs it on the I/O
   * thread, run to completion after each pump (one thread: for measuring the fast path alone and for
   * debugging). Both run the same compiled graph over the same rings.
   */
  threads?: 'worker' | 'inline';
  log?: (message: string) => void;
}

export interface ElementStats {
  type: string;
  in: number;
  out: number[];
  unconnected_drops: number;
  [counter: string]: unknown;
}

export interface RunResult {
  packets_in: number;
  packets_out: number;
  wall_seconds: number;
  packets_per_second: number;
  /** Milliseconds from process start to the first packet submitted: the startup a user waits for. */
  first_packet_ms: number;
  /** Seconds from the first packet submitted to the last one finished: the steady-state time. */
  busy_seconds: number;
  interrupted: boolean;
  elements: Record<string, ElementStats>;
}

interface Shard {
  context: number;
  descriptor: number;
  rxRing: number;
  outRing: number;
  control: SharedArrayBuffer;
  worker?: Worker;
  /** The shard's instance on this thread, in inline mode. */
  inline?: Record<string, any>;
  /** Address of each node's state block on this shard. */
  blocks: number[];
}

const BATCH_HEADER = 8;
const nextPowerOfTwo = (n: number) => 2 ** Math.ceil(Math.log2(Math.max(1, n)));

export class Pipeline {
  readonly arena = new MemoryArena();
  readonly graph: Graph;
  private readonly layouts: Map<string, ElementLayout>;
  private readonly records: NodeRecord[];
  private io!: Record<string, any>;
  private ioContext = 0;
  private shards: Shard[] = [];
  private sources: { node: GraphNode; driver: SourceDriver; submitted: number }[] = [];
  private sinks: { node: GraphNode; driver: SinkDriver; batch: number; written: number }[] = [];
  /** Address of each source and sink node's state block on the I/O side. */
  private ioBlocks = new Map<string, number>();
  private stopRequested = false;
  private failure: Error | undefined;
  private readonly log: (m: string) => void;
  private readonly clock: 'trace' | 'wall';
  private readonly threads: 'worker' | 'inline';
  /**
   * Packets a source may submit per round. Inline, one batch, so that the slots just written are
   * still in the L1 cache when the shard reads them; with a worker, a few batches ahead of it.
   */
  private readonly pumpBudget: number;

  private constructor(readonly config: PipelineConfig, graph: Graph, readonly compiled: CompiledGraph, layouts: Map<string, ElementLayout>, options: PipelineOptions) {
    this.graph = graph;
    this.layouts = layouts;
    this.records = nodeRecords(graph);
    this.log = options.log ?? (() => {});
    this.clock = options.clock ?? 'trace';
    this.threads = options.threads ?? 'worker';
    this.pumpBudget = this.threads === 'inline' ? config.batch : config.batch * 4;
  }

  static async create(config: PipelineConfig, options: PipelineOptions = {}): Promise<Pipeline> {
    const graph = buildGraph(config);
    const generated = generateGraph(graph);
    const elementDirs = [...new Set(graph.nodes.map((n) => n.type.dir))];
    const compiled = await compileGraph(generated, elementDirs);
    const pipeline = new Pipeline(config, graph, compiled, generated.layouts, options);
    pipeline.setUp();
    return pipeline;
  }

  private setUp(): void {
    const { config, arena, graph } = this;
    const shardCount = 1;
    const pool = config.poolSlots;
    const poolBase = arena.alloc(pool * config.slotSize, config.slotSize);
    const freeStack = arena.alloc(8 + 4 * pool, 8);
    const view = arena.view;
    view.setUint32(freeStack, pool, true);
    view.setUint32(freeStack + 4, pool, true);
    // Lowest addresses on top, so a short run touches few slots.
    for (let i = 0; i < pool; i++) view.setUint32(freeStack + 8 + 4 * i, poolBase + (pool - 1 - i) * config.slotSize, true);

    this.ioContext = arena.alloc(IoContext.size);
    const shardRecords = arena.alloc(IoContext.shardRecord * shardCount, 8);
    const buckets = arena.alloc(1024, 8);
    const sinkTable = arena.alloc(4 * Math.max(1, graph.sinks.length), 8);
    this.u32(this.ioContext + IoContext.freeStack, freeStack);
    this.u32(this.ioContext + IoContext.shardCount, shardCount);
    this.u32(this.ioContext + IoContext.shards, shardRecords);
    this.u32(this.ioContext + IoContext.buckets, buckets);
    this.u32(this.ioContext + IoContext.bucketMask, 1023);
    this.u32(this.ioContext + IoContext.sinks, sinkTable);
    this.u32(this.ioContext + IoContext.slotSize, config.slotSize);

    const ringCapacity = nextPowerOfTwo(pool);
    const stashCapacity = Math.max(64, 2 * config.batch);
    for (let s = 0; s < shardCount; s++) {
      const rxRing = this.ring(ringCapacity);
      const outRing = this.ring(ringCapacity);
      const stash = arena.alloc(8 + 4 * stashCapacity, 8);
      this.u32(stash + 4, stashCapacity);
      const context = arena.alloc(ShardContext.size);
      this.u32(context + ShardContext.rxRing, rxRing);
      this.u32(context + ShardContext.outRing, outRing);
      this.u32(context + ShardContext.stash, stash);
      this.u32(context + ShardContext.slotSize, config.slotSize);
      const record = shardRecords + s * IoContext.shardRecord;
      this.u32(record, rxRing);
      this.u32(record + 4, outRing);
      this.u32(record + 8, stash);
      const { descriptor, blocks } = this.layOutGraph();
      this.shards.push({ context, descriptor, rxRing, outRing, blocks, control: new SharedArrayBuffer(16) });
    }
    for (const sink of graph.sinks) {
      const batch = this.batch(pool);
      this.u32(sinkTable + 4 * sink.sinkId, batch);
      this.sinks.push({ node: sink, driver: undefined as unknown as SinkDriver, batch, written: 0 });
    }
    for (const node of [...graph.sources, ...graph.sinks]) this.ioBlocks.set(node.name, this.stateBlock(node));

    this.io = new WebAssembly.Instance(this.compiled.module, { env: this.imports() }).exports as Record<string, any>;
    for (const [type, layout] of this.layouts) {
      const size = Math.ceil(this.io[`layoutSize_${type}`]() / 8) * 8;
      if (size !== layout.size) throw new Error(`layout of ${type} disagrees between engine (${layout.size} B) and compiler (${size} B)`);
    }
    this.io.ioInit(this.ioContext);
  }

  private imports() {
    return { memory: this.arena.memory, abort: () => { throw new Error('abort called in the fast path'); }, seed: () => 0, trace: () => {} };
  }

  private u32(addr: number, value: number): void {
    this.arena.view.setUint32(addr, value, true);
  }

  private ring(capacity: number): number {
    const ring = this.arena.alloc(RingLayout.entries + 4 * capacity, 64);
    this.u32(ring + RingLayout.mask, capacity - 1);
    return ring;
  }

  private batch(capacity: number): number {
    const batch = this.arena.alloc(BATCH_HEADER + 4 * Math.max(1, capacity), 8);
    this.u32(batch + 4, Math.max(1, capacity));
    return batch;
  }

  /** One shard's graph descriptor: batches, element state blocks and the records the generated code reads. */
  private layOutGraph(): { descriptor: number; blocks: number[] } {
    const { graph, records } = this;
    const last = records[records.length - 1];
    const descriptor = this.arena.alloc(last.base + last.size, 8);
    const sourceTable = this.arena.alloc(4 * Math.max(1, graph.sources.length), 8);
    const holeCapacity = graph.nodes.reduce((sum, n) => sum + n.inputCapacity.reduce((a, b) => a + b, 0), 0);
    const hole = this.batch(holeCapacity);
    this.u32(descriptor + GraphHeader.sourceTable, sourceTable);
    this.u32(descriptor + GraphHeader.hole, hole);
    const inputBatches = graph.nodes.map((node) => node.inputCapacity.map((capacity) => this.batch(capacity)));
    const blocks = graph.nodes.map((node) => {
      const r = records[node.index];
      inputBatches[node.index].forEach((b, port) => this.u32(descriptor + r.inputs[port], b));
      node.targets.forEach((t, port) => {
        this.u32(descriptor + r.outputs[port], t ? inputBatches[graph.byName.get(t.node)!.index][t.port] : hole);
      });
      if (node.sourceId >= 0) this.u32(sourceTable + 4 * node.sourceId, this.arena.view.getUint32(descriptor + r.outputs[0], true));
      const block = node.type.kind === 'element' ? this.stateBlock(node) : 0;
      this.u32(descriptor + r.self, block);
      return block;
    });
    return { descriptor, blocks };
  }

  /** Allocates a node's state block, writes its parameters, and lays out its flow tables. */
  private stateBlock(node: GraphNode): number {
    const layout = this.layouts.get(node.type.type)!;
    const block = this.arena.alloc(layout.size, 8);
    for (const field of layout.fields) {
      if ('param' in field.from || 'has' in field.from) this.writeParam(block, node, field);
      else if (field.type === 'FlowTable') this.u32(block + field.offset, this.flowTable(node, field.from.state));
      else if (field.type === 'usize') this.u32(block + field.offset, this.configData(node, field.from.state));
    }
    return block;
  }

  private writeParam(block: number, node: GraphNode, field: LayoutField): void {
    const params = node.instance.params;
    if ('has' in field.from) {
      this.arena.view.setUint8(block + field.offset, params[field.from.has] !== undefined ? 1 : 0);
      return;
    }
    if (!('param' in field.from)) return;
    const value = params[field.from.param];
    if (value === undefined) return;
    const encoded = node.type.params[field.from.param].type.encode!(value)[field.from.index];
    writeField(this.arena.view, block + field.offset, field.type, encoded);
  }

  /** Config data is read-only, so every shard's block points at one copy. */
  private readonly dataCopies = new Map<string, number>();

  private configData(node: GraphNode, name: string): number {
    const key = `${node.name}.${name}`;
    const existing = this.dataCopies.get(key);
    if (existing !== undefined) return existing;
    const spec = node.type.state![name];
    if (spec.kind !== 'data') throw new Error(`${name} is not config data`);
    const size = spec.size(node.instance.params);
    const address = this.arena.alloc(Math.max(size, 8), 64);
    spec.init(node.instance.params, new DataView(this.arena.memory.buffer, address, size), address);
    this.dataCopies.set(key, address);
    return address;
  }

  private flowTable(node: GraphNode, name: string): number {
    const spec = node.type.state![name];
    if (spec.kind !== 'flow-table') throw new Error(`${name} is not a flow table`);
    const layout = this.layouts.get(node.type.type)!.tables.find((t) => t.state === name)!;
    const capacity = spec.capacity(node.instance.params);
    const slots = nextPowerOfTwo(Math.ceil(capacity * 1.5) + 1);
    const entrySize = FlowTableLayout.entryValue + layout.entry.size;
    const header = this.arena.alloc(FlowTableLayout.size, 8);
    const entries = this.arena.alloc(slots * entrySize, 64);
    const v = this.arena.view;
    v.setUint32(header + FlowTableLayout.slots, slots, true);
    v.setUint32(header + FlowTableLayout.entrySize, entrySize, true);
    v.setUint32(header + FlowTableLayout.capacity, capacity, true);
    v.setBigUint64(header + FlowTableLayout.timeout, BigInt(spec.timeout(node.instance.params)), true);
    v.setUint32(header + FlowTableLayout.entries, entries, true);
    return header;
  }

  /** Opens sources and sinks and starts the shard workers. */
  async start(): Promise<void> {
    for (const node of this.graph.sources) {
      const driver = node.type.source!(this.driverContext(node, node.sourceId));
      this.sources.push({ node, driver, submitted: 0 });
    }
    for (const sink of this.sinks) sink.driver = sink.node.type.sink!(this.driverContext(sink.node, sink.node.sinkId));
    for (const shard of this.shards) {
      if (this.threads === 'inline') {
        shard.inline = new WebAssembly.Instance(this.compiled.module, { env: this.imports() }).exports as Record<string, any>;
        shard.inline.shardInit(shard.context);
        continue;
      }
      shard.worker = new Worker(new URL('./shard-worker.js', import.meta.url), {
        workerData: {
          module: this.compiled.module, memory: this.arena.memory, context: shard.context, descriptor: shard.descriptor,
          batch: this.config.batch, control: shard.control, rxRing: shard.rxRing, clock: this.clock,
        },
      });
      shard.worker.on('message', (m) => {
        if (m.error) this.failure ??= new Error(`shard worker failed: ${m.error.message}`);
      });
      shard.worker.on('error', (e) => { this.failure ??= e; });
    }
  }

  private driverContext(node: GraphNode, port: number): DriverContext {
    return {
      name: node.name, params: node.instance.params, exports: this.io, arena: this.arena,
      self: this.ioBlocks.get(node.name)!, port, configFile: this.config.file, slotRoom: this.config.slotSize - Meta.defaultDataOffset,
      fieldOffset: (field) => {
        const f = this.layouts.get(node.type.type)!.fields.find((x) => x.name === field);
        if (!f) throw new Error(`${node.type.type} has no layout field '${field}'`);
        return f.offset;
      },
      log: (m) => this.log(`${node.name}: ${m}`),
    };
  }

  /** Asks the pipeline to stop: sources stop reading, packets in flight are finished and written. */
  stop(): void {
    this.stopRequested = true;
  }

  /** Runs until every source is done (or stop() is called); returns the final counters. */
  async run(onTick?: (p: Pipeline) => void): Promise<RunResult> {
    const started = performance.now();
    await this.start();
    let lastYield = performance.now();
    let idleRounds = 0;
    let firstPacketAt = 0;
    let finishedAt = 0;
    try {
      for (;;) {
        if (this.failure) throw this.failure;
        let moved = 0;
        this.io.ioTopUpStashes();
        if (!this.stopRequested) {
          for (const source of this.sources) {
            if (source.driver.done) continue;
            const n = source.driver.pump(this.pumpBudget);
            source.submitted += n;
            moved += n;
            if (n && !firstPacketAt) firstPacketAt = performance.now();
          }
        }
        this.publish();
        this.runInline();
        moved += this.collect();
        const sourcesDone = this.stopRequested || this.sources.every((s) => s.driver.done);
        if (sourcesDone && this.shardsIdle()) {
          this.collect();
          if (this.shardsIdle()) { finishedAt = performance.now(); break; }
        }
        const now = performance.now();
        if (moved === 0) {
          idleRounds++;
          const wait = Math.min(...this.sources.map((s) => (s.driver.done ? Infinity : s.driver.waitNs?.() ?? 0)));
          if (idleRounds > 50 || wait > 0) {
            await new Promise((r) => setTimeout(r, Math.max(0, Math.min(10, (Number.isFinite(wait) ? wait : 1e6) / 1e6))));
            lastYield = performance.now();
          }
        } else {
          idleRounds = 0;
          if (now - lastYield > 50) {
            onTick?.(this);
            await yieldToEventLoop();
            lastYield = performance.now();
          }
        }
      }
    } finally {
      await this.shutdown();
    }
    const wall = (performance.now() - started) / 1000;
    const packetsIn = this.sources.reduce((s, x) => s + x.submitted, 0);
    return {
      packets_in: packetsIn,
      packets_out: this.sinks.reduce((s, x) => s + x.written, 0),
      wall_seconds: wall,
      packets_per_second: wall > 0 ? packetsIn / wall : 0,
      first_packet_ms: firstPacketAt,
      busy_seconds: firstPacketAt && finishedAt ? (finishedAt - firstPacketAt) / 1000 : 0,
      interrupted: this.stopRequested,
      elements: this.stats(),
    };
  }

  /** Inline mode: each shard takes everything in its ring, on this thread. */
  private runInline(): void {
    const time = this.clock === 'wall' ? process.hrtime.bigint() : 0n;
    for (const shard of this.shards) {
      if (!shard.inline) continue;
      while (shard.inline.shardStep(shard.descriptor, this.config.batch, time)) { /* until the ring is empty */ }
    }
  }

  private publish(): void {
    const sleeping = this.io.ioPublish();
    if (!sleeping) return;
    const i32 = this.arena.i32;
    this.shards.forEach((shard, s) => {
      if (sleeping & (1 << s)) Atomics.notify(i32, (shard.rxRing + RingLayout.head) >> 2);
    });
  }

  private collect(): number {
    const toSinks = this.io.ioCollect();
    if (toSinks === 0) return 0;
    for (const sink of this.sinks) {
      const count = this.arena.view.getUint32(sink.batch, true);
      if (count === 0) continue;
      sink.written += count;
      sink.driver.write(sink.batch);
    }
    return toSinks;
  }

  /** True when every shard has finished every batch it was given and sent nothing not yet collected. */
  private shardsIdle(): boolean {
    const v = this.arena.view;
    return this.shards.every((s) =>
      v.getUint32(s.rxRing + RingLayout.head, true) === v.getUint32(s.rxRing + RingLayout.tail, true) &&
      v.getUint32(s.outRing + RingLayout.head, true) === v.getUint32(s.outRing + RingLayout.tail, true));
  }

  private async shutdown(): Promise<void> {
    await Promise.all(this.shards.map(async (shard) => {
      if (!shard.worker) return;
      Atomics.store(new Int32Array(shard.control), 0, 1);
      Atomics.notify(this.arena.i32, (shard.rxRing + RingLayout.head) >> 2);
      await shard.worker.terminate();
    }));
    for (const s of this.sources) s.driver.close();
    for (const s of this.sinks) s.driver?.close();
  }

  /** Source progress from 0 to 1 (the least advanced source), or undefined when unknown. */
  progress(): number | undefined {
    const values = this.sources.map((s) => s.driver.progress?.()).filter((v): v is number => v !== undefined);
    return values.length ? Math.min(...values) : undefined;
  }

  packetsIn(): number {
    return this.sources.reduce((s, x) => s + x.submitted, 0);
  }

  /** A view of one element for handlers: parameters, and state merged over shards. */
  view(name: string): ElementView {
    const node = this.graph.byName.get(name);
    if (!node) throw new Error(`no element '${name}'`);
    const layout = this.layouts.get(node.type.type)!;
    const blocks = node.type.kind === 'element' ? this.shards.map((s) => s.blocks[node.index]) : [this.ioBlocks.get(name)!];
    const v = this.arena.view;
    const fieldOf = (field: string) => {
      const f = layout.fields.find((x) => x.name === field);
      if (!f) throw new Error(`${node.type.type} has no state field '${field}'`);
      return f;
    };
    return {
      name, params: node.instance.params,
      read: (field) => {
        const f = fieldOf(field);
        const spec = node.type.state?.[field];
        const values = blocks.map((b) => readField(v, b + f.offset, f.type));
        const merge = spec?.kind === 'scalar' ? spec.merge : 'sum';
        if (f.type === 'FlowTable') return values.reduce((s, h) => s + BigInt(v.getUint32(Number(h) + FlowTableLayout.live, true)), 0n);
        return values.reduce((a, b) => (merge === 'sum' ? a + b : merge === 'max' ? (a > b ? a : b) : a < b ? a : b));
      },
      reset: () => {
        for (const f of layout.fields) {
          if (!('state' in f.from) || f.type === 'FlowTable' || f.type === 'usize') continue;
          for (const b of blocks) writeField(v, b + f.offset, f.type, 0n);
        }
        for (const shard of this.shards) {
          const r = this.records[node.index];
          for (const off of [r.inPackets, r.holeDrops, ...r.outPackets]) v.setBigUint64(shard.descriptor + off, 0n, true);
        }
      },
      setParam: (param, raw) => {
        const spec = node.type.params[param];
        if (!spec) throw new Error(`${node.type.type} has no parameter '${param}'`);
        const value = spec.type.parse(raw);
        node.instance.params[param] = value;
        for (const b of blocks) for (const f of layout.fields) {
          if (('param' in f.from && f.from.param === param) || ('has' in f.from && f.from.has === param)) this.writeParam(b, node, f);
        }
      },
    };
  }

  /** Every element's counters: packets in and out per port, drops, and its read handlers. */
  stats(): Record<string, ElementStats> {
    const v = this.arena.view;
    const out: Record<string, ElementStats> = {};
    for (const node of this.graph.nodes) {
      const r = this.records[node.index];
      const sum = (off: number) => this.shards.reduce((s, shard) => s + Number(v.getBigUint64(shard.descriptor + off, true)), 0);
      const source = this.sources.find((s) => s.node === node);
      const stats: ElementStats = {
        type: node.type.type,
        in: source ? source.submitted : sum(r.inPackets),
        out: node.type.kind === 'source' ? [source?.submitted ?? 0] : r.outPackets.map(sum),
        unconnected_drops: sum(r.holeDrops),
      };
      const view = this.view(node.name);
      for (const [name, handler] of Object.entries(handlersOf(node.type))) {
        if (handler.read && handler.counter) stats[name] = handler.read(view);
      }
      out[node.name] = stats;
    }
    return out;
  }

  /** Counters of the runtime itself: per shard batches and packets, pool exhaustion. */
  runtimeStats(): Record<string, number> {
    const v = this.arena.view;
    const shard = this.shards[0];
    return {
      shard_batches: Number(v.getBigUint64(shard.context + ShardContext.batches, true)),
      shard_packets: Number(v.getBigUint64(shard.context + ShardContext.packets, true)),
      clone_no_buffer: Number(v.getBigUint64(shard.context + ShardContext.noBuffer, true)),
      pool_exhausted: Number(v.getBigUint64(this.ioContext + IoContext.noSlot, true)),
      ring_full_drops: Number(v.getBigUint64(this.arena.view.getUint32(this.ioContext + IoContext.shards, true) + 16, true)),
    };
  }

  handlerRead(element: string, handler: string): unknown {
    const node = this.graph.byName.get(element);
    if (!node) throw new EnvironmentError(`no element '${element}'`);
    const h = handlersOf(node.type)[handler];
    if (!h?.read) throw new EnvironmentError(`${element} (${node.type.type}) has no read handler '${handler}'`, `its handlers: ${Object.keys(handlersOf(node.type)).join(', ')}`);
    return h.read(this.view(element));
  }

  handlerWrite(element: string, handler: string, value: string): void {
    const node = this.graph.byName.get(element);
    if (!node) throw new EnvironmentError(`no element '${element}'`);
    const h = handlersOf(node.type)[handler];
    if (!h?.write) throw new EnvironmentError(`${element} (${node.type.type}) has no write handler '${handler}'`, `its handlers: ${Object.keys(handlersOf(node.type)).join(', ')}`);
    h.write(this.view(element), value);
  }
}

function readField(v: DataView, addr: number, type: string): bigint {
  switch (type) {
    case 'u64': return v.getBigUint64(addr, true);
    case 'u32': case 'FlowTable': return BigInt(v.getUint32(addr, true));
    case 'i32': return BigInt(v.getInt32(addr, true));
    case 'u16': return BigInt(v.getUint16(addr, true));
    default: return BigInt(v.getUint8(addr));
  }
}

function writeField(v: DataView, addr: number, type: string, value: number | bigint): void {
  switch (type) {
    case 'u64': v.setBigUint64(addr, BigInt(value), true); break;
    case 'u32': v.setUint32(addr, Number(value), true); break;
    case 'i32': v.setInt32(addr, Number(value), true); break;
    case 'u16': v.setUint16(addr, Number(value), true); break;
    default: v.setUint8(addr, Number(value));
  }
}
