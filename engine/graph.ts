// Checks a config's connections against the elements' ports and orders the graph for execution.

import { toJson } from './report.ts';
import { ConfigError, ConfigErrors, didYouMean } from './errors.ts';
import { STEERING } from './registry.ts';
import { outputsOf, expansionOf, type ElementType, type PortSpec } from './element.ts';
import { inFileOrder, type ElementInstance, type PipelineConfig } from './config.ts';
import type { Endpoint } from './connections.ts';

export interface GraphNode {
  /** Position in execution (topological) order. */
  index: number;
  name: string;
  type: ElementType;
  instance: ElementInstance;
  inputs: number;
  outputs: PortSpec[];
  /** For each output port, the node and input port it feeds, or null when an optional port is left open. */
  targets: ({ node: string; port: number } | null)[];
  /** For each input port, the nodes that feed it. */
  feeders: { node: string; port: number }[][];
  /** For each input port, the most packets its batch can receive in one step. */
  inputCapacity: number[];
  /** Number among the graph's sources (FromPcap, Generator...) or sinks (ToPcap...), or -1. */
  sourceId: number;
  sinkId: number;
}

export interface Graph {
  nodes: GraphNode[];
  byName: Map<string, GraphNode>;
  sources: GraphNode[];
  sinks: GraphNode[];
}

export function buildGraph(config: PipelineConfig): Graph {
  const errors: ConfigError[] = [];
  const byName = new Map<string, GraphNode>();
  for (const instance of config.elements.values()) {
    const outputs = outputsOf(instance.type, instance.params);
    byName.set(instance.name, {
      index: -1, name: instance.name, type: instance.type, instance,
      inputs: instance.type.inputs, outputs,
      targets: outputs.map(() => null),
      feeders: Array.from({ length: instance.type.inputs }, () => []),
      inputCapacity: [], sourceId: -1, sinkId: -1,
    });
  }

  // A name in the middle of a chain is in two connections at one position: reported once.
  const reported = new Set<string>();
  // Elements a misspelled name probably meant: their ports left open are that mistake, not another one.
  const meant = new Set<string>();
  const lookup = (end: Endpoint): GraphNode | undefined => {
    const node = byName.get(end.name);
    const where = `${end.position.line}:${end.position.col}`;
    if (!node && !reported.has(where)) {
      reported.add(where);
      const guess = didYouMean(end.name, byName.keys());
      if (guess) meant.add(guess);
      errors.push(new ConfigError(`connection names unknown element '${end.name}'`, end.position,
        guess ? `did you mean '${guess}'?` : `declare it under elements: or use one of ${[...byName.keys()].join(', ')}`));
    }
    return node;
  };

  // What a rejected connection meant to join, already reported: not reported again as left open.
  const triedOutputs = new Set<string>();
  const triedInputs = new Set<string>();
  for (const { from, to } of config.connections) {
    const a = lookup(from), b = lookup(to);
    if (a && from.port >= a.outputs.length) {
      errors.push(new ConfigError(`${a.name} (${a.type.type}) has no output ${from.port}`, from.position,
        a.outputs.length ? `its outputs are ${a.outputs.map((p, i) => `[${i}] ${p.name}`).join(', ')}` : `${a.type.type} has no outputs`));
    }
    if (b && to.port >= b.inputs) {
      errors.push(new ConfigError(`${b.name} (${b.type.type}) has no input ${to.port}`, to.position,
        b.inputs === 0 ? `${b.type.type} is a source and has no inputs` : b.inputs === 1 ? 'it has one input, [0]' : `its inputs are [0] to [${b.inputs - 1}]`));
    }
    const existing = a?.targets[from.port];
    if (a && b && existing && to.port < b.inputs) {
      errors.push(new ConfigError(`output ${a.name}[${from.port}] is connected twice (to ${existing.node} and ${b.name})`, from.position,
        'an output feeds exactly one input; put a Tee in between to copy packets to both'));
    }
    if (!a || !b || from.port >= a.outputs.length || to.port >= b.inputs || existing) {
      triedOutputs.add(`${from.name}[${from.port}]`);
      triedInputs.add(to.name);
      continue;
    }
    a.targets[from.port] = { node: b.name, port: to.port };
    b.feeders[to.port].push({ node: a.name, port: from.port });
  }

  for (const node of byName.values()) {
    node.outputs.forEach((port, i) => {
      if (!node.targets[i] && !port.optional && !triedOutputs.has(`${node.name}[${i}]`) && !meant.has(node.name)) {
        errors.push(new ConfigError(`output ${node.name}[${i}] (${port.name}) is not connected`, node.instance.position,
          `connect it, e.g. ${connectionToDiscard(byName, `${node.name}[${i}]`)}`));
      }
    });
    node.feeders.forEach((feeders, i) => {
      if (feeders.length === 0 && !triedInputs.has(node.name) && !meant.has(node.name)) {
        // The example feeds it from an output of the config that is free (a source's first), else a placeholder.
        const free = [...byName.values()].filter((n) => n !== node).sort((a, b) => Number(b.type.kind === 'source') - Number(a.type.kind === 'source'))
          .flatMap((n) => n.outputs.map((_, j) => (n.targets[j] ? [] : [j ? `${n.name}[${j}]` : n.name])).flat());
        const feeder = free[0] ?? 'NAME';
        errors.push(new ConfigError(`nothing feeds ${node.name}${node.inputs > 1 ? `[${i}]` : ''}`, node.instance.position,
          `connect an output to it, e.g. "${feeder} -> ${node.inputs > 1 ? `[${i}]` : ''}${node.name}", or remove it`));
      }
    });
    const steer = node.type.kind === 'source' ? String(node.instance.params.steer) : 'flow';
    if (!(STEERING as readonly string[]).includes(steer) && !byName.get(steer)?.type.steer) {
      const steering = [...byName.values()].filter((n) => n.type.steer).map((n) => n.name);
      errors.push(new ConfigError(`${node.name}.steer: '${steer}' is neither ${STEERING.join(', ')} nor an element that steers`, node.instance.position,
        steering.length ? `elements here that steer: ${steering.join(', ')}` : `use ${STEERING.join(', ')}`));
    }
  }
  if (errors.length) throw new ConfigErrors(inFileOrder(errors));

  const nodes = topologicalOrder(byName, errors);
  if (errors.length) throw new ConfigErrors(errors);
  let sources = 0, sinks = 0;
  for (const node of nodes) {
    if (node.type.kind === 'source') node.sourceId = sources++;
    if (node.type.kind === 'sink') node.sinkId = sinks++;
  }
  computeCapacities(nodes, config.batch);
  return { nodes, byName, sources: nodes.filter((n) => n.sourceId >= 0), sinks: nodes.filter((n) => n.sinkId >= 0) };
}

function topologicalOrder(byName: Map<string, GraphNode>, errors: ConfigError[]): GraphNode[] {
  const pending = new Map([...byName.values()].map((n) => [n.name, n.feeders.reduce((s, f) => s + f.length, 0)]));
  const ready = [...byName.values()].filter((n) => pending.get(n.name) === 0);
  const order: GraphNode[] = [];
  while (ready.length) {
    const node = ready.shift()!;
    node.index = order.length;
    order.push(node);
    for (const t of node.targets) {
      if (!t) continue;
      const left = pending.get(t.node)! - 1;
      pending.set(t.node, left);
      if (left === 0) ready.push(byName.get(t.node)!);
    }
  }
  if (order.length < byName.size) {
    const cycle = onCycles(byName, [...byName.values()].filter((n) => n.index < 0));
    errors.push(new ConfigError(`the connections form a cycle through ${cycle.map((n) => n.name).join(', ')}`, cycle[0].instance.position,
      'packets must flow from sources to sinks without returning to an element they passed'));
  }
  return order;
}

/** Of the nodes the ordering could not place, those on a cycle: the others only hang below one. */
function onCycles(byName: Map<string, GraphNode>, stuck: GraphNode[]): GraphNode[] {
  const left = new Set(stuck);
  for (let removed = true; removed;) {
    removed = false;
    for (const node of left) {
      if (!node.targets.some((t) => t && left.has(byName.get(t.node)!))) {
        left.delete(node);
        removed = true;
      }
    }
  }
  return stuck.filter((n) => left.has(n));
}

function computeCapacities(nodes: GraphNode[], batch: number): void {
  const outCapacity = new Map<string, number>();
  for (const node of nodes) {
    node.inputCapacity = node.feeders.map((feeders) => feeders.reduce((sum, f) => sum + outCapacity.get(f.node)!, 0));
    const received = node.type.kind === 'source' ? batch : node.inputCapacity.reduce((a, b) => a + b, 0);
    outCapacity.set(node.name, received * expansionOf(node.type, node.instance.params));
  }
}

/**
 * For each output port, whether another output of the same element feeds the same input: such ports
 * get a batch of their own, emptied into the shared input after the element runs, so that each
 * port's packet count stays its own.
 */
export function sharesTarget(node: GraphNode): boolean[] {
  return node.targets.map((t, i) => t !== null && node.targets.some((u, j) => j !== i && u !== null && u.node === t.node && u.port === t.port));
}

/**
 * With more than one shard, a table owned by an address (a host-owned source table, a NAT's subscriber state)
 * lives on the shard that owns the address's bucket: every source feeding its element must steer by the
 * source address or by an element that steers. A table keyed by what its element's steer finds (keyedBySteer)
 * needs sources that steer by an element of its type. Otherwise packets reach shards that do not hold their entries.
 */
export function steeringErrors(graph: Graph): ConfigError[] {
  const tables = (node: GraphNode) => Object.values(node.type.state ?? {}).filter((s) => s.kind === 'flow-table');
  const errors: ConfigError[] = [];
  for (const source of graph.sources) {
    const steer = String(source.instance.params.steer);
    const by = graph.byName.get(steer);
    for (const node of graph.nodes) {
      const owned = steer !== 'source-address' && !by?.type.steer && tables(node).some((s) => s.owner === 'address' && !s.merges);
      const keyed = by?.type !== node.type && tables(node).some((s) => s.keyedBySteer);
      if (!(owned || keyed) || !reaches(graph, source, (n) => n === node)) continue;
      const whose = keyed ? 'whose table is keyed by what only its steering finds' : 'whose state is owned by an address';
      const steering = node.type.steer ? `steer: ${node.name}` : 'steer: source-address';
      errors.push(new ConfigError(`${source.name} feeds ${node.name} (${node.type.type}), ${whose}, but steers by ${steer}: `
        + 'with more than one shard its packets would reach shards that do not hold their entries', source.instance.position, `add ${steering} to ${source.name}`));
    }
  }
  return errors;
}

/** Whether packets from `from` can reach (downstream, through any outputs) a node for which `test` holds. */
export function reaches(graph: Graph, from: GraphNode, test: (node: GraphNode) => boolean): boolean {
  const seen = new Set<GraphNode>();
  const visit = (node: GraphNode): boolean => {
    if (seen.has(node)) return false;
    seen.add(node);
    return test(node) || node.targets.some((t) => t !== null && visit(graph.byName.get(t.node)!));
  };
  return from.targets.some((t) => t !== null && visit(graph.byName.get(t.node)!));
}

/**
 * What decides the bucket each packet reaching `node` was steered by, and what changed the packet before it came:
 * the sources that reach it with their `steer` (and the element they name, with its parameters), and every element
 * on the way with its parameters and connections. Per-flow entries keep the steering their packets recorded in
 * another pipeline (a reload's, a snapshot file's) only when this is the same there.
 */
export function steeringPath(graph: Graph, node: GraphNode): string {
  const before = graph.nodes.filter((n) => n !== node && reaches(graph, n, (t) => t === node));
  const params = (n: GraphNode) => toJson(n.instance.params);
  return JSON.stringify(before.map((n) => {
    if (n.type.kind !== 'source') return [n.name, n.type.type, params(n), n.targets];
    const steer = String(n.instance.params.steer ?? 'flow');
    const by = graph.byName.get(steer);
    return [n.name, n.type.type, steer, by ? [by.type.type, params(by)] : null, n.targets];
  }));
}

/** The hint's connection to a Discard: the config's own (whatever its name), or a new one under a name no element has. */
function connectionToDiscard(byName: Map<string, GraphNode>, output: string): string {
  const discard = [...byName.values()].find((node) => node.type.type === 'Discard');
  if (discard) return `"${output} -> ${discard.name}"`;
  for (let n = 1; ; n++) {
    const name = n === 1 ? 'drop' : `drop${n}`;
    const other = byName.get(name);
    if (other?.type.type === 'Discard') return `"${output} -> ${name}"`;
    if (!other) return `"${output} -> ${name}" with ${name}: { type: Discard }`;
  }
}
