// A running pipeline: lays out memory, instantiates the I/O side and starts the shard workers, then
// moves batches between sources, shards and sinks until the sources are done or it is stopped.

import { availableParallelism } from 'node:os';
import { setImmediate as yieldToEventLoop, setTimeout as sleep } from 'node:timers/promises';
import { MAX_SHARDS, type PipelineConfig, type ThreadMode } from './config.ts';
import { buildGraph, reaches, sharesTarget, steeringErrors, steeringPath, type Graph, type GraphNode } from './graph.ts';
import { generateGraph } from './codegen.ts';
import { compileGraph, sourceLocation, type CompiledGraph } from './compile.ts';
import { MemoryArena, MAX_PAGES, PAGE } from './memory.ts';
import { Meta, slotRoom, RingLayout, ENTRY_RECYCLE, ShardContext, BATCH_SCRATCH_BYTES, IoContext, Steering, FragmentArea, OrderWatch, FlowTableLayout, FLOW_ENTRY_LIVE, GraphHeader, nodeRecords, type ElementLayout, type NodeRecord, type LayoutField } from './layout.ts';
import { amount } from './report.ts';
import { expansionOf, clonesOf, setUpBy, paramsReadBy, type DataState, type FlowTableState, type ElementType, type ElementView, type ReloadedElement, type TableEntry, type SinkDriver, type SourceDriver, type IoContext as DriverContext } from './element.ts';
import { ConfigError, ConfigErrors, ElementCodeError, EnvironmentError, StallError } from './errors.ts';
import type { ParamTypeError } from './params.ts';
import { handlersOf } from './handlers.ts';
import { STEERING, STEER_ELEMENT, DECLARATION_HINT, dataInitProblem, elementCodeProblem } from './registry.ts';
import { Shard, Op, wallNanos } from './shard.ts';
import { planBuckets, bucketMoves, BUCKETS, HELD } from './buckets.ts';

/** Longest an idle pipeline sleeps in its sources' wait before it looks at its timers and requests again. */
const IDLE_SLEEP_MS = 50;
/** Idle rounds (about a microsecond each) the I/O side keeps collecting while shards still hold packets. */
const SPIN_WHILE_IN_FLIGHT = 20_000;
/** No packet moved this long while some should: run() fails and says what is stuck, rather than hang. */
const STALL_MS = 10_000;

export interface PipelineOptions {
  /** 'trace' runs the elements' clock on the packets' timestamps (deterministic); 'wall' on real time. */
  clock?: 'trace' | 'wall';
  /**
   * 'worker' runs each shard in a worker thread fed through the rings; 'inline' runs them on the I/O
   * thread, run to completion after each pump (one thread). Both run the same compiled graph over the
   * same rings. 'auto' chooses (threadsFor). Default: the config's `threads`.
   */
  threads?: ThreadMode;
  /** Shards to start with (default: the config's `shards`). */
  shards?: number;
  /** Scale events to start when this many packets have been read (for tests and `wirepath verify`). */
  scaleAt?: { packets: number; shards: number }[];
  /**
   * Compile code made for each element instance's parameters where the element offers it (default
   * true). False runs every instance on its type's generic code: no compile per parameter change.
   */
  specialize?: boolean;
  log?: (message: string) => void;
  /** How long no packet may move while some should before run() fails with what is stuck (default 10 s). */
  stallMs?: number;
  /** Where elements print their lines (Print): 1, standard output (the default), or 2 when stdout carries something else (run --json). */
  printFd?: 1 | 2;
  /**
   * Make the memory resident as it is laid out (default true: MemoryArena.prefaulting). False for a pipeline built while
   * another one runs on this thread (a reload), whose packets would wait for the touch.
   */
  prefault?: boolean;
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
  /** Shards that crashed and were restarted: the element, the packets lost, the snapshot they restarted from. */
  crashes: CrashReport[];
}


const BATCH_HEADER = 8;
/** A flow's key, deadline and steering (a u32, then 4 bytes of 0) ahead of its value in a transfer record (assembly/migrate.ts). */
const TRANSFER_KEY = 32;
const TRANSFER_STEERING = 24;
/** assembly/flowtable.ts STEERED: a record's steering holds the steering hash of the packet that made its entry. */
const STEERED = 0x8000;
const SNAPSHOT_FORMAT = 'wirepath-snapshot/2';
const TRANSFER_BYTES = 4 << 20;
/** assembly/migrate.ts OWNER_FLOW and OWNER_ADDRESS. */
const OWNER = { flow: 0, address: 1 } as const;

const nextPowerOfTwo = (n: number) => 2 ** Math.ceil(Math.log2(Math.max(1, n)));

/**
 * Calls `visit` with the address of each live entry (not past its deadline at `now`) of the flow table at `table`.
 * Deadlines are compared as two words: a BigInt per slot cost more than the rest of the walk.
 */
function eachLiveEntry(v: DataView, table: number, now: bigint, visit: (e: number) => void): void {
  const slots = v.getUint32(table + FlowTableLayout.slots, true), size = v.getUint32(table + FlowTableLayout.entrySize, true);
  const base = v.getUint32(table + FlowTableLayout.entries, true);
  const nowHigh = Number(now >> 32n), nowLow = Number(now & 0xffffffffn);
  for (let i = 0; i < slots; i++) {
    const e = base + i * size;
    if (v.getUint16(e, true) !== FLOW_ENTRY_LIVE) continue;
    const high = v.getUint32(e + FlowTableLayout.entryExpires + 4, true);
    if (high > nowHigh || (high === nowHigh && v.getUint32(e + FlowTableLayout.entryExpires, true) > nowLow)) visit(e);
  }
}

/** Reads an entry's key's four words into `key`. */
function readKey(v: DataView, e: number, key: TableEntry['key']): TableEntry['key'] {
  for (let i = 0; i < 4; i++) key[i] = v.getUint32(e + FlowTableLayout.entryKey + 4 * i, true);
  return key;
}

/** A source of the running pipeline: its driver and how many packets it has submitted. */
interface SourceState { node: GraphNode; driver: SourceDriver; submitted: number }

/** Whether `threads: auto` runs a graph fed by a device on the I/O thread here: on two cores or fewer (Pipeline.threadsFor). */
export const devicesRunInline = (): boolean => availableParallelism() <= 2;

export class Pipeline {
  readonly arena = new MemoryArena();
  readonly graph: Graph;
  private readonly layouts: Map<string, ElementLayout>;
  private readonly records: NodeRecord[];
  private io!: Record<string, any>;
  /** The I/O side's instance of the compiled module (tools and tests call its exports). */
  get fastPath(): Record<string, any> {
    return this.io;
  }
  private ioContext = 0;
  private shards: Shard[] = [];
  /** Shards removed by scaling in: their all-flows state still counts (merged on read). */
  private retired: Shard[] = [];
  private shardRecords = 0;
  private freeStack = 0;
  private buckets = 0;
  private held = 0;
  private fragments = 0;
  /** Some source's packets reach an element that needs first fragments first (IO_STEER's fragment bit). */
  private ordersFragments = false;
  /** Some element has a per-flow table owned by the flow: its entries move with the bucket of the packets that made them. */
  private readonly keepsFlowEntries: boolean;
  private started = false;
  private scaling: Promise<ScaleReport> | undefined;
  readonly scaleReports: ScaleReport[] = [];
  private sources: SourceState[] = [];
  private sinks: { node: GraphNode; driver: SinkDriver; batch: number; written: number }[] = [];
  /** Address of each source and sink node's state block on the I/O side. */
  private ioBlocks = new Map<string, number>();
  private stopRequested = false;
  /** The elements whose state a reloaded pipeline carries on, and that pipeline's element of each name (stop). */
  private handover = new Map<string, ReloadedElement>();
  /** After a reload: the packet counts of the elements it kept, as the configs before this one left them. */
  private countedBefore = new Map<string, Pick<ElementStats, 'in' | 'out' | 'unconnected_drops'>>();
  /** Snapshots waiting for the shards to go idle: the sources wait meanwhile. */
  private quiesce = 0;
  /** A snapshot is reading the shards' state: the run does not end, nor a scale event start, until it has. */
  private readingState = false;
  /** Whether run()'s loop has exited (its shards are stopping), and a promise of the run's end (they have stopped). */
  private loopExited = false;
  private runOver: Promise<void> = Promise.resolve();
  /** The run is over and its shards are told to stop: a wait for them (until) would never end. */
  private shardsStopped = false;
  /** The snapshot being taken, which the next one waits for: they share the transfer buffer and the shards' hold on ticks. */
  private snapshotTurn: Promise<unknown> = Promise.resolve();
  /** The elements of the pipeline this one replaced through a reload (replaces), by name. */
  private readonly predecessor = new Map<string, { type: string; params: any; configFile: string }>();
  /** The elements whose state restore() loaded from a snapshot file. */
  private readonly restoredFromFile = new Set<string>();
  /** Shared data a restored snapshot held that could not be put back (laid out otherwise now), by element and field, until the first periodic call. */
  private readonly unrestored = new Map<string, Map<string, DataView>>();
  private failure: Error | undefined;
  private readonly log: (m: string) => void;
  private readonly clock: 'trace' | 'wall';
  private readonly threads: 'worker' | 'inline';
  /**
   * Packets a source may submit per round. Inline, about 256 (a round costs a few microseconds of
   * JavaScript, and 256 slots just written still sit in the L1 cache when the shard reads them);
   * with a worker, at least 4096: the round's fixed cost and the hand-over to the other core are
   * paid per round (measured: 15 Mpps at 1024 per round, 19 at 4096, batch 256).
   */
  private readonly pumpBudget: number;
  /** Most copies (clonePacket) the graph makes of one packet: the sum of its elements' `clones`. */
  private readonly copiesPerPacket: number;

  private constructor(readonly config: PipelineConfig, graph: Graph, readonly compiled: CompiledGraph, layouts: Map<string, ElementLayout>, options: PipelineOptions) {
    this.graph = graph;
    this.keepsFlowEntries = graph.nodes.some((node) => Object.values(node.type.state ?? {})
      .some((spec) => spec.kind === 'flow-table' && spec.scope === 'per-flow' && spec.owner === 'flow' && (spec.used?.(node.instance.params) ?? true)));
    this.layouts = layouts;
    this.records = nodeRecords(graph);
    this.log = options.log ?? (() => {});
    this.arena.prefaulting = options.prefault ?? true;
    this.clock = options.clock ?? 'trace';
    this.threads = this.threadsFor(options.threads ?? config.threads, graph);
    this.copiesPerPacket = graph.nodes.reduce((sum, n) => sum + clonesOf(n.type, n.instance.params), 0);
    // With copies, a round is as large as the copies of two rounds fit a quarter of the pool.
    const roundWithCopies = Math.floor((config.poolSlots >> 2) / (2 * Math.max(1, this.copiesPerPacket)));
    this.pumpBudget = this.threads === 'inline' ? Math.max(config.batch, 256)
      : Math.max(config.batch, Math.min(Math.max(config.batch * 4, 4096), this.copiesPerPacket ? roundWithCopies : Infinity));
    this.initialShards = options.shards ?? config.shards;
    this.stallMs = options.stallMs ?? STALL_MS;
    this.printFd = options.printFd ?? 1;
    this.scaleAt = [...(options.scaleAt ?? [])].sort((a, b) => a.packets - b.packets);
  }

  private readonly scaleAt: { packets: number; shards: number }[];

  /**
   * `threads: auto` runs shard workers, but a graph fed by a device on two cores or fewer runs on the
   * I/O thread: the kernel's side of the device (its softirqs, the peers on a veth) needs the other
   * core, and a polling worker would take it (bench/veth: 1.1-1.2x against 0.6-0.8x of Linux forwarding).
   */
  private threadsFor(mode: ThreadMode, graph: Graph): 'worker' | 'inline' {
    if (mode !== 'auto') return mode;
    const device = graph.sources.find((n) => n.type.live);
    if (!device || !devicesRunInline()) return 'worker';
    this.log(`shards run on the I/O thread: ${device.name} is a device and the kernel needs one of the ${availableParallelism()} cores (threads: worker to change)`);
    return 'inline';
  }

  private readonly initialShards: number;

  private readonly stallMs: number;

  private readonly printFd: 1 | 2;

  /** The stall watch's marks (watchStalls): when it last looked, when packets last moved, each shard's tail. */
  private stall = { checkedAt: 0, progressAt: 0, collected: 0, shards: new Map<Shard, { tail: number; at: number }>() };

  static async create(config: PipelineConfig, options: PipelineOptions = {}): Promise<Pipeline> {
    const graph = buildGraph(config);
    const generated = generateGraph(graph, { specialize: options.specialize });
    const elementDirs = [...new Set(graph.nodes.map((n) => n.type.dir))];
    const compiled = await compileGraph(generated, elementDirs);
    const pipeline = new Pipeline(config, graph, compiled, generated.layouts, options);
    pipeline.setUp();
    return pipeline;
  }

  private setUp(): void {
    const { config, arena, graph } = this;
    const pool = config.poolSlots;
    const poolBase = arena.alloc(pool * config.slotSize, config.slotSize);
    const freeStack = (this.freeStack = arena.alloc(8 + 4 * pool, 8));
    const view = arena.view;
    view.setUint32(freeStack, pool, true);
    view.setUint32(freeStack + 4, pool, true);
    // Lowest addresses on top, so a short run touches few slots.
    for (let i = 0; i < pool; i++) view.setUint32(freeStack + 8 + 4 * i, poolBase + (pool - 1 - i) * config.slotSize, true);

    this.ioContext = arena.alloc(IoContext.size);
    this.shardRecords = arena.alloc(IoContext.shardRecord * MAX_SHARDS, 8);
    this.buckets = arena.alloc(BUCKETS, 8);
    this.held = arena.alloc(8 + 4 * pool, 8);
    this.u32(this.held + 4, pool);
    const sinkTable = arena.alloc(4 * Math.max(1, graph.sinks.length), 8);
    this.u32(this.ioContext + IoContext.freeStack, freeStack);
    this.u32(this.ioContext + IoContext.shards, this.shardRecords);
    this.u32(this.ioContext + IoContext.buckets, this.buckets);
    this.u32(this.ioContext + IoContext.bucketMask, BUCKETS - 1);
    this.u32(this.ioContext + IoContext.sinks, sinkTable);
    this.u32(this.ioContext + IoContext.slotSize, config.slotSize);
    this.u32(this.ioContext + IoContext.held, this.held);
    this.fragments = arena.alloc(FragmentArea.size, 64);
    arena.u8.fill(0, this.fragments, this.fragments + FragmentArea.size);
    this.u32(this.ioContext + IoContext.fragments, this.fragments);
    this.order = this.orderWatchArea(poolBase);
    this.u32(this.ioContext + IoContext.order, this.order);
    const shardCount = this.initialShards;
    if (shardCount > 1) this.checkSteering();
    for (let s = 0; s < shardCount; s++) this.shards.push(this.createShard(s));
    this.writeSteering();
    this.setBuckets(planBuckets(new Uint8Array(BUCKETS), 0, shardCount));
    this.setShardCount(shardCount);
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

  /** Lays out the area where scale events watch the order of moving buckets' packets (assembly/order.ts). */
  private orderWatchArea(poolBase: number): number {
    const { arena, config } = this;
    const takenAt = OrderWatch.watchAt + BUCKETS;
    const stampsAt = takenAt + 4 * BUCKETS;
    const area = arena.alloc(stampsAt + 4 * config.poolSlots, 64);
    arena.u8.fill(0, area, area + stampsAt + 4 * config.poolSlots);
    this.u32(area + OrderWatch.poolBase, poolBase);
    this.u32(area + OrderWatch.slotShift, Math.log2(config.slotSize));
    this.u32(area + OrderWatch.bucketMask, BUCKETS - 1);
    this.u32(area + OrderWatch.takenAt, takenAt);
    this.u32(area + OrderWatch.stampsAt, stampsAt);
    return area;
  }

  /**
   * Starts watching the order of the packets of `buckets`: from now on the dispatcher stamps them and
   * every shard checks the stamps as it takes them (assembly/order.ts).
   */
  private watchOrder(buckets: number[]): void {
    for (const b of buckets) this.arena.u8[this.order + OrderWatch.watchAt + b] = 1;
    Atomics.store(this.arena.i32, (this.order + OrderWatch.watching) >>> 2, 1);
  }

  /**
   * Stops watching, once every shard has finished the receive round it may have begun while watching;
   * returns how many packets were checked and how many were taken out of order, and clears the area.
   */
  private async endOrderWatch(): Promise<{ checked: number; reordered: number }> {
    Atomics.store(this.arena.i32, (this.order + OrderWatch.watching) >>> 2, 0);
    const heads = this.shards.map((s) => s.head('rx'));
    await this.until(() => this.shards.every((s, i) => s.passed('rx', heads[i])), () => this.publish());
    const v = this.arena.view;
    const result = { checked: v.getUint32(this.order + OrderWatch.checked, true), reordered: Number(v.getBigUint64(this.order + OrderWatch.reordered, true)) };
    const takenAt = this.order + v.getUint32(this.order + OrderWatch.takenAt, true);
    this.arena.u8.fill(0, this.order + OrderWatch.checked, this.order + OrderWatch.reordered + 8);
    this.arena.u8.fill(0, this.order + OrderWatch.watchAt, takenAt + 4 * BUCKETS + 4 * this.config.poolSlots);
    return result;
  }

  /** The most memory one shard took (createShard), with room for alignment: what each more shard needs. */
  private shardBytes = 0;
  /** Memory taken by config data, which the shards share (the first shard's createShard makes it). */
  private sharedBytes = 0;

  /** Lays out a shard's memory and registers it with the I/O side (its thread starts in start()). */
  private createShard(id: number): Shard {
    const { arena, config } = this;
    const before = arena.used - this.sharedBytes;
    const ringCapacity = nextPowerOfTwo(config.poolSlots);
    const stashCapacity = this.stashCapacity();
    const rxRing = this.ring(ringCapacity);
    const outRing = this.ring(ringCapacity);
    const stash = arena.alloc(8 + 4 * stashCapacity, 8);
    this.u32(stash + 4, stashCapacity);
    const context = arena.alloc(ShardContext.size);
    this.u32(context + ShardContext.rxRing, rxRing);
    this.u32(context + ShardContext.outRing, outRing);
    // Inline, the shard runs on the I/O thread, so it frees into and copies from the pool's own free
    // stack: no slot travels back through the out ring.
    this.u32(context + ShardContext.stash, this.threads === 'inline' ? this.freeStack : stash);
    this.u32(context + ShardContext.slotSize, config.slotSize);
    this.u32(context + ShardContext.scratch, arena.alloc(BATCH_SCRATCH_BYTES));
    this.u32(context + ShardContext.order, this.order);
    this.u32(context + ShardContext.index, id);
    const record = this.shardRecords + id * IoContext.shardRecord;
    arena.u8.fill(0, record, record + IoContext.shardRecord);
    this.u32(record, rxRing);
    this.u32(record + 4, outRing);
    this.u32(record + 8, stash);
    const { descriptor, blocks } = this.layOutGraph();
    this.u32(context + ShardContext.graph, descriptor);
    this.shardBytes = Math.max(this.shardBytes, arena.used - this.sharedBytes - before + PAGE);
    return new Shard(id, { context, descriptor, rxRing, outRing, stash, blocks }, arena);
  }

  /**
   * The shard of index `id` again, on the memory of the retired one of that index (undefined when there is none), so
   * that scaling out and in again and again does not grow the memory until it is refused. It goes on from what that one
   * left: its counters, its cross-flow entries (which the shards' totals already add up) and its rings' places; its
   * per-flow entries moved away when it retired.
   */
  private revive(id: number): Shard | undefined {
    const at = this.retired.findIndex((s) => s.id === id);
    if (at < 0) return undefined;
    const [old] = this.retired.splice(at, 1);
    // Its receive ring as the I/O side left it: retire() took everything up to the I/O side's head, published or not.
    const head = this.arena.view.getUint32(this.shardRecords + id * IoContext.shardRecord + 12, true);
    Atomics.store(this.arena.i32, (old.memory.rxRing + RingLayout.head) >>> 2, head);
    // A worker that trapped in its last step (its crash unheard once it was stopping) left its batch: not taken up again.
    for (const b of this.batchesOf(old)) this.arena.view.setUint32(b, 0, true);
    const shard = new Shard(id, old.memory, this.arena);
    const parts = this.lastSnapshotParts.get(old);
    if (parts) this.lastSnapshotParts.set(shard, parts);
    return shard;
  }

  /**
   * A shard's clone stash holds the copies of two I/O rounds (the I/O side refills it once a round),
   * and never more than a quarter of the pool, so that sources always find slots.
   */
  private stashCapacity(): number {
    return Math.min(this.config.poolSlots >> 2, Math.max(64, 2 * this.pumpBudget * this.copiesPerPacket));
  }

  /**
   * Tells the I/O side how many shards there are (the first `count` of this.shards), and gives their clone
   * stashes at most three quarters of the pool between them, so that sources always find slots.
   */
  private setShardCount(count: number): void {
    this.u32(this.ioContext + IoContext.shardCount, count);
    const share = Math.min(this.stashCapacity(), Math.floor((this.config.poolSlots * 3) / 4 / count));
    for (const shard of this.shards.slice(0, count)) this.u32(shard.memory.stash + 4, share);
  }

  /** Starts the shard's thread; resolves when it is ready for batches. */
  private async startShard(shard: Shard): Promise<void> {
    shard.onCrash = (error) => this.recover(shard, error);
    if (this.threads === 'inline') shard.startInline(this.compiled.module, { env: this.imports() });
    else await shard.startWorker(this.compiled.module, this.config.batch, this.clock, this.onRealTime());
  }

  /**
   * Writes the bucket table (a shard number, or HELD, per bucket) and turns steering on when needed: also while a
   * move's order is watched, which needs every packet stamped and hashed on its way (a single shard takes them
   * unsteered). While some element keeps per-flow entries, which record the steering hash of the packet that made
   * them, unsteered packets are hashed too.
   */
  private setBuckets(assignment: Uint8Array): void {
    this.arena.u8.set(assignment, this.buckets);
    const watching = Atomics.load(this.arena.i32, (this.order + OrderWatch.watching) >>> 2) !== 0;
    const steer = this.shards.length > 1 || watching || assignment.some((b) => b !== 0);
    this.u32(this.ioContext + IoContext.steer, (steer ? Steering.buckets : 0) | (this.ordersFragments ? Steering.fragments : 0)
      | (this.keepsFlowEntries ? Steering.hash : 0));
  }

  /** Each bucket's owner, during a move too: a held bucket's is the one its packets will be released to. */
  private ownerTable(): Uint8Array {
    const table = this.bucketTable();
    if (table.includes(HELD)) table.forEach((owner, b) => { if (owner === HELD) table[b] = this.arena.u8[this.releaseMap + b]; });
    return table;
  }

  private bucketTable(): Uint8Array {
    return this.arena.u8.slice(this.buckets, this.buckets + BUCKETS);
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
    // No room: every push to it is a misrouted packet, counted and dropped at once (assembly/shard.ts dropFull).
    this.u32(descriptor + GraphHeader.misrouted, this.arena.alloc(BATCH_HEADER, 8));
    const inputBatches = graph.nodes.map((node) => node.inputCapacity.map((capacity) => this.batch(capacity)));
    const blocks = graph.nodes.map((node) => {
      const r = records[node.index];
      inputBatches[node.index].forEach((b, port) => this.u32(descriptor + r.inputs[port], b));
      this.u32(descriptor + r.outputCount, node.outputs.length);
      const shared = sharesTarget(node);
      const received = node.inputCapacity.reduce((a, b) => a + b, 0) * expansionOf(node.type, node.instance.params);
      node.targets.forEach((t, port) => {
        const target = t ? inputBatches[graph.byName.get(t.node)!.index][t.port] : hole;
        this.u32(descriptor + r.forwards[port], target);
        this.u32(descriptor + r.outputs[port], shared[port] ? this.batch(received) : target);
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

  /** Per source, its steering mode, and for sources steered by an element that element's block on shard 0. */
  private writeSteering(): void {
    const sources = this.graph.sources;
    const modes = this.arena.alloc(Math.max(8, sources.length), 8);
    const blocks = this.arena.alloc(Math.max(8, sources.length * 4), 8);
    for (const source of sources) {
      const steer = String(source.instance.params.steer ?? 'flow');
      const by = this.graph.byName.get(steer);
      const ordered = reaches(this.graph, source, (n) => n.type.firstFragmentFirst === true);
      this.ordersFragments ||= ordered;
      this.arena.u8[modes + source.sourceId] = (by ? STEER_ELEMENT : STEERING.indexOf(steer as (typeof STEERING)[number])) | (ordered ? Steering.orderFragments : 0);
      if (by) this.u32(blocks + source.sourceId * 4, this.shards[0].memory.blocks[by.index]);
    }
    this.u32(this.ioContext + IoContext.sourceSteering, modes);
    this.u32(this.ioContext + IoContext.steeringState, blocks);
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
    const used = this.arena.used;
    const address = this.arena.alloc(Math.max(size, 8), 64);
    this.sharedBytes += this.arena.used - used;
    try {
      spec.init(node.instance.params, new DataView(this.arena.memory.buffer, address, size), address);
    } catch (e) {
      throw new ConfigErrors([new ConfigError(`${node.name} (${node.type.type}): ${dataInitProblem(node.type, name, e)}`, node.instance.position, DECLARATION_HINT)]);
    }
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

  /**
   * Opens the sources that read files (a reload does so before it takes over, so that one that cannot be opened
   * changes nothing); devices open at start, so that a new pipeline's socket takes no frame the running one also forwards.
   */
  openFileSources(): void {
    this.openSources((node) => !node.type.live);
  }

  /** Runs the elements' checks of what they will open (ElementDefinition.check): before a reload takes over. */
  checkOpenable(): void {
    const slots = slotRoom(this.config.slotSize);
    for (const node of this.graph.nodes) atElement(node, () => node.type.check?.({ name: node.name, params: node.instance.params, slotRoom: slots, configFile: this.config.file }));
  }

  /** Closes the sources opened so far, of a pipeline that will not run (a reload refused or abandoned). */
  closeSources(): void {
    for (const s of this.sources) s.driver.close();
    this.sources = [];
  }

  private openSources(which: (node: GraphNode) => boolean): void {
    const opened: SourceState[] = [];
    try {
      for (const node of this.graph.sources) {
        if (!which(node) || this.sources.some((s) => s.node === node)) continue;
        opened.push({ node, driver: atElement(node, () => node.type.source!(this.driverContext(node, node.sourceId))), submitted: 0 });
      }
    } catch (e) {
      for (const s of opened) s.driver.close();
      throw e;
    }
    // In the graph's order of sources, whichever opened first: the source numbers index them.
    this.sources = [...this.sources, ...opened].sort((a, b) => a.node.sourceId - b.node.sourceId);
  }

  async start(): Promise<void> {
    this.openSources(() => true);
    for (const sink of this.sinks) sink.driver = atElement(sink.node, () => sink.node.type.sink!(this.driverContext(sink.node, sink.node.sinkId)));
    await Promise.all(this.shards.map((shard) => this.startShard(shard)));
    this.started = true;
    this.arena.prefaulting = false;
    this.warnIfOversubscribed(this.shards.length);
  }

  /** Says so when polling shard workers and the I/O thread outnumber the cores (spike §3: they only share them). */
  private warnIfOversubscribed(shards: number): void {
    const cores = availableParallelism();
    if (this.threads !== 'worker' || shards + 1 <= cores) return;
    this.log(`${shards} shard worker${shards > 1 ? 's' : ''} and the I/O thread poll on ${cores} core${cores > 1 ? 's' : ''}: they take turns and each `
      + `runs a fraction of the time (bench/shards: two workers on two cores ran at 0.15x one); ${Math.max(1, cores - 1)} shard${cores > 2 ? 's' : ''} `
      + `or threads: inline keep to the cores`);
  }

  private driverContext(node: GraphNode, port: number): DriverContext {
    return {
      name: node.name, params: node.instance.params, exports: this.io, arena: this.arena,
      self: this.ioBlocks.get(node.name)!, port, configFile: this.config.file, slotRoom: slotRoom(this.config.slotSize),
      fieldOffset: (field) => {
        const f = this.layouts.get(node.type.type)!.fields.find((x) => x.name === field);
        if (!f) throw new Error(`${node.type.type} has no layout field '${field}'`);
        return f.offset;
      },
      log: (m) => this.log(`${node.name}: ${m}`),
      printFd: this.printFd,
      previous: this.previousOf(node),
      live: this.graph.sources.some((source) => source.type.live),
    };
  }

  /** The element of the node's name and type in the config this pipeline replaced (a reload). */
  private previousOf(node: GraphNode): ReloadedElement | undefined {
    const before = this.predecessor.get(node.name);
    return before?.type === node.type.type ? before : undefined;
  }

  /**
   * Asks the pipeline to stop: sources stop reading, packets in flight are finished and written. `handover`: the
   * elements whose state a reloaded pipeline carries on (carriedInto).
   */
  stop(handover = new Map<string, ReloadedElement>()): void {
    this.handover = handover;
    this.stopRequested = true;
  }

  /** Runs until every source is done (or stop() is called); returns the final counters. */
  async run(onTick?: (p: Pipeline) => void): Promise<RunResult> {
    let ended = () => {};
    this.runOver = new Promise((resolve) => { ended = resolve; });
    try {
      return await this.runUntilDone(onTick);
    } finally {
      this.loopExited = true;
      ended();
    }
  }

  private async runUntilDone(onTick?: (p: Pipeline) => void): Promise<RunResult> {
    const started = performance.now();
    await this.start();
    let lastYield = performance.now();
    let lastTick = lastYield;
    let idleRounds = 0;
    let firstPacketAt = 0;
    let finishedAt = 0;
    const begun = performance.now();
    this.stall = { checkedAt: begun, progressAt: begun, collected: 0, shards: new Map() };
    let failed: unknown;
    try {
      // Once before the first packet, so that periodic tasks see the state as start (or a snapshot) left it.
      this.runPeriodic(false);
      this.unrestored.clear();
      for (;;) {
        if (this.failure) throw this.failure;
        for (const shard of this.shards) if (shard.failed) throw shard.failed;
        let moved = 0;
        if (this.threads === 'worker') this.io.ioTopUpStashes();
        // A source that an error ended (a corrupt capture) stops them all: what was read before it drains, then the run fails.
        const sourceFailed = this.sources.some((s) => s.driver.failure);
        if (!this.stopRequested && !sourceFailed && !this.quiesce && !this.stashCouldRunDry()) {
          for (const source of this.sources) {
            if (source.driver.done) continue;
            // Planned scale events (verify, tests) each come at their packet count: a fast source waits there
            // until the previous event is under way, rather than running to its end while they queue up.
            const budget = this.scaleAt.length ? Math.min(this.pumpBudget, this.scaleAt[0].packets - this.packetsIn()) : this.pumpBudget;
            if (budget <= 0) continue;
            const n = source.driver.pump(budget);
            source.submitted += n;
            moved += n;
            if (n && !firstPacketAt) firstPacketAt = performance.now();
          }
        }
        if (this.ordersFragments) this.io.ioReleaseFragments(false);
        this.publish();
        this.runInline();
        const out = this.collect();
        moved += out;
        this.stall.collected += out;
        this.runPeriodic(false);
        if (this.scaleAt.length && !this.scaling && !this.readingState && !this.stopRequested && this.packetsIn() >= this.scaleAt[0].packets) {
          this.scale(this.scaleAt.shift()!.shards).catch((e) => { this.failure ??= e; });
        }
        const sourcesDone = this.stopRequested || sourceFailed || this.sources.every((s) => s.driver.done);
        if (sourcesDone && !this.scaling && !this.readingState && this.heldCount() === 0 && this.shardsIdle()) {
          // Later fragments still waiting for a first that will not come go on as they are.
          if (this.ordersFragments && this.io.ioReleaseFragments(true) > 0) { this.publish(); continue; }
          this.collect();
          if (this.shardsIdle()) { finishedAt = performance.now(); break; }
        }
        const now = performance.now();
        this.watchStalls(now);
        // The live line, whether rounds are busy or wait (a paced source, a quiet device).
        if (now - lastTick > 50) {
          onTick?.(this);
          lastTick = now;
        }
        if (moved === 0) {
          idleRounds++;
          const wait = Math.min(...this.sources.map((s) => (s.driver.done ? Infinity : s.driver.waitNs?.() ?? 0)));
          // Live sources (devices) wait in the kernel when idle. While shard workers still hold their packets,
          // the I/O side keeps collecting (the output is due in microseconds) rather than sleep a timer's
          // millisecond; file sources keep the timer, so that the I/O thread leaves the cores to the shards.
          const live = this.sources.filter((s) => !s.driver.done);
          const waitsInKernel = wait === 0 && live.length > 0 && live.every((s) => s.driver.idle);
          const inFlight = this.threads === 'worker' && !this.shardsIdle();
          if (wait > 0 || (idleRounds > 50 && !(waitsInKernel && inFlight && idleRounds < SPIN_WHILE_IN_FLIGHT))) {
            if (waitsInKernel && !this.scaling && !inFlight) {
              // Nothing in flight: sleep in the sources' own wait (a device's poll), woken by the next packet.
              live[0].driver.idle!(IDLE_SLEEP_MS);
              await yieldToEventLoop();
            } else {
              await new Promise((r) => setTimeout(r, Math.max(0, Math.min(10, (Number.isFinite(wait) ? wait : 1e6) / 1e6))));
            }
            lastYield = performance.now();
          }
        } else {
          idleRounds = 0;
          if (now - lastYield > (this.scaling ? 0 : 50)) {
            await yieldToEventLoop();
            lastYield = performance.now();
          }
        }
      }
      const ended = this.sources.find((s) => s.driver.failure);
      if (ended) throw ended.driver.failure;
    } catch (e) {
      failed = e;
    } finally {
      this.loopExited = true;
      await this.shutdown();
    }
    this.logElementMistakes();
    // A shard that crashed lost the packets it held, which its report says.
    if (!failed && !this.crashReports.length) this.logLostSlots();
    const wall = (performance.now() - started) / 1000;
    const packetsIn = this.sources.reduce((s, x) => s + x.submitted, 0);
    const result: RunResult = {
      packets_in: packetsIn,
      packets_out: this.sinks.reduce((s, x) => s + x.written, 0),
      wall_seconds: wall,
      packets_per_second: wall > 0 ? packetsIn / wall : 0,
      first_packet_ms: firstPacketAt,
      busy_seconds: firstPacketAt && finishedAt ? (finishedAt - firstPacketAt) / 1000 : 0,
      interrupted: this.stopRequested,
      elements: this.stats(),
      crashes: this.crashReports,
    };
    // Else a scale event refused just as the sources ended (its promise settles after the last round).
    failed ??= this.failure;
    if (failed) throw withResult(failed, result);
    return result;
  }

  /** Packets the runtime dropped for an element's mistake, said once at the end (the runtime's counters have them too). */
  private logElementMistakes(): void {
    const total = (counter: 'overrun' | 'resteered_again') => [...this.shards, ...this.retired].reduce((n, s) => n + s.counters()[counter], 0);
    const overrun = total('overrun'), again = total('resteered_again');
    if (overrun) this.log(`${overrun} packets dropped: an element pushed them to an output whose batch was full, sending more packets to one output than it received; declare \`expands\` in its element.ts`);
    const overlong = Number(this.arena.view.getBigUint64(this.ioContext + IoContext.overlong, true));
    if (overlong) this.log(`${amount(overlong, 'packet')} not given to a sink: an element made its length run past its slot (the bytes there are other packets'); check packetRoom(p) before growing a frame`);
    if (again) this.log(`${again} packets dropped: an element handed them back to the dispatcher (resteer) a second time; check PACKET_RESTEERED in flags before resteer`);
    const misrouted = [...this.shards, ...this.retired].map((s) => s.counters()).filter((c) => c.misrouted);
    if (misrouted.length) {
      const node = this.graph.nodes[misrouted[misrouted.length - 1].misrouted_by - 1];
      const total = misrouted.reduce((n, c) => n + c.misrouted, 0);
      this.log(`${total} packets dropped: ${node ? `${node.name} (${node.type.type}, ${node.outputs.length} output${node.outputs.length === 1 ? '' : 's'})` : 'an element'} pushed them to an output it does not have`);
    }
  }

  /**
   * Slots that did not come back by the end of a run, beyond those elements say they hold (ARPQuerier's waiting
   * packets): packets an element neither pushed on nor dropped. Said once, with the elements that passed on fewer
   * packets than they took. And slots given back twice: packets an element handed on twice.
   */
  private logLostSlots(): void {
    const v = this.arena.view;
    const stacks = [this.freeStack, ...(this.threads === 'inline' ? [] : this.shards.map((s) => s.memory.stash))];
    const free = new Set<number>();
    let given = 0;
    for (const stack of stacks) {
      for (const slot of this.stackSlots(stack)) free.add(slot);
      given += v.getUint32(stack, true);
    }
    if (given > free.size) {
      const over = this.overElements();
      this.log(`${amount(given - free.size, 'packet slot')} came back more than once: an element handed a packet on twice (pushed it to two outputs, `
        + 'or dropped it and pushed it too), so packets shared a slot and were lost or overwritten; hand each packet on once (a copy is '
        + `clonePacket(p))${over.length ? `; these passed on more packets than they took: ${over.join(', ')}` : ''}`);
    }
    const holding = this.graph.nodes.reduce((n, node) => n + (node.type.holding?.(this.view(node.name)) ?? 0), 0);
    const lost = this.config.poolSlots - free.size - this.heldCount() - holding;
    if (lost <= 0) return;
    this.log(`${lost} packets were neither sent on nor dropped: an element must push (out.push) or drop (dropPacket) every packet it `
      + `receives, or its slot is lost for the rest of the run; these passed on fewer packets than they took: ${this.shortElements().join(', ')}`);
  }

  /** The elements that make no packets (no `clones`) and passed on more than they took, each with its counts. */
  private overElements(): string[] {
    return this.elementCounts().filter((e) => e.out > e.in && !clonesOf(e.n.type, e.n.instance.params)).map((e) => `'${e.n.name}' (${e.n.type.type}) ${e.in} in, ${e.out} out`);
  }

  /** The elements that passed on fewer packets than they took (those that drop packets are among them), each with its counts. */
  private shortElements(): string[] {
    return this.elementCounts().filter((e) => e.in > e.out).map((e) => `'${e.n.name}' (${e.n.type.type}) ${e.in} in, ${e.out} out`);
  }

  /** Each element with outputs (not sources and sinks): the packets it took and the packets it passed on. */
  private elementCounts(): { n: GraphNode; in: number; out: number }[] {
    const stats = this.stats();
    return this.graph.nodes.filter((n) => n.type.kind === 'element' && n.outputs.length > 0)
      .map((n) => ({ n, in: stats[n.name].in, out: stats[n.name].out.reduce((a, b) => a + b, 0) }));
  }

  /**
   * Copies come from a shard's stash, refilled once a round: a graph that copies must not get more
   * than a round ahead of a shard, or the copies of the queued rounds would not fit.
   */
  private stashCouldRunDry(): boolean {
    return this.copiesPerPacket > 0 && this.threads === 'worker'
      && this.shards.some((s) => ((s.head('rx') - s.tail('rx')) | 0) >= this.pumpBudget);
  }

  /** Inline mode: each shard takes everything in its ring, on this thread. */
  private runInline(): void {
    if (this.threads !== 'inline') return;
    const time = this.clock === 'wall' ? wallNanos() : 0n;
    const ticks = this.onRealTime() && !this.quiesce;
    for (const shard of this.shards) shard.runInline(this.config.batch, time, this.clock, ticks);
  }

  /** The elements' clock is real time, and shards without packets tick: the wall clock's, or a trace fed only by live sources (devices). */
  private onRealTime(): boolean {
    return this.clock === 'wall' || this.graph.sources.every((source) => source.type.live);
  }

  private heldCount(): number {
    return this.arena.view.getUint32(this.held, true);
  }

  private publish(): void {
    const sleeping = this.io.ioPublish();
    if (!sleeping) return;
    this.shards.forEach((shard, s) => {
      if (sleeping & (1 << s)) shard.wake();
    });
  }

  private collect(): number {
    const toSinks = this.io.ioCollect();
    if (toSinks === 0) return 0;
    for (const sink of this.sinks) {
      const count = this.arena.view.getUint32(sink.batch, true);
      if (count === 0) continue;
      sink.written += sink.driver.write(sink.batch);
    }
    return toSinks;
  }

  private readonly periodicLast = new Map<string, number>();

  /** Runs the elements' periodic tasks that are due (every one of them when `final`: the run ends). */
  private runPeriodic(final: boolean): void {
    const now = performance.now();
    for (const node of this.graph.nodes) {
      const task = node.type.periodic;
      if (!task) continue;
      if (!final && now - (this.periodicLast.get(node.name) ?? 0) < task.everyMs) continue;
      this.periodicLast.set(node.name, now);
      const call = !final ? 'due' : this.handover.has(node.name) ? 'handover' : 'end';
      try {
        task.run(this.view(node.name), call);
      } catch (e) {
        // A file or device says what to do itself (a NAT's log it cannot write); else the element's code is at fault.
        if (e instanceof EnvironmentError) throw e;
        throw new ElementCodeError(`${node.name} (${node.type.type}): ${elementCodeProblem(node.type, `periodic.run(view, '${call}')`, e)}`);
      }
    }
  }

  /** True when every shard has finished every batch it was given and sent nothing not yet collected. */
  private shardsIdle(): boolean {
    return this.shards.every((s) => s.idle());
  }

  /**
   * The stall watch, every quarter of the stall time (at most a second): run() fails when a shard has packets
   * waiting and takes none for the stall time, or when packets should move (shouldMove) and none did. Progress
   * is a shard taking packets or sending some out. After the I/O thread itself was away (a paused process),
   * nothing is judged until the shards have had their time.
   */
  private watchStalls(now: number): void {
    const watch = this.stall;
    const every = Math.min(1000, this.stallMs / 4);
    if (now - watch.checkedAt < every) return;
    const away = now - watch.checkedAt > 3 * every;
    watch.checkedAt = now;
    let moved = watch.collected > 0;
    watch.collected = 0;
    const seen = watch.shards;
    watch.shards = new Map();
    for (const shard of this.shards) {
      const tail = shard.tail('rx');
      const before = seen.get(shard);
      if (away || !before || before.tail !== tail || shard.head('rx') === tail) {
        moved ||= before?.tail !== tail;
        watch.shards.set(shard, { tail, at: now });
      } else {
        watch.shards.set(shard, before);
        if (now - before.at >= this.stallMs) throw new StallError(this.stuckShardReport(shard, now - before.at));
      }
    }
    if (away || moved || !this.shouldMove()) watch.progressAt = now;
    else if (now - watch.progressAt >= this.stallMs) throw new StallError(this.missingSlotsReport(now - watch.progressAt));
  }

  /**
   * Whether packets should be moving: a shard has some to take or to give back, packets are held while no
   * move goes on, or a source that reads a file is not done and not waiting for its next packet's time (it
   * may be waiting for slots). Devices may be idle; while shards scale, held packets may fill the pool.
   */
  private shouldMove(): boolean {
    if (!this.shardsIdle()) return true;
    if (this.scaling || this.stopRequested) return false;
    return this.heldCount() > 0 || this.sources.some((s) => !s.driver.done && !s.node.type.live && !(s.driver.waitNs?.() ?? 0));
  }

  private stuckShardReport(shard: Shard, ms: number): string {
    const node = this.graph.nodes[this.arena.view.getUint32(shard.memory.descriptor + GraphHeader.running, true)];
    // The ring also carries the free slots that refill the shard's clone stash: only packets count as waiting.
    const v = this.arena.view;
    const ring = shard.memory.rxRing;
    const mask = v.getUint32(ring + RingLayout.mask, true);
    let waiting = 0;
    for (let i = shard.tail('rx'); i !== shard.head('rx'); i = (i + 1) >>> 0) {
      if (!(v.getUint32(ring + RingLayout.entries + 4 * (i & mask), true) & ENTRY_RECYCLE)) waiting++;
    }
    return `shard ${shard.id} has taken no packet for ${(ms / 1000).toFixed(0)} s, ${amount(waiting, 'packet')} waiting; `
      + `the last element it ran is '${node.name}' (${node.type.type}): an element whose process never returns?`;
  }

  private missingSlotsReport(ms: number): string {
    const held = this.heldCount();
    const why = held ? `${held} packets are held for a bucket move that is not going on` : 'a source waits for packet slots';
    const report = `no packet has moved for ${(ms / 1000).toFixed(0)} s while ${why}: ${this.arena.view.getUint32(this.freeStack, true)} of `
      + `${this.config.poolSlots} slots are free and no shard holds packets`;
    // A packet an element neither pushes nor drops keeps its slot for good: name those that passed on fewer than they took.
    const short = this.shortElements();
    if (!short.length) return `${report}. A bug in wirepath: please report it with the config`;
    return `${report}. Slots are lost when an element neither pushes nor drops (dropPacket) a packet it received; these passed on `
      + `fewer packets than they took: ${short.join(', ')}`;
  }

  /**
   * Waits, yielding to the event loop, until `done()`; `poke` runs each round (to wake or collect). Once the shards
   * have stopped nothing will come: the wait (a scale event's) ends with an error, not in a loop that keeps the process.
   */
  private async until(done: () => boolean, poke: () => void): Promise<void> {
    while (!done()) {
      if (this.shardsStopped) throw new Error('the pipeline stopped while shards were being changed');
      poke();
      await new Promise((r) => setImmediate(r));
    }
  }

  private async shutdown(): Promise<void> {
    // A scale event that outlives the stall time is stuck itself (a run that failed may have left it so).
    if (this.scaling) await Promise.race([this.scaling.catch(() => undefined), sleep(this.stallMs, undefined, { ref: false })]);
    this.shardsStopped = true;
    await Promise.all(this.shards.map((shard) => shard.stop()));
    // What a shard's last tick sent (a NAT's answer) after the loop's last collect.
    this.collect();
    // A final task that fails fails the run, which still closes its sources and sinks and shows its counters.
    try {
      this.runPeriodic(true);
    } catch (e) {
      this.failure ??= e as Error;
    }
    for (const s of this.sources) s.driver.close(this.handover.get(s.node.name));
    for (const s of this.sinks) s.driver?.close();
  }

  /** The flow tables of every element on a shard, with what decides their entries' shard. */
  private tablesOf(shard: Shard): { node: string; name: string; scope: 'per-flow' | 'cross-flow'; owner: 'flow' | 'address'; merges: boolean; address: number; recordSize: number }[] {
    const v = this.arena.view;
    return this.graph.nodes.flatMap((node) => Object.entries(node.type.state ?? {}).flatMap(([name, spec]) => {
      if (spec.kind !== 'flow-table') return [];
      const field = this.layouts.get(node.type.type)!.fields.find((f) => f.name === name)!;
      const address = v.getUint32(shard.memory.blocks[node.index] + field.offset, true);
      const entrySize = v.getUint32(address + FlowTableLayout.entrySize, true);
      return [{ node: node.name, name, scope: spec.scope, owner: spec.owner, merges: spec.merges, address, recordSize: TRANSFER_KEY + entrySize - FlowTableLayout.entryValue }];
    }));
  }

  private transfer = 0;
  /** The area where scale events watch the order of moving buckets' packets. */
  private order = 0;
  /** The buckets of the group being moved (moveFlows), one byte each. */
  private moveMap = 0;
  /** While a group of buckets moves: the shard each held packet goes to, by bucket (the arena never frees: made once). */
  private releaseMap = 0;

  private transferBuffer(): number {
    this.transfer ||= this.arena.alloc(TRANSFER_BYTES, 64);
    return this.transfer;
  }

  /**
   * Changes the number of shards while traffic flows. Buckets move between shards one (from, to)
   * group at a time: their packets are held, the old owner finishes what it was given, exports the
   * groups' per-flow state on its own thread, the new owner imports it on its own, and the held
   * packets are released in arrival order. No packet is dropped and no flow is reordered.
   */
  async scale(target: number): Promise<ScaleReport> {
    if (!Number.isInteger(target) || target < 1 || target > MAX_SHARDS) throw new RangeError(`shard count must be a whole number from 1 to ${MAX_SHARDS}`);
    if (!this.started) throw new Error('the pipeline is not running (a reload may be putting its new config in place): try again in a moment');
    if (this.stopRequested || this.loopExited) throw new Error('the pipeline is stopping (stopped, or a reload takes its place): there is nothing to scale');
    const refused = this.refusesScale?.();
    if (refused) throw new Error(refused);
    if (this.scaling) throw new Error('a scale event is already in progress');
    if (this.readingState) throw new Error('a snapshot is being taken: scale once it is written');
    if (target > 1) this.checkSteering();
    this.scaling = this.moveToShards(target);
    try {
      const report = await this.scaling;
      this.scaleReports.push(report);
      if (report.to > report.from) this.warnIfOversubscribed(report.to);
      this.log(`scaled ${report.from} -> ${report.to} shards: ${report.buckets_moved} buckets, ${report.flows_moved} flows moved in ${report.milliseconds.toFixed(1)} ms`
        + `${report.flows_not_moved ? ` (${report.flows_not_moved} not: the new owners' tables were full, and those flows start afresh)` : ''}, `
        + `${report.packets_held} packets held, ${report.packets_lost} lost, ${report.packets_reordered} of ${report.packets_checked} checked reordered`);
      return report;
    } finally {
      this.scaling = undefined;
    }
  }

  /** More than one shard needs address-owned state, and state keyed by an element's steering, fed by sources that steer so (steeringErrors). */
  private checkSteering(): void {
    const errors = steeringErrors(this.graph);
    if (errors.length) throw new ConfigErrors(errors);
  }

  /** Packets dropped so far: by full shard rings, and by sources that found no free slot (ioDroppedNoSlot). */
  private lostSoFar(): number {
    const v = this.arena.view;
    const ringFull = this.shards.reduce((sum, s) => sum + Number(v.getBigUint64(this.shardRecords + s.id * IoContext.shardRecord + 16, true)), 0);
    return ringFull + Number(v.getBigUint64(this.ioContext + IoContext.noSlot, true));
  }

  private async moveToShards(target: number): Promise<ScaleReport> {
    const started = performance.now();
    const from = this.shards.length;
    const lostBefore = this.lostSoFar();
    // A scale event that cannot have the memory it needs changes nothing: the moves' buffers first, then the new shards'.
    this.transferBuffer();
    this.moveMap ||= this.arena.alloc(BUCKETS, 8);
    this.releaseMap ||= this.arena.alloc(BUCKETS, 8);
    const ids = Array.from({ length: Math.max(0, target - from) }, (_, i) => from + i);
    const fresh = ids.filter((id) => !this.retired.some((s) => s.id === id));
    const need = this.arena.used + fresh.length * this.shardBytes;
    if (need > MAX_PAGES * PAGE) {
      throw new RangeError(`${target} shards need ${need} bytes of memory, more than the 4 GiB WebAssembly allows `
        + `(each shard's tables and batches take ${this.shardBytes}): scale to fewer, or make the tables smaller`);
    }
    const added = ids.map((id) => this.revive(id) ?? this.createShard(id));
    for (const shard of added) {
      // Not awaited: the buckets start moving (their packets held) at once; the moves wait in its mailbox.
      void this.startShard(shard);
      this.shards.push(shard);
    }
    this.setShardCount(this.shards.length);
    const current = this.bucketTable();
    const next = planBuckets(current, from, target);
    const report: ScaleReport = {
      from, to: target, buckets_moved: 0, flows_moved: 0, flows_not_moved: 0, milliseconds: 0, packets_held: 0, packets_lost: 0, packets_checked: 0, packets_reordered: 0,
    };
    /** Where each new and old owner's ring stood after the last packet released to it. */
    const released: { shard: Shard; head: number }[] = [];
    const onTraceTime = this.clock === 'trace' && this.sources.every((s) => !s.node.type.live);
    for (const move of bucketMoves(current, next)) {
      const table = this.bucketTable();
      // On a trace's time a shard's clock is its packets' time. Were the old and the new owner to go on with their
      // other buckets while these wait, their clocks would run ahead of the waiting packets (a move of 30 ms is
      // minutes of a trace read fast): the old owner would export, and the new one keep, the waiting flows' entries
      // as expired before the packets that keep them alive come. Their other buckets wait too.
      const owners = this.arena.u8.subarray(this.releaseMap, this.releaseMap + BUCKETS);
      owners.set(table);
      for (const b of move.buckets) owners[b] = move.to;
      const moving = new Set(move.buckets);
      const waiting = onTraceTime ? [...table.keys()].filter((b) => !moving.has(b) && (table[b] === move.from || table[b] === move.to)) : [];
      for (const b of [...move.buckets, ...waiting]) table[b] = HELD;
      this.watchOrder([...move.buckets, ...waiting]);
      this.setBuckets(table);
      // Everything submitted for these buckets before they were held is in the old owner's ring,
      // before this mark; off a trace's time, the old owner keeps serving its other buckets meanwhile.
      this.publish();
      const source = this.shards[move.from];
      const received = source.head('rx');
      await this.until(() => source.passed('rx', received), () => source.wake());
      const moved = await this.moveFlows(source, this.shards[move.to], move.buckets);
      report.flows_moved += moved.flows;
      report.flows_not_moved += moved.failed;
      // Sinks must get the old owner's packets of these buckets before any the new owner sends.
      const sent = source.head('out');
      await this.until(() => source.passed('out', sent), () => this.collect());
      // Release in arrival order, each to its bucket's owner; packets still arriving for these buckets queue behind.
      // Only when none is left does the table send them straight to their owners.
      while (this.heldCount() > 0) {
        report.packets_held += this.io.ioReleaseHeld(this.releaseMap, 0xffffffff);
        this.publish();
        if (this.heldCount() > 0) await new Promise((r) => setImmediate(r));
      }
      for (const b of [...move.buckets, ...waiting]) table[b] = owners[b];
      this.setBuckets(table);
      report.buckets_moved += move.buckets.length;
      for (const shard of [this.shards[move.to], source]) released.push({ shard, head: shard.head('rx') });
    }
    for (const shard of this.shards.slice(target)) await this.retire(shard);
    this.setShardCount(target);
    this.setBuckets(next);
    report.milliseconds = performance.now() - started;
    report.packets_lost = this.lostSoFar() - lostBefore;
    // The move is done. The order stays watched until the new owners have taken every packet released to
    // them (behind what their rings already held: tens of milliseconds at a busy shard, not counted above).
    await this.until(() => released.every((r) => r.shard.passed('rx', r.head)), () => released.forEach((r) => r.shard.wake()));
    const order = await this.endOrderWatch();
    this.setBuckets(next);
    report.packets_checked = order.checked;
    report.packets_reordered = order.reordered;
    return report;
  }

  /**
   * Exports the per-flow entries of `buckets` from one shard and imports them into another, table by
   * table, through the two halves of the transfer buffer: the old owner fills one half while the new
   * owner imports the other, on their own threads.
   */
  private async moveFlows(from: Shard, to: Shard, buckets: number[]): Promise<{ flows: number; failed: number }> {
    // One map for every move (the arena never frees; made when the scale event began): a scale event moves its groups one at a time.
    const map = this.moveMap;
    this.arena.u8.fill(0, map, map + BUCKETS);
    for (const b of buckets) this.arena.u8[map + b] = 1;
    const halves = [this.transferBuffer(), this.transferBuffer() + TRANSFER_BYTES / 2];
    const targets = this.tablesOf(to);
    let flows = 0, failed = 0, half = 0;
    let importing = Promise.resolve();
    try {
      for (const [i, table] of this.tablesOf(from).entries()) {
        if (table.merges) continue;
        const capacity = Math.floor(TRANSFER_BYTES / 2 / table.recordSize) * table.recordSize;
        for (let done = 0, resume = 0; !done; resume = 1) {
          const buffer = halves[half];
          const [count, finished] = await from.run(Op.export, [table.address, map, BUCKETS - 1, buffer, capacity, resume, OWNER[table.owner]]);
          done = finished;
          if (count === 0) continue;
          // The other half's import must end before this one starts (and before the old owner fills that half).
          await importing;
          importing = to.run(Op.import, [targets[i].address, buffer, count]).then(([notImported]) => {
            flows += count - notImported;
            failed += notImported;
          });
          half ^= 1;
        }
      }
    } finally {
      await importing;
    }
    return { flows, failed };
  }

  /** Stops a shard whose buckets have all moved away; its all-flows and cross-flow state stays readable. */
  private async retire(shard: Shard): Promise<void> {
    await this.until(() => shard.idle(), () => { this.publish(); this.collect(); });
    await shard.stop();
    this.collect();
    // Its clone stash goes back to the pool, and so do the refills the I/O side sent it after its last step
    // (still in its receive ring, published or not); a capacity of 0 stops further refills, which the I/O
    // side sends every shard it counts until the scale event ends.
    const v = this.arena.view;
    const stash = shard.memory.stash;
    v.setUint32(stash + 4, 0, true);
    const slots = this.stackSlots(stash);
    v.setUint32(stash, 0, true);
    const ring = shard.memory.rxRing;
    const mask = v.getUint32(ring + RingLayout.mask, true);
    const head = v.getUint32(this.shardRecords + shard.id * IoContext.shardRecord + 12, true);
    for (let i = shard.tail('rx'); i !== head; i = (i + 1) >>> 0) {
      const entry = v.getUint32(ring + RingLayout.entries + 4 * (i & mask), true);
      if (entry & ENTRY_RECYCLE) slots.push((entry & ~ENTRY_RECYCLE) >>> 0);
    }
    this.u32(ring + RingLayout.tail, head);
    this.giveBack(slots);
    // Out of the live shards and into the retired ones at once: a read of the counters meanwhile counts it once.
    this.shards.splice(this.shards.indexOf(shard), 1);
    this.retired.push(shard);
  }

  /** The slots on a stack of free slots (the pool's, or a shard's stash). */
  private stackSlots(stack: number): number[] {
    const v = this.arena.view;
    return Array.from({ length: v.getUint32(stack, true) }, (_, i) => v.getUint32(stack + 8 + 4 * i, true));
  }

  /** Every batch of a shard's graph: its elements' inputs and outputs, and the hole of unconnected outputs. */
  private batchesOf(shard: Shard): Set<number> {
    const v = this.arena.view;
    const { descriptor } = shard.memory;
    const batches = new Set<number>([v.getUint32(descriptor + GraphHeader.hole, true)]);
    for (const rec of this.records) for (const off of [...rec.inputs, ...rec.outputs]) batches.add(v.getUint32(descriptor + off, true));
    return batches;
  }

  /** Returns slots to the pool's free stack. Runs on the I/O thread. */
  private giveBack(slots: number[]): void {
    const v = this.arena.view;
    let count = v.getUint32(this.freeStack, true);
    for (const slot of slots) v.setUint32(this.freeStack + 8 + 4 * count++, slot, true);
    v.setUint32(this.freeStack, count, true);
  }

  /**
   * All element state: scalars merged by their rules, every table's live entries (per-flow from the
   * shard that owns them; cross-flow from every shard, to be added up on restore). Of a running pipeline, one
   * cut: the sources wait (a scale event under way ends first) until the shards have finished every packet,
   * so that no table is read later than another (a NAT's mappings and the subscribers that hold their blocks).
   */
  snapshot(): Promise<Snapshot> {
    const turn = this.snapshotTurn.then(() => this.takeSnapshot());
    this.snapshotTurn = turn.catch(() => undefined);
    return turn;
  }

  private async takeSnapshot(): Promise<Snapshot> {
    if (!this.shards.some((s) => s.running)) return this.readState();
    this.quiesce++;
    try {
      for (;;) {
        // A run that is stopping, ending or failed ends with its shards: the state is read from them once it has.
        if (this.stopRequested || this.loopExited) {
          await this.runOver;
          return await this.readState();
        }
        for (const shard of this.shards) if (shard.failed) throw shard.failed;
        if (!this.scaling && this.shardsIdle()) {
          // Shards doing no timed work either (one a tick sends packets from is not idle any more).
          await Promise.all(this.shards.map((shard) => shard.holdTicks(true)));
          if (!this.scaling && this.shardsIdle()) break;
        }
        await sleep(1);
      }
      // The run neither ends nor scales while its state is read (the shards answer the exports meanwhile).
      this.readingState = true;
      return await this.readState();
    } finally {
      this.readingState = false;
      if (--this.quiesce === 0) for (const shard of this.shards) void shard.holdTicks(false);
    }
  }

  private async readState(): Promise<Snapshot> {
    const elements: Snapshot['elements'] = {};
    for (const node of this.graph.nodes) {
      if (node.type.kind !== 'element' || !node.type.state) continue;
      const view = this.view(node.name);
      const scalars: Record<string, string> = {};
      for (const [name, spec] of Object.entries(node.type.state)) if (spec.kind === 'scalar' && !spec.address) scalars[name] = String(view.read(name));
      const data = Object.entries(node.type.state).flatMap(([name, spec]) => {
        if (spec.kind !== 'data' || !spec.shared) return [];
        const bytes = view.data(name);
        return [[name, { layout: dataLayoutOf(node, name)!, bytes: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64') }]];
      });
      elements[node.name] = { type: node.type.type, scalars, tables: {}, ...(data.length ? { data: Object.fromEntries(data) } : {}) };
    }
    const buffer = this.transferBuffer();
    const parts = new Map<Shard, Map<string, Buffer>>();
    for (const shard of [...this.shards, ...this.retired]) {
      const running = shard.running;
      parts.set(shard, new Map());
      for (const table of this.tablesOf(shard)) {
        const capacity = Math.floor(TRANSFER_BYTES / table.recordSize) * table.recordSize;
        const chunks: Buffer[] = [];
        let resume = 0;
        for (let done = 0; !done; resume = 1) {
          const args = [table.address, 0, BUCKETS - 1, buffer, capacity, resume, OWNER[table.owner]];
          const [count, finished] = running ? await shard.run(Op.export, args)
            : [this.io.tableExport(...args.slice(0, 5), 0n, resume, OWNER[table.owner]), this.io.exportDone(table.address) ? 1 : 0];
          done = finished;
          chunks.push(Buffer.from(this.arena.u8.slice(buffer, buffer + count * table.recordSize)));
        }
        const node = this.graph.byName.get(table.node)!;
        const entry = elements[table.node].tables[table.name] ??= {
          scope: table.scope, owner: table.owner, merges: table.merges, record_size: table.recordSize, records: '',
          value: this.valueLayout(node, table.name), steered_by: steeringPath(this.graph, node),
        };
        entry.records = Buffer.concat([Buffer.from(entry.records, 'base64'), ...chunks]).toString('base64');
        if (table.merges) parts.get(shard)!.set(`${table.node}/${table.name}`, Buffer.concat(chunks));
      }
    }
    // A clock carried in and not moved yet (no packet since a restore) is carried on. Only the snapshot takes it: before
    // the first packet the elements' clock stands still (a NAT dates nothing, logs nothing, until it moves).
    const carried = this.arena.view.getBigUint64(this.ioContext + IoContext.clockFloor, true);
    const clock = this.clockNow() > carried ? this.clockNow() : carried;
    const counts = Object.fromEntries(Object.entries(this.stats()).map(([name, { type, in: packetsIn, out, unconnected_drops }]) => [name, { type, in: packetsIn, out, unconnected_drops }]));
    this.lastSnapshot = { format: SNAPSHOT_FORMAT, date: new Date().toISOString(), clock_ns: String(clock), elements, counts };
    this.lastSnapshotParts = parts;
    return this.lastSnapshot;
  }

  /** The fields of a table's entry values (name, type and offset), as a snapshot names them: which entries a table can take. */
  private valueLayout(node: GraphNode, table: string): string {
    return this.layouts.get(node.type.type)!.tables.find((t) => t.state === table)!.entry.fields.map((f) => `${f.name} ${f.type} @${f.offset}`).join(', ');
  }

  /** The state a crashed shard restarts from. */
  private lastSnapshot: Snapshot | undefined;
  /** Each shard's own part of the last snapshot's tables that add up over shards: a crashed shard takes back only its own. */
  private lastSnapshotParts = new Map<Shard, Map<string, Buffer>>();
  readonly crashReports: CrashReport[] = [];
  /** Why no scale event may begin now, from whoever runs the pipeline (Supervisor: a reload makes the next one), if so. */
  refusesScale?: () => string | undefined;

  /**
   * A shard's fast path threw. Report the element that was running and the batch it was on, skip
   * that batch (its packets are lost and counted, their slots given back; what it had sent on is delivered), reload the shard's flows from the last snapshot
   * (or start them empty) and start a new worker on the same memory. Other shards never stop.
   */
  private recover(shard: Shard, error: Error): void {
    const v = this.arena.view;
    const { descriptor, context, rxRing } = shard.memory;
    const node = this.graph.nodes[v.getUint32(descriptor + GraphHeader.running, true)];
    const r = this.records[node.index];
    let firstPacket = '';
    for (const off of r.inputs) {
      const batch = v.getUint32(descriptor + off, true);
      if (v.getUint32(batch, true) === 0 || firstPacket) continue;
      const p = v.getUint32(batch + BATCH_HEADER, true);
      const data = p + v.getUint16(p + Meta.dataOffset, true);
      firstPacket = Buffer.from(this.arena.u8.slice(data, data + Math.min(64, v.getUint32(p + Meta.length, true)))).toString('hex');
    }
    // What the batch sent before the trap (packets for sinks, slots given back) is published, as the batch's end would
    // have: those packets are delivered, not lost.
    const { outRing } = shard.memory;
    const mask = v.getUint32(outRing + RingLayout.mask, true);
    const written = v.getUint32(context + ShardContext.outWritten, true);
    const sent = new Set<number>();
    for (let i = v.getUint32(outRing + RingLayout.head, true); i !== written; i = (i + 1) >>> 0) {
      sent.add((v.getUint32(outRing + RingLayout.entries + 4 * (i & mask), true) & ~ENTRY_RECYCLE) >>> 0);
    }
    Atomics.store(this.arena.i32, (outRing + RingLayout.head) >>> 2, written);
    // Every batch of the shard is emptied. A packet in one that the batch neither sent on nor gave back (to the
    // shard's stash, no other thread's while the shard is down) is lost: counted, and its slot returned to the pool.
    // A packet the element had pushed on before it failed is in its input batch and in an output batch: counted once.
    const given = new Set(this.stackSlots(v.getUint32(context + ShardContext.stash, true)));
    const lostSlots = new Set<number>();
    for (const b of this.batchesOf(shard)) {
      for (let i = 0; i < v.getUint32(b, true); i++) {
        const slot = v.getUint32(b + BATCH_HEADER + 4 * i, true);
        if (!sent.has(slot) && !given.has(slot)) lostSlots.add(slot);
      }
      v.setUint32(b, 0, true);
    }
    const lost = lostSlots.size;
    // An element that keeps packets in its state may have kept one of the batch: then the slots stay out of use.
    if (!node.type.holding) this.giveBack([...lostSlots]);
    Atomics.store(this.arena.i32, (rxRing + RingLayout.tail) >>> 2, v.getUint32(context + ShardContext.taken, true));
    for (const table of this.tablesOf(shard)) {
      const entries = v.getUint32(table.address + FlowTableLayout.entries, true);
      const size = v.getUint32(table.address + FlowTableLayout.slots, true) * v.getUint32(table.address + FlowTableLayout.entrySize, true);
      this.arena.u8.fill(0, entries, entries + size);
      v.setUint32(table.address + FlowTableLayout.live, 0, true);
    }
    const restored = this.lastSnapshot ? this.loadTables(this.lastSnapshot, shard, new Set(), this.lastSnapshotParts.get(shard) ?? new Map()) : 0;
    const source = sourceLocation(this.compiled, error.stack) ?? null;
    const report: CrashReport = {
      shard: shard.id, element: node.name, type: node.type.type, error: error.message, source,
      packets_lost: lost, first_packet: firstPacket, restored_entries: restored, from_snapshot: this.lastSnapshot?.date ?? null,
    };
    this.crashReports.push(report);
    this.log(`shard ${shard.id} crashed in ${node.name} (${node.type.type}): ${error.message}${source ? ` at ${source}` : ''}; first packet of its batch: ${firstPacket}; `
      + `${lost} packets lost; restarted ${this.lastSnapshot ? `from the snapshot of ${this.lastSnapshot.date} (${restored} entries)` : 'with empty tables (no snapshot taken yet)'}`);
    void this.startShard(shard);
  }

  /**
   * Loads a snapshot before the pipeline starts, into any number of shards: scalars into shard 0,
   * per-flow entries into the shard that owns their bucket, cross-flow entries added up in shard 0. Returns the
   * elements that start afresh instead (their shared data is laid out by parameters that changed). `carried`: the
   * snapshot is a reloaded pipeline's, not a file's.
   */
  restore(snapshot: Snapshot, carried = false): Set<string> {
    if (this.started) throw new Error('restore a snapshot before the pipeline starts');
    if (snapshot?.format === 'wirepath-snapshot/1') snapshot = withSteering(snapshot);
    if (snapshot?.format !== SNAPSHOT_FORMAT) throw new Error(`not a wirepath snapshot (format ${snapshot?.format})`);
    const v = this.arena.view;
    // An element whose shared data starts afresh starts afresh as a whole: its tables may point into that data
    // (a NAT's subscribers name the port blocks its pool says who holds).
    const afresh = new Set<string>();
    // Every element is there first: a snapshot for another config is refused before any element is restored.
    for (const [name, saved] of Object.entries(snapshot.elements)) {
      if (this.graph.byName.get(name)?.type.type !== saved.type) throw new Error(`the snapshot's element ${name} (${saved.type}) is not in this config`);
    }
    for (const [name, saved] of Object.entries(snapshot.elements)) {
      const node = this.graph.byName.get(name)!;
      const layout = this.layouts.get(node.type.type)!;
      const data = Object.entries(saved.data ?? {});
      for (const [field, { layout, bytes }] of data) {
        // Laid out by other parameters (a reload that changed them): it starts afresh.
        if (layout !== dataLayoutOf(node, field)) {
          const reads = layoutParamsOf(node, field);
          const before = this.predecessor.get(name)?.params;
          // A parameter counts when putting back its old value alone changes the layout (a log's new path lays out nothing).
          const now = dataLayoutOf(node, field);
          const changed = before ? reads.filter((k) => dataLayoutOf(node, field, { ...node.instance.params, [k]: before[k] }) !== now) : [];
          const why = changed.length ? `${changed.join(', ')} changed, and its ${field} data is laid out by ${changed.length > 1 ? 'them' : 'it'}`
            : `its ${field} data is laid out by ${reads.join(', ')}, and one of them changed`;
          this.log(`${name}: ${why}, so it starts afresh (its tables too) instead of taking its state from the ${before ? 'pipeline it replaces' : 'snapshot'}`);
          afresh.add(name);
          const old = Buffer.from(bytes, 'base64');
          if (!this.unrestored.has(name)) this.unrestored.set(name, new Map());
          this.unrestored.get(name)!.set(field, new DataView(old.buffer, old.byteOffset, old.byteLength));
        }
      }
      // Its counters too: a restarted NAT that went on counting what it had translated would have translated more than it took.
      if (afresh.has(name)) continue;
      for (const [field, value] of Object.entries(saved.scalars)) {
        const f = layout.fields.find((x) => x.name === field);
        // Snapshots written before addresses were left out hold them: another pipeline's memory.
        const spec = node.type.state?.[field];
        if (f && !(spec?.kind === 'scalar' && spec.address)) writeField(v, this.shards[0].memory.blocks[node.index] + f.offset, f.type, BigInt(value));
      }
      for (const [field, { bytes }] of data) {
        const target = this.view(name).data(field);
        new Uint8Array(target.buffer, target.byteOffset, target.byteLength).set(Buffer.from(bytes, 'base64'));
      }
    }
    for (const shard of this.shards) this.loadTables(snapshot, shard, afresh);
    // A reload counts on from the stopped pipeline's counters itself (Supervisor: countOn).
    if (!carried) this.countOn(snapshot.counts ?? {}, [...afresh]);
    if (!carried) for (const name of Object.keys(snapshot.elements)) if (!afresh.has(name)) this.restoredFromFile.add(name);
    // On a trace's time, the state's deadlines and times are the clock it was taken at: time goes on from there.
    if (snapshot.clock_ns && BigInt(snapshot.clock_ns) > 0n && !this.onRealTime()) this.continueClock(BigInt(snapshot.clock_ns));
    return afresh;
  }

  /** Carries the clock on from `floor` (assembly/io.ts IO_CLOCK_SHIFTS): each source's shift is set by its first packet. */
  private continueClock(floor: bigint): void {
    const v = this.arena.view;
    const shifts = this.arena.alloc(8 * Math.max(1, this.graph.sources.length), 8);
    for (let i = 0; i < this.graph.sources.length; i++) v.setBigUint64(shifts + 8 * i, 0xffff_ffff_ffff_ffffn, true);
    v.setBigUint64(this.ioContext + IoContext.clockFloor, floor, true);
    v.setUint32(this.ioContext + IoContext.clockShifts, shifts, true);
  }

  /** Takes over from `old` (a reload): its elements' types and parameters, for the drivers of this one's. */
  replaces(old: Pipeline): void {
    for (const node of old.graph.nodes) this.predecessor.set(node.name, { type: node.type.type, params: node.instance.params, configFile: old.config.file });
  }

  /**
   * After a reload: an element the new config has with the same name and type counts its packets on from what it had
   * counted (`before`, the stopped pipeline's counters), as its state does, unless its state started afresh (`restarted`).
   * Sources and sinks are opened anew and count from 0.
   */
  countOn(before: Record<string, ElementStats>, restarted: string[]): void {
    for (const node of this.graph.nodes) {
      const was = before[node.name];
      if (node.type.kind === 'element' && was?.type === node.type.type && !restarted.includes(node.name)) this.countedBefore.set(node.name, was);
    }
  }

  /**
   * The elements whose state `next`, a reload of this pipeline, carries on (same name and type, shared data laid out
   * alike), each with `next`'s element of that name: its parameters and config file.
   */
  carriedInto(next: Pipeline): Map<string, ReloadedElement> {
    const carried = new Map<string, ReloadedElement>();
    for (const node of this.graph.nodes) {
      const other = next.graph.byName.get(node.name);
      if (!node.type.state || other?.type.type !== node.type.type) continue;
      const fields = Object.keys(node.type.state);
      if (fields.every((field) => dataLayoutOf(node, field) === dataLayoutOf(other, field))) carried.set(node.name, { params: other.instance.params, configFile: next.config.file });
    }
    return carried;
  }

  /**
   * Imports into one shard's tables the snapshot's entries it owns: per-flow entries of its buckets, and the
   * cross-flow entries that add up over shards: all of them on shard 0, or with `ownParts` (a crashed shard,
   * whose siblings kept their parts) its own part alone; none of the elements in `skip`. Runs while no thread runs the shard.
   */
  private loadTables(snapshot: Snapshot, shard: Shard, skip = new Set<string>(), ownParts?: Map<string, Buffer>): number {
    const buffer = this.transferBuffer();
    const owners = this.ownerTable();
    let loaded = 0;
    for (const [name, saved] of Object.entries(snapshot.elements)) {
      if (skip.has(name)) continue;
      for (const [table, data] of Object.entries(saved.tables)) {
        const target = this.tablesOf(shard).find((t) => t.node === name && t.name === table);
        if (!target) continue;
        // Entries laid out otherwise (the element's value fields changed since): read as they are now, they would be garbage.
        // A newer version of the element that only added fields takes them, its fields moved to where they are now and the
        // added ones 0; one that removed a field or changed its type starts empty.
        const layout = this.valueLayout(this.graph.byName.get(name)!, table);
        const moved = data.value !== undefined && data.value !== layout ? fieldMoves(data.value, layout) : undefined;
        if (moved ? !moved.fits : data.record_size !== target.recordSize) {
          if (shard.id === 0) this.log(`${name}.${table}: the entries carried over (snapshot or reload) are laid out otherwise (${data.value ?? `${data.record_size} bytes each`}; now ${layout}): left out, the table starts empty`);
          continue;
        }
        if (moved && shard.id === 0) {
          this.log(`${name}.${table}: the entries carried over (snapshot or reload) are laid out otherwise (${data.value}; now ${layout}): their fields are moved to where they are now`
            + (moved.added.length ? `, and ${moved.added.map((f) => f.split(' ')[0]).join(', ')} ${moved.added.length > 1 ? 'start' : 'starts'} at 0` : ''));
        }
        const stored = data.merges && ownParts ? ownParts.get(`${name}/${table}`) ?? Buffer.alloc(0) : Buffer.from(data.records, 'base64');
        if (stored.length % data.record_size) throw new Error(`the snapshot's ${name}.${table} entries are cut short (${stored.length} bytes, not a whole number of ${data.record_size}-byte records): the file is damaged`);
        const records = moved ? relaidOut(stored, data.record_size, target.recordSize, moved.moves) : stored;
        const recordSize = target.recordSize;
        // Packets reach the element otherwise steered or changed (another config): what they recorded says nothing here.
        const steeringHolds = data.merges || data.steered_by === steeringPath(this.graph, this.graph.byName.get(name)!);
        const mine: Buffer[] = [];
        for (let at = 0; at < records.length; at += recordSize) {
          const r = records.subarray(at, at + recordSize);
          if (!steeringHolds) r.writeUInt32LE(0, TRANSFER_STEERING);
          // As assembly/migrate.ts bucketOf: of the address in the key, else of the packet that made the entry, else of its key.
          const steering = r.readUInt32LE(TRANSFER_STEERING);
          const hash = data.owner === 'address' ? this.io.addressHash(r.readUInt32LE(0)) : steering & STEERED ? steering
            : this.io.symmetricHashOf(r.readUInt32LE(0), r.readUInt32LE(4), r.readUInt16LE(8) ^ r.readUInt16LE(10), r[12]);
          const owner = data.merges ? (ownParts ? shard.id : 0) : owners[hash & (BUCKETS - 1)];
          if (owner === shard.id) mine.push(r);
        }
        const all = data.merges ? this.mergeParts(name, table, mine) : Buffer.concat(mine);
        const chunkBytes = TRANSFER_BYTES - (TRANSFER_BYTES % recordSize);
        let leftOut = 0;
        for (let at = 0; at < all.length; at += chunkBytes) {
          const chunk = all.subarray(at, at + chunkBytes);
          this.arena.u8.set(chunk, buffer);
          const count = chunk.length / recordSize;
          const failed = this.io.tableImport(target.address, buffer, count, 0n);
          leftOut += failed;
          loaded += count - failed;
        }
        if (leftOut) {
          const capacity = this.arena.view.getUint32(target.address + FlowTableLayout.capacity, true);
          this.log(`${name}.${table} on shard ${shard.id} is full (at most ${capacity} entries, by its parameters now); ${leftOut} snapshot entries left out`);
        }
      }
    }
    return loaded;
  }


  /**
   * The parts several shards kept of each key of an added-up table, made one record per key: each value field
   * by its merge rule (sum unless the table declares max or min), the latest deadline.
   */
  private mergeParts(element: string, table: string, records: Buffer[]): Buffer {
    const node = this.graph.byName.get(element)!;
    const spec = node.type.state![table] as FlowTableState;
    const fields = this.layouts.get(node.type.type)!.tables.find((t) => t.state === table)!.entry.fields;
    const byKey = new Map<string, Buffer>();
    const view = (b: Buffer) => new DataView(b.buffer, b.byteOffset, b.byteLength);
    for (const r of records) {
      const key = r.subarray(0, 16).toString('hex');
      const into = byKey.get(key);
      if (!into) { byKey.set(key, Buffer.from(r)); continue; }
      const a = view(into), b = view(r);
      if (b.getBigUint64(16, true) > a.getBigUint64(16, true)) a.setBigUint64(16, b.getBigUint64(16, true), true);
      for (const f of fields) {
        const at = TRANSFER_KEY + f.offset;
        writeField(a, at, f.type, mergeBy(spec.merge?.[f.name] ?? 'sum', readField(a, at, f.type), readField(b, at, f.type)));
      }
    }
    return Buffer.concat([...byKey.values()]);
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
    const everyShard = [...this.shards, ...this.retired];
    const blocks = node.type.kind === 'element' ? everyShard.map((s) => s.memory.blocks[node.index]) : [this.ioBlocks.get(name)!];
    const v = this.arena.view;
    const fieldOf = (field: string) => {
      const f = layout.fields.find((x) => x.name === field);
      if (!f) throw new Error(`${node.type.type} has no state field '${field}'`);
      return f;
    };
    const tableSpec = (table: string) => {
      const spec = node.type.state?.[table];
      if (spec?.kind !== 'flow-table') throw new Error(`${node.type.type} has no table '${table}'`);
      return spec;
    };
    const tableAt = (block: number, table: string) => v.getUint32(block + fieldOf(table).offset, true);
    const count = (table: string, where?: (key: TableEntry['key']) => boolean) => {
      // A table whose shards each keep a part of one key's value (merged on read) counts each key once.
      const keys = tableSpec(table).merges ? new Set<string>() : undefined;
      const key: TableEntry['key'] = [0, 0, 0, 0];
      let n = 0;
      for (const block of blocks) {
        eachLiveEntry(v, tableAt(block, table), this.clockNow(), (e) => {
          if (!where && !keys) { n++; return; }
          readKey(v, e, key);
          if (where && !where(key)) return;
          if (keys) keys.add(key.join(' '));
          else n++;
        });
      }
      return keys ? keys.size : n;
    };
    return {
      name, params: node.instance.params, configFile: this.config.file,
      read: (field) => {
        const f = fieldOf(field);
        if (f.type === 'FlowTable') return BigInt(count(field));
        const spec = node.type.state?.[field];
        let values = blocks.map((b) => readField(v, b + f.offset, f.type));
        const merge = spec?.kind === 'scalar' ? spec.merge : 'sum';
        // A shard that never set a first-seen time holds 0, which is no minimum.
        if (merge === 'min' && values.some((x) => x !== 0n)) values = values.filter((x) => x !== 0n);
        return values.reduce((a, b) => mergeBy(merge, a, b));
      },
      reset: () => {
        for (const f of layout.fields) {
          if (!('state' in f.from) || f.type === 'FlowTable' || f.type === 'usize') continue;
          // Working state (a shard's claimed row of counters, a scan position) is not a counter.
          const spec = node.type.state?.[f.from.state];
          if (spec?.kind === 'scalar' && spec.internal) continue;
          for (const b of blocks) writeField(v, b + f.offset, f.type, 0n);
        }
        for (const shard of everyShard) {
          const r = this.records[node.index];
          for (const off of [r.inPackets, r.holeDrops, ...r.outPackets]) v.setBigUint64(shard.memory.descriptor + off, 0n, true);
        }
        // And what the configs before a reload counted, which its packet counts go on from.
        this.countedBefore.delete(name);
      },
      data: (field) => {
        if (node.type.state?.[field]?.kind !== 'data') throw new Error(`${node.type.type} has no data '${field}'`);
        const address = v.getUint32(blocks[0] + fieldOf(field).offset, true);
        return new DataView(this.arena.memory.buffer, address, (node.type.state[field] as DataState).size(node.instance.params));
      },
      entries: (table, where) => {
        tableSpec(table);
        const entry = layout.tables.find((t) => t.state === table)!.entry;
        const found: TableEntry[] = [];
        const key: TableEntry['key'] = [0, 0, 0, 0];
        for (const [i, shard] of everyShard.entries()) {
          eachLiveEntry(v, tableAt(blocks[i], table), this.clockNow(), (e) => {
            if (where && !where(readKey(v, e, key))) return;
            found.push({
              shard: shard.id, key: readKey(v, e, [0, 0, 0, 0]), expires: v.getBigUint64(e + FlowTableLayout.entryExpires, true),
              value: Object.fromEntries(entry.fields.map((f) => [f.name, readField(v, e + FlowTableLayout.entryValue + f.offset, f.type)])),
            });
          });
        }
        return found;
      },
      count,
      now: () => this.clockNow(),
      restored: this.restoredFromFile.has(name),
      unrestored: (field) => this.unrestored.get(name)?.get(field),
      previous: this.previousOf(node),
      next: this.handover.get(name),
      log: (message) => this.log(`${name}: ${message}`),
      printFd: this.printFd,
      setParam: (param, raw) => {
        const spec = Object.hasOwn(node.type.params, param) ? node.type.params[param] : undefined;
        if (!spec) throw new Error(`${node.type.type} has no parameter '${param}'`);
        if (setUpBy(node.type, node.instance.params).has(param)) {
          throw new Error(`${param} is read when ${node.name} is set up (its memory, ports or data follow from it, or it cannot change while shards run): change it in the config and reload`);
        }
        let value: unknown;
        try {
          value = spec.type.parse(raw);
        } catch (e) {
          // A config shows the hint on its own line; a handler's answer is one message. (The type may come from
          // another instance of params.ts, an element folder's, so its error is known by its hint, not its class.)
          const hint = (e as Partial<ParamTypeError>).hint;
          if (hint) throw new Error(`${(e as Error).message} (${hint})`);
          throw e;
        }
        const next = { ...node.instance.params, [param]: value };
        // What a config would refuse is refused here too; and the batches were sized by the parameters.
        const problem = node.type.invalid?.(next, { slotSize: this.config.slotSize, slotRoom: slotRoom(this.config.slotSize) })[0];
        if (problem) throw new Error(`${param}: ${problem.message}${problem.hint ? ` (${problem.hint})` : ''}`);
        const sizes = (params: Record<string, unknown>) => `${expansionOf(node.type, params)}/${clonesOf(node.type, params)}`;
        if (sizes(next) !== sizes(node.instance.params)) {
          throw new Error(`${param}: this value changes how much room ${node.name}'s outputs need; change it in the config and reload`);
        }
        node.instance.params[param] = value;
        for (const b of blocks) for (const f of layout.fields) {
          if (('param' in f.from && f.from.param === param) || ('has' in f.from && f.from.has === param)) this.writeParam(b, node, f);
        }
      },
    };
  }

  /** The elements' clock: the latest batch time of any shard (trace time with the virtual clock). */
  clockNow(): bigint {
    const latest = [...this.shards, ...this.retired].reduce((m, shard) => {
      const t = this.arena.view.getBigUint64(shard.memory.context + ShardContext.now, true);
      return t > m ? t : m;
    }, 0n);
    return latest || (this.clock === 'wall' ? wallNanos() : 0n);
  }

  /** Every element's counters: packets in and out per port, drops, and its read handlers. */
  stats(): Record<string, ElementStats> {
    const v = this.arena.view;
    const out: Record<string, ElementStats> = {};
    for (const node of this.graph.nodes) {
      const r = this.records[node.index];
      const sum = (off: number) => [...this.shards, ...this.retired].reduce((s, shard) => s + Number(v.getBigUint64(shard.memory.descriptor + off, true)), 0);
      const source = this.sources.find((s) => s.node === node);
      const before = this.countedBefore.get(node.name);
      const stats: ElementStats = {
        type: node.type.type,
        in: source ? source.submitted : sum(r.inPackets) + (before?.in ?? 0),
        out: node.type.kind === 'source' ? [source?.submitted ?? 0] : r.outPackets.map((at, port) => sum(at) + (before?.out[port] ?? 0)),
        unconnected_drops: sum(r.holeDrops) + (before?.unconnected_drops ?? 0),
      };
      const view = this.view(node.name);
      for (const [name, handler] of Object.entries(handlersOf(node.type))) {
        if (!handler.read || !handler.counter) continue;
        // One handler that fails spoils no one else's counters, nor the end of a run.
        try {
          stats[name] = handler.read(view);
        } catch (e) {
          stats[name] = `failed: ${(e as Error).message}`;
        }
      }
      out[node.name] = stats;
    }
    return out;
  }

  /** Counters of the runtime itself: per shard batches, packets and drops; pool exhaustion. */
  runtimeStats(): { shards: { shard: number; batches: number; packets: number; no_buffer: number; resteered_again: number; overrun: number; misrouted: number; misrouted_by: number; ring_full_drops: number }[]; pool_exhausted: number; overlong: number; later_fragments_waited: number; later_fragments_without_first: number } {
    const v = this.arena.view;
    return {
      shards: this.shards.map((shard) => ({
        shard: shard.id,
        ...shard.counters(),
        ring_full_drops: Number(v.getBigUint64(this.shardRecords + shard.id * IoContext.shardRecord + 16, true)),
      })),
      pool_exhausted: Number(v.getBigUint64(this.ioContext + IoContext.noSlot, true)),
      overlong: Number(v.getBigUint64(this.ioContext + IoContext.overlong, true)),
      later_fragments_waited: Number(v.getBigUint64(this.fragments + FragmentArea.waited, true)),
      later_fragments_without_first: Number(v.getBigUint64(this.fragments + FragmentArea.unmatched, true)),
    };
  }

  handlerRead(element: string, handler: string, arg?: string): unknown {
    const node = this.graph.byName.get(element);
    if (!node) throw new EnvironmentError(`no element '${element}'`);
    const h = handlersOf(node.type)[handler];
    if (!h?.read) throw new EnvironmentError(`${element} (${node.type.type}) has no read handler '${handler}'`, `its handlers: ${Object.keys(handlersOf(node.type)).join(', ')}`);
    return h.read(this.view(element), arg);
  }

  handlerWrite(element: string, handler: string, value: string): void {
    const node = this.graph.byName.get(element);
    if (!node) throw new EnvironmentError(`no element '${element}'`);
    const h = handlersOf(node.type)[handler];
    if (!h?.write) throw new EnvironmentError(`${element} (${node.type.type}) has no write handler '${handler}'`, `its handlers: ${Object.keys(handlersOf(node.type)).join(', ')}`);
    h.write(this.view(element), value);
  }
}

/** What lays out a shared data region, as one string: its size and the parameters it declares as its layout. */
/** What a snapshot's copy of shared data must match to be restored: the parameters it is laid out by; undefined for any other field. */
function dataLayoutOf(node: GraphNode, field: string, params = node.instance.params): string | undefined {
  const spec = node.type.state?.[field];
  if (spec?.kind !== 'data' || !spec.shared) return undefined;
  return JSON.stringify([spec.size(params), spec.layout?.(params) ?? null], (_, value) => (typeof value === 'bigint' ? String(value) : value));
}

/** The parameters a shared data field's layout (its size and layout functions) reads. */
function layoutParamsOf(node: GraphNode, field: string): string[] {
  const spec = node.type.state?.[field];
  return spec?.kind === 'data' ? [...paramsReadBy(node.instance.params, [spec.size, spec.layout])] : [];
}

/** Two shards' values of one field combined by its merge rule. */
function mergeBy(rule: 'sum' | 'max' | 'min', a: bigint, b: bigint): bigint {
  return rule === 'sum' ? a + b : rule === 'max' ? (a > b ? a : b) : a < b ? a : b;
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

/** What one scale event did and cost (issue: every figure the operator asks for). */
export interface ScaleReport {
  from: number;
  to: number;
  buckets_moved: number;
  flows_moved: number;
  /** Entries the new owner's full table could not take (their flows start afresh there). */
  flows_not_moved: number;
  milliseconds: number;
  packets_held: number;
  packets_lost: number;
  /** Packets of the moving buckets whose order the shards checked as they took them (assembly/order.ts). */
  packets_checked: number;
  /** Of those, packets taken after a later packet of their bucket (so of any of its flows): must be 0. */
  packets_reordered: number;
}

export interface CrashReport {
  shard: number;
  element: string;
  type: string;
  error: string;
  /** Where in the sources it failed (FILE:LINE:COLUMN, from the compiler's source map), or null when unknown. */
  source: string | null;
  packets_lost: number;
  /** The first 64 bytes, in hex, of the first packet of the batch the element was working on. */
  first_packet: string;
  restored_entries: number;
  from_snapshot: string | null;
}

/** Runs what opens an element's file or device: what is missing is placed at the element in the config. */
function atElement<T>(node: GraphNode, open: () => T): T {
  try {
    return open();
  } catch (e) {
    if (e instanceof EnvironmentError) e.position ??= node.instance.position;
    throw e;
  }
}

/** A run that failed (a device gone, a stall) carries the counters it reached, for the final table. */
export type FailedRun = Error & { result?: RunResult };

/** `error`, carrying the run's counters (when it is an Error). */
export function withResult(error: unknown, result: RunResult): unknown {
  if (error instanceof Error) (error as FailedRun).result = result;
  return error;
}

/**
 * A snapshot written before records carried their entry's steering (format 1: the value right after the deadline),
 * in today's format: every record says its steering was not recorded, so it goes by its key, as it did then.
 */
function withSteering(old: Snapshot): Snapshot {
  const elements = Object.fromEntries(Object.entries(old.elements).map(([name, element]) => [name, {
    ...element,
    tables: Object.fromEntries(Object.entries(element.tables).map(([table, data]) => {
      const records = Buffer.from(data.records, 'base64'), size = data.record_size, parts: Buffer[] = [];
      for (let at = 0; at < records.length; at += size) parts.push(records.subarray(at, at + TRANSFER_STEERING), Buffer.alloc(8), records.subarray(at + TRANSFER_STEERING, at + size));
      return [table, { ...data, record_size: size + 8, records: Buffer.concat(parts).toString('base64') }];
    })),
  }]));
  return { ...old, format: SNAPSHOT_FORMAT, elements };
}

export interface Snapshot {
  format: 'wirepath-snapshot/1' | 'wirepath-snapshot/2';
  date: string;
  /** The pipeline's clock when it was taken (ns; since 2026-11): on a trace's time, the restored pipeline's clock goes on from it. */
  clock_ns?: string;
  elements: Record<string, {
    type: string;
    scalars: Record<string, string>;
    /** value: the entries' value fields (valueLayout); steered_by: graph.ts steeringPath of the element (both since format 2). */
    tables: Record<string, { scope: 'per-flow' | 'cross-flow'; owner: 'flow' | 'address'; merges: boolean; record_size: number; records: string; value?: string; steered_by?: string }>;
    /** Shared data regions (state.data with `shared`), base64, with what laid each out (DataState.layout). */
    data?: Record<string, { layout: string; bytes: string }>;
  }>;
  /**
   * Every element's packets in and out so far (since 2026-11), those without state too: an element of the same name and
   * type counts on from them when restored, as after a reload.
   */
  counts?: Record<string, Pick<ElementStats, 'type' | 'in' | 'out' | 'unconnected_drops'>>;
}

/** A value field as a table's layout string names it: `name type @offset`. */
const FIELD = /^(\w+) (\w+) @(\d+)$/;
const FIELD_BYTES: Record<string, number> = { u8: 1, bool: 1, u16: 2, u32: 4, i32: 4, u64: 8 };

/**
 * How a snapshot's value fields (`before`, a layout string) move to where a table lays them out now (`now`): each
 * field's old and new offset, the fields added since, and whether every old field is still there with its type.
 */
function fieldMoves(before: string, now: string): { fits: boolean; moves: { from: number; to: number; bytes: number }[]; added: string[] } {
  const parse = (layout: string) => new Map(layout.split(', ').map((f) => FIELD.exec(f)).filter((m) => m !== null).map((m) => [m[1], { type: m[2], offset: Number(m[3]) }]));
  const old = parse(before), current = parse(now);
  const moves = [...old].flatMap(([name, f]) => current.get(name)?.type === f.type ? [{ from: f.offset, to: current.get(name)!.offset, bytes: FIELD_BYTES[f.type] }] : []);
  return { fits: moves.length === old.size && old.size > 0, moves, added: [...current].filter(([name]) => !old.has(name)).map(([name, f]) => `${name} ${f.type} @${f.offset}`) };
}

/** Records of `from` bytes each (transfer header, then the value), made `to` bytes long with each value field moved. */
function relaidOut(records: Buffer, from: number, to: number, moves: { from: number; to: number; bytes: number }[]): Buffer {
  const out = Buffer.alloc((records.length / from) * to);
  for (let at = 0, i = 0; at < records.length; at += from, i++) {
    records.copy(out, i * to, at, at + TRANSFER_KEY);
    for (const m of moves) records.copy(out, i * to + TRANSFER_KEY + m.to, at + TRANSFER_KEY + m.from, at + TRANSFER_KEY + m.from + m.bytes);
  }
  return out;
}
