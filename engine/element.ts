// What an element author writes in an element's element.ts: the declaration that names, documents,
// parameterises and exposes the element. The batch loop is in process.ts beside it (AssemblyScript).

import { fileURLToPath } from 'node:url';
import type { FastType, ParamSpec, ValueLocation } from './params.ts';
import type { MemoryArena } from './memory.ts';

/** StateAlyzr's classes of element state; the engine moves, merges and snapshots state by them. */
export type Scope = 'per-flow' | 'cross-flow' | 'all-flows' | 'config';
export const MERGE_RULES = ['sum', 'max', 'min'] as const;
export type MergeRule = (typeof MERGE_RULES)[number];

export interface ScalarState {
  kind: 'scalar';
  doc: string;
  type: FastType;
  scope: 'all-flows';
  merge: MergeRule;
  /** Working state of an I/O element's loop, not a statistic: no handler, not in the counters. */
  internal?: boolean;
  /** An address in this pipeline's memory (a shard's row of counters): snapshots leave it out, so no other pipeline takes it. */
  address?: boolean;
  /** Only ever grows (a count of events), as Prometheus's counters; a gauge otherwise. */
  monotonic?: boolean;
}

export interface FlowTableState {
  kind: 'flow-table';
  doc: string;
  /**
   * per-flow: keyed by the 5-tuple, moved with the bucket of its packets when shards scale. cross-flow: keyed
   * by the source address; each shard keeps the part it saw, and the parts add up (on read, in
   * snapshots, when a shard is retired).
   */
  scope: 'per-flow' | 'cross-flow';
  /**
   * What decides the shard of an entry: its flow (the key is a 5-tuple: the entry goes where the dispatcher
   * steered the packet passed to lookupOrInsert, which may be elsewhere than the key's own flow hash when the
   * sources steer by an element or an element before changed the 5-tuple) or its host (the key's first word is
   * an address; the element's packets come from sources that steer by that address).
   */
  owner: 'flow' | 'address';
  /** True when every shard keeps a part of each entry and the parts add up, instead of one owner. */
  merges: boolean;
  /**
   * True when the key is not the packet's own flow (an inner connection) and only the element's `steer` finds
   * it: with more than one shard, the element's packets must come from sources that steer by an element of its type.
   */
  keyedBySteer?: boolean;
  /** The fields of each entry's value, in the generated `<Type><Name>Entry` class. */
  value: Record<string, FastType>;
  /**
   * Tables whose shards each keep a part (merges): how a field's parts combine when a snapshot is restored
   * (sum unless named here: max for a last-seen time, min for a first-seen one).
   */
  merge?: Record<string, 'sum' | 'max' | 'min'>;
  /** Most live entries, from the element's parameters. */
  capacity: (params: any) => number;
  /** Idle timeout in ns, from the element's parameters. */
  timeout: (params: any) => number;
  /**
   * Whether the element keeps entries in the table with these parameters (by default it does). A per-flow table in use
   * has every packet hashed for its steering, also on one shard: a table an option turns off costs nothing then.
   */
  used?: (params: any) => boolean;
}

/**
 * Read-only data computed from the parameters when the pipeline starts (a classifier's decision
 * program, a load balancer's lookup table): config state, the same on every shard. The layout field
 * holds its address.
 */
export interface DataState {
  kind: 'data';
  doc: string;
  scope: 'config';
  /**
   * Shared working state instead of read-only data: shards write it (atomically: they share one copy),
   * and snapshots save and restore it (a NAT's table of which subscriber owns each external port block).
   */
  shared?: boolean;
  /**
   * For shared data: the parameters its layout depends on. A snapshot's copy is restored (after a reload,
   * say) only into data laid out by equal values of them; otherwise the data starts afresh from `init`.
   */
  layout?: (params: any) => unknown;
  /** Bytes to allocate for these parameters. */
  size: (params: any) => number;
  /** Writes the data: `bytes` is a view of exactly `size(params)` bytes at `address` in the shared memory. */
  init: (params: any, bytes: DataView, address: number) => void;
}

export type StateField = ScalarState | FlowTableState | DataState;

type TableDeclaration = Omit<FlowTableState, 'kind' | 'scope' | 'owner' | 'merges'>;

/** Where each state declaration was written: its line in an element.ts, which the declaration check's messages name. */
const declaredAt = new WeakMap<object, number>();
const THIS_FILE = fileURLToPath(import.meta.url);

function declared<T extends object>(spec: T): T {
  const frame = new Error().stack?.split('\n').find((line) => /element\.ts[^:]*:\d+:\d+\)?$/.test(line) && !line.includes(THIS_FILE));
  const line = frame && /:(\d+):\d+\)?$/.exec(frame)?.[1];
  if (line) declaredAt.set(spec, Number(line));
  return spec;
}

/** The line of the element.ts where a state field was declared, when known. */
export const declarationLine = (spec: object): number | undefined => declaredAt.get(spec);

export const state = {
  /** A 64-bit event counter; shards' values add up. */
  counter: (doc: string): ScalarState => declared({ kind: 'scalar', doc, type: 'u64', scope: 'all-flows', merge: 'sum', monotonic: true }),
  /** A 64-bit value whose shards' values merge by max or min (a first or last timestamp); for min, a shard's 0 (never set) takes no part. */
  gauge: (doc: string, merge: MergeRule): ScalarState => declared({ kind: 'scalar', doc, type: 'u64', scope: 'all-flows', merge }),
  /** A 64-bit working value the I/O side and the fast path share (not shown as a counter). */
  internal: (doc: string, merge: MergeRule = 'max'): ScalarState => declared({ kind: 'scalar', doc, type: 'u64', scope: 'all-flows', merge, internal: true }),
  /** Working state that is an address in the pipeline's memory (set up anew by each pipeline; never in a snapshot). */
  address: (doc: string): ScalarState => declared({ kind: 'scalar', doc, type: 'u64', scope: 'all-flows', merge: 'max', internal: true, address: true }),
  /** Read-only data made from the parameters at start (see DataState). */
  data: (d: Omit<DataState, 'kind' | 'scope'>): DataState => declared({ kind: 'data', scope: 'config', ...d }),
  /**
   * A flow table keyed by the IPv4 5-tuple (FlowKey.fromPacket), with a fixed capacity and an idle
   * timeout. Its entries move with the bucket of the packet that made each (pass it to lookupOrInsert);
   * with `owner: 'address'` they belong to the host in the key's first word and move with that
   * address's bucket (a NAT's sessions move with their subscriber). With `keyedBySteer: true` its key is one only the
   * element's `steer` finds (an inner connection): with more than one shard, its sources must steer by an element of its type.
   */
  flowTable: (t: TableDeclaration & { owner?: 'flow' | 'address' }): FlowTableState => declared({ kind: 'flow-table', scope: 'per-flow', owner: 'flow', merges: false, ...t }),
  /**
   * A table keyed by the source address (FlowKey.fromSource). By default each shard keeps the part it
   * saw and the parts merge field by field (`merge`: sum unless max or min is named); with `owned`, one
   * shard owns each address (its packets must come from sources with `steer: source-address`) and the
   * entry moves with the address's bucket.
   */
  sourceTable: ({ owned, ...t }: TableDeclaration & { owned?: boolean }): FlowTableState =>
    declared({ kind: 'flow-table', scope: 'cross-flow', owner: 'address', merges: !owned, ...t }),
};

export interface PortSpec {
  name: string;
  doc: string;
  /** An optional output may be left unconnected; its packets are then dropped and counted. */
  optional?: boolean;
}

/** An element of the config on the other side of a reload: its parameters, and the config file they came from. */
export interface ReloadedElement { params: any; configFile: string }

/** What a handler sees of one element: its parameters and its state, merged over shards. */
export interface ElementView {
  readonly name: string;
  readonly params: Record<string, unknown>;
  /** The config file, to resolve paths in parameters against its folder. */
  readonly configFile: string;
  /** A scalar state field, merged over shards by its rule. */
  read(field: string): bigint;
  /** Zeroes every counter and gauge on every shard (not `internal` working state). */
  reset(): void;
  /** Sets a fast-path parameter on every shard (takes effect from the next batch). */
  setParam(name: string, value: unknown): void;
  /** A state.data region, writable: shards see a change from their next batch. */
  data(field: string): DataView;
  /**
   * The live entries of a table on every shard (per-flow entries from their owner; cross-flow parts not added up); with
   * `where`, only those whose key (its four words, in an array reused from entry to entry) it accepts, the others never
   * built (one subscriber's entries of a large table).
   */
  entries(table: string, where?: (key: TableEntry['key']) => boolean): TableEntry[];
  /**
   * How many live entries a table holds on every shard (a key whose parts several shards keep counted once); with `where`,
   * only those whose key it accepts. Builds no entry: cheap enough for a counter read on every /metrics scrape.
   */
  count(table: string, where?: (key: TableEntry['key']) => boolean): number;
  /** The pipeline's clock in ns (the trace's time with a virtual clock). */
  now(): bigint;
  /** Whether the element's state was loaded from a snapshot file (`run --restore`), not carried over by a reload or new. */
  readonly restored: boolean;
  /**
   * In the first periodic call only (before the first packet): the bytes a restored snapshot or a reload held for a
   * state.data field that the element's parameters now lay out otherwise, so that it started afresh; for an element
   * that must carry something of them over by hand (a NAT keeps the port blocks they name from other subscribers).
   */
  unrestored(field: string): DataView | undefined;
  /** The element of this name and type in the config that a reload replaced: its parameters and config file. */
  readonly previous?: ReloadedElement;
  /** In the final periodic call ('handover'): the element of the reloaded config that carries this one's state on (its parameters and config file). */
  readonly next?: ReloadedElement;
  /** Writes a line to the pipeline's log, prefixed with the element's name. */
  log(message: string): void;
  /** The file descriptor for lines an element prints: standard output, or standard error when stdout carries the results (run --json). */
  readonly printFd: number;
}

export interface TableEntry {
  shard: number;
  /** The key's four 32-bit words, as FlowKey writes them. */
  key: [number, number, number, number];
  expires: bigint;
  value: Record<string, bigint>;
}

export interface HandlerSpec {
  doc: string;
  /** Shown in the counters table and in --json; by default a read-only handler that takes no argument is. */
  counter?: boolean;
  /** Its value only ever grows (a Prometheus counter in /metrics); by default a handler's value is a gauge. */
  monotonic?: boolean;
  /** Reading it needs the control API's token, as changes do: it shows what a user does (a subscriber's destinations). */
  private?: boolean;
  /** `arg` is what follows the handler's name (`ctl read nat.subscriber 100.64.0.5`), or undefined. */
  read?: (view: ElementView, arg?: string) => unknown;
  /**
   * Whether `read` takes an argument; by default, when it declares a second parameter without a default value (one
   * with a default, or `...rest`, does not count in the function's length, so say it here). One that takes none is refused one.
   */
  takesArgument?: boolean;
  write?: (view: ElementView, value: string) => void;
}

/** The I/O side of a source: reads packets into slots and submits them to the shards. */
export interface SourceDriver {
  /** Submits up to `budget` packets; returns how many it submitted. */
  pump(budget: number): number;
  /** True once the source will submit nothing more. */
  readonly done: boolean;
  /**
   * Set, with done, when an error ended the source (a corrupt record): the pipeline first sends on the packets it
   * submitted before, then fails with it.
   */
  readonly failure?: Error;
  /** Nanoseconds to wait before the next pump is worth it (pacing), or 0. */
  waitNs?(): number;
  /**
   * Sleeps up to `maxMs` until this source, or another of its kind in the process, may have packets
   * (a device source sleeps in the kernel). Called, on one of them, when every source has it and
   * none has anything: the engine then spends no CPU and wakes at once instead of after a timer.
   */
  idle?(maxMs: number): void;
  /** Fraction of the input read so far, for a progress bar; undefined when unknown. */
  progress?(): number | undefined;
  /**
   * Closes the source. `next`: a reload stops this pipeline, and the config it starts has an element of this name and
   * type (a device source hands its open socket over to it, so that frames arriving meanwhile wait in its ring).
   */
  close(next?: ReloadedElement): void;
}

/** The I/O side of a sink: writes out the packets the shards sent it. */
export interface SinkDriver {
  /**
   * Writes the packets of the sink's batch at `batch`, returns their slots to the pool, and says how many it wrote
   * out (the run's packets_out adds these up): fewer when it had to leave some out (a device refused them, say).
   */
  write(batch: number): number;
  /** Finishes the output completely (flushes and closes files). */
  close(): void;
}

export interface IoContext {
  readonly name: string;
  readonly params: any;
  /** The I/O instance's exports: the runtime's io functions plus this element's `ioExports`. */
  readonly exports: Record<string, any>;
  readonly arena: MemoryArena;
  /** Address of this element's state block on the I/O side. */
  readonly self: number;
  /** Offset of a field of the element's layout class in its state block. */
  fieldOffset(field: string): number;
  /** Source or sink number, to pass to the fast path. */
  readonly port: number;
  readonly configFile: string;
  /** Bytes of frame a packet slot holds. */
  readonly slotRoom: number;
  log(message: string): void;
  /** The file descriptor for lines an element prints: standard output, or standard error when stdout carries the results (run --json). */
  readonly printFd: number;
  /** After a reload, the element of this name and type in the pipeline this one replaced, if it had one (a sink goes on with its file). */
  readonly previous?: ReloadedElement;
  /** Some source is live (a device): packets come whether or not the pipeline keeps up, so a sink that waits loses them there. */
  readonly live: boolean;
}

/** Something valid but probably not meant (a rule that can never match), reported at config load without failing it. */
export interface ParamWarning {
  message: string;
  /** The parameter it is about, and where inside its value. */
  param: string;
  at?: ValueLocation;
  hint?: string;
}

export interface ElementDefinition {
  /** The name configs use (`type: FlowCount`), unique among the element folders loaded. */
  type: string;
  /** One line, without a full stop: `wirepath elements` lists it. */
  summary: string;
  /** What it does, in full: the first paragraph of its documentation. */
  description?: string;
  /** Input port count; an element with several receives `port` as the 4th argument of process. */
  inputs: number;
  /** The output ports, or a function of the parameters that makes them (a Tee's `outputs`). */
  outputs: PortSpec[] | ((params: any) => PortSpec[]);
  /** Its parameters, by name (`param.*`); none when left out. */
  params?: Record<string, ParamSpec<any>>;
  /** Its state, by name (`state.*`): the engine moves, merges and snapshots it from these declarations. */
  state?: Record<string, StateField>;
  /** Handlers beyond those made for every parameter and state field (and `reset`); one of such a name replaces the one made for it. */
  handlers?: Record<string, HandlerSpec>;
  /** Warnings about parameter values that parse but are probably mistakes; called once the parameters are valid. */
  warnings?: (params: any) => ParamWarning[];
  /**
   * Mistakes that only a combination of parameters shows (each parameter alone is valid), or the parameters with the
   * pipeline's settings (`slotSize`, and `slotRoom`: the bytes of a frame a slot holds after the usual headroom): config errors.
   */
  invalid?: (params: any, pipeline: { slotSize: number; slotRoom: number }) => ParamWarning[];
  /**
   * Packets it keeps at the moment, waiting in its state (an ARPQuerier's, for their next hop's answer): the end of a
   * run counts their slots as in use, not as lost.
   */
  holding?: (view: ElementView) => number;
  /** A config snippet that uses the element: its documentation ends with it. */
  example?: string;
  /**
   * Why two runs of one trace give different output with these parameters (a random choice, say), or
   * undefined when they do not: `wirepath verify` refuses such a config and says this, with `hint`.
   */
  varies?: (params: any) => { why: string; hint?: string } | undefined;
  /**
   * Most packets an element emits on one output per packet it receives (2 for an element that splits packets in
   * two), or a function of its parameters when they decide it (a NAT fragmenting to an MTU).
   */
  expands?: number | ((params: any) => number);
  /**
   * Packets it makes (clonePacket, newPacket) per packet it receives, or a function of its parameters (Tee: outputs - 1);
   * sizes the shard's stash of free slots.
   */
  clones?: number | ((params: any) => number);
  /** Sources and sinks run on the I/O side; their process.ts holds the per-packet I/O loops. */
  source?: (ctx: IoContext) => SourceDriver;
  sink?: (ctx: IoContext) => SinkDriver;
  /**
   * For an element that opens something outside (a network device, a file it writes): checks without opening it what
   * opening would need (the interface exists, is up and its frames fit a slot; the file's folder can be written),
   * throwing what opening would throw. A reload runs it for the new config before it stops the running pipeline, so
   * that such a config changes nothing. `configFile`: the config's path, which relative file parameters start from.
   */
  check?: (ctx: { name: string; params: any; slotRoom: number; configFile: string }) => void;
  /**
   * A source the outside world feeds at its own pace (a network device), whose kernel side needs CPU
   * too: with `threads: auto` on two cores or fewer, its graph runs on the I/O thread.
   */
  live?: boolean;
  /** Functions of process.ts the TypeScript half calls on the I/O side. */
  ioExports?: string[];
  /**
   * Control-plane work done on the main thread while the pipeline runs, every `everyMs` ('due') and once more
   * when it stops (a NAT writes its port-block log; a load balancer checks backends): 'end' when the element's
   * state ends with the run, 'handover' when a reloaded pipeline carries it on.
   */
  periodic?: { everyMs: number; run: (view: ElementView, call: 'due' | 'end' | 'handover') => void };
  /**
   * The element steers packets to shards: process.ts exports `steer(self, p: Packet): u32`, which the
   * dispatcher calls for the packets of sources configured with `steer: NAME` of this element. It returns
   * a hash; the packet goes to the shard that owns bucket `hash & (1024 - 1)`. `self` is shard 0's
   * state block (tables there are shard 0's; shared data is everyone's). The doc says which packets it is for.
   */
  steer?: string;
  /**
   * The element has timed work that must not wait for its next packet: process.ts exports
   * `tick(self, out: Outputs): void`, called when the element has had no packets for 100 ms of the clock: after the
   * shard's next batch, or, when the clock runs on real time (`--clock wall`, or trace time fed only by devices) and
   * the shard has no packets at all, every 100 ms with now() moved on. What it pushes goes on through the graph.
   * The doc says what it does.
   */
  tick?: string;
  /**
   * The element must see a datagram's first fragment before its later ones (which carry no ports): for
   * the sources whose packets reach it, the I/O side holds a later fragment that comes before its first
   * and sends it on right after the first (or, when the first does not come within 2 s of packet time,
   * as it is). With several shards, the pieces meet on one only if the element steers them there (`steer`,
   * as a NAT does): flow steering sends a first fragment with its 5-tuple's flow, the later ones by addresses.
   */
  firstFragmentFirst?: boolean;
  /**
   * Code made for this instance's parameters (as Click's fastclassifier compiles an IPClassifier's rules):
   * AssemblyScript source of a module that replaces process.ts for this instance, exporting the same
   * `process`. It lives in the element's folder, so it imports the element's files as process.ts does
   * (`./process`, `./layout`). Undefined where process.ts serves as well. A change of the parameters
   * it depends on means a new compile.
   */
  specialize?: (params: any) => string | undefined;
}

/** An element as the engine knows it: its declaration plus where its files are. */
export interface ElementType extends ElementDefinition {
  params: Record<string, ParamSpec<any>>;
  dir: string;
  kind: 'element' | 'source' | 'sink';
}

export function defineElement<const D extends ElementDefinition>(definition: D): D {
  return definition;
}

export function outputsOf(type: ElementDefinition, params: Record<string, unknown>): PortSpec[] {
  return typeof type.outputs === 'function' ? type.outputs(params) : type.outputs;
}

/** Most packets the element emits on one output per packet it receives (its `expands`, 1 when it declares none). */
export function expansionOf(type: ElementDefinition, params: Record<string, unknown>): number {
  return typeof type.expands === 'function' ? type.expands(params) : type.expands ?? 1;
}

/** Packets the element makes per packet it receives (its `clones`, 0 when it declares none). */
export function clonesOf(type: ElementDefinition, params: Record<string, unknown>): number {
  return typeof type.clones === 'function' ? type.clones(params) : type.clones ?? 0;
}

/**
 * The parameters an element instance was set up by, which a running pipeline cannot change: those declared
 * fixed, and those its state declarations, ports or specialized code read (found by giving those functions its
 * parameters through a proxy that notes every one read), also with any one of its switches turned the other way
 * (a stateless Filter's capacity sizes nothing, but would once stateful: the docs and a write agree on it).
 * The room its outputs need is compared by value (setParam).
 */
export function setUpBy(type: ElementType, params: Record<string, unknown>): Set<string> {
  const functions = [
    ...Object.values(type.state ?? {}).flatMap((field) => Object.values(field as object) as unknown[]),
    type.outputs, type.specialize,
  ];
  const switched = Object.entries(params).filter(([, v]) => typeof v === 'boolean').map(([name, v]) => ({ ...params, [name]: !v }));
  const read = new Set([params, ...switched].flatMap((variant) => [...paramsReadBy(variant, functions)]));
  for (const [name, spec] of Object.entries(type.params)) if (spec.fixed) read.add(name);
  return read;
}

/** The parameters the functions among `functions` read when given `params` (through a proxy that notes each one read). */
export function paramsReadBy(params: Record<string, unknown>, functions: unknown[]): Set<string> {
  const read = new Set<string>();
  const noting = new Proxy(params, { get: (target, key) => { if (typeof key === 'string') read.add(key); return target[key as string]; } });
  for (const f of functions) {
    if (typeof f !== 'function') continue;
    try {
      f(noting);
    } catch {
      // What it read before it threw is noted; the rest does not matter here.
    }
  }
  return read;
}
