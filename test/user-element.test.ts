// An element written outside elements/ (test/fixtures/user-elements) compiles into the same fast
// path as the built-in ones, and its flow table keeps flows on the trace's virtual clock.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cpSync, mkdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir, removeDir, runConfig, writePcap, ipv4Frame, cli, ROOT } from './helpers.ts';
import { loadRegistry } from '../engine/registry.ts';
import { loadConfig } from '../engine/config.ts';
import { Pipeline } from '../engine/pipeline.ts';
import { startControl } from '../engine/control.ts';

const USER_ELEMENTS = join(ROOT, 'test/fixtures/user-elements');
const T0 = 1_700_000_000;

// The clock is read once per batch (trace time: the end of the batch's millisecond); batch 1 makes it per packet.
const config = (capacity: number, timeout: string) => `
batch: 1
element_dirs: [${USER_ELEMENTS}]
elements:
  src: { type: FromPcap, file: in.pcap }
  fc:  { type: FlowCount, capacity: ${capacity}, timeout: ${timeout} }
  out: { type: ToPcap, file: out.pcap }
connections:
  - src -> fc -> out
`;

/** A copy of the FlowCount fixture in `folder`, with its `file` edited by `edit`; returns that file's path. */
function editedFlowCount(folder: string, file: 'element.ts' | 'process.ts', edit: (text: string) => string): string {
  cpSync(join(USER_ELEMENTS, 'flow-count'), folder, { recursive: true });
  const path = join(folder, file);
  writeFileSync(path, edit(readFileSync(path, 'utf8')));
  return path;
}

/** Packets of flows A, B, C at trace times (seconds after T0). */
function trace(dir: string, packets: [flow: 'A' | 'B' | 'C', seconds: number][]): void {
  const ports = { A: 1001, B: 1002, C: 1003 };
  writePcap(join(dir, 'in.pcap'), packets.map(([flow, s]) => ({ data: ipv4Frame({ sport: ports[flow] }), sec: T0 + s, usec: 0 })));
}

test('a user element from another folder runs with its flow table', async () => {
  const dir = tempDir();
  try {
    trace(dir, [['A', 0], ['B', 1], ['A', 2], ['A', 3], ['B', 4]]);
    const result = await runConfig(dir, config(1000, '30s'));
    assert.is(result.packets_out, 5);
    assert.is(result.elements.fc.type, 'FlowCount');
    assert.is(result.elements.fc.new_flows, 2);
    assert.is(result.elements.fc.flows, 2, 'two live flows in the table');
  } finally {
    removeDir(dir);
  }
});

test('flows expire after the idle timeout on the trace clock', async () => {
  const dir = tempDir();
  try {
    // A idles 100 s (> 30 s): seen anew. B stays within 20 s gaps: one flow.
    trace(dir, [['A', 0], ['B', 10], ['B', 30], ['B', 50], ['B', 70], ['B', 90], ['A', 100]]);
    const result = await runConfig(dir, config(1000, '30s'));
    assert.is(result.elements.fc.new_flows, 3);
  } finally {
    removeDir(dir);
  }
});

test('view.count and view.entries with a key test: live entries of every shard whose key it accepts, expired ones left out', async () => {
  const dir = tempDir();
  try {
    // A's 30 s are over when the trace ends; B and C are live, on whichever of the two shards their flows went to.
    trace(dir, [['A', 0], ['B', 80], ['C', 90], ['B', 95]]);
    writeFileSync(join(dir, 'test.yaml'), config(1000, '30s'));
    const pipeline = await Pipeline.create(await loadConfig(join(dir, 'test.yaml')), { shards: 2, threads: 'inline' });
    await pipeline.run();
    const view = pipeline.view('fc');
    const sourcePort = (port: number) => (key: number[]) => key[2] >>> 16 === port;
    assert.is(view.count('flows'), 2);
    assert.is(view.read('flows'), 2n);
    assert.is(view.count('flows', sourcePort(1002)), 1);
    assert.is(view.count('flows', sourcePort(1001)), 0, 'expired');
    const [b, ...others] = view.entries('flows', sourcePort(1002));
    assert.is(others.length, 0);
    assert.is(b.value.packets, 2n);
    assert.is(b.key[2] >>> 16, 1002, 'the key handed out is its own copy, not the array the test saw');
    assert.equal(view.entries('flows').map((e) => e.key[2] >>> 16).sort(), [1002, 1003]);
    assert.throws(() => view.count('new_flows'), /FlowCount has no table 'new_flows'/);
  } finally {
    removeDir(dir);
  }
});

test('a full table tracks no new flow and evicts no live one', async () => {
  const dir = tempDir();
  try {
    trace(dir, [['A', 0], ['B', 1], ['C', 2], ['C', 3], ['A', 4]]);
    const result = await runConfig(dir, config(2, '30s'));
    assert.is(result.elements.fc.new_flows, 2);
    assert.is(result.elements.fc.untracked, 2, 'both packets of C');
    assert.is(result.packets_out, 5, 'untracked packets still pass');
  } finally {
    removeDir(dir);
  }
});

test('a table at its capacity whose entries have expired takes new flows before the sweep reaches them', async () => {
  const dir = tempDir();
  try {
    // 1000 flows fill the table at 0 s; at 40 s all have expired (30 s), but the sweep after each packet has
    // seen 8 of the table's 2048 slots at a time: 20 new flows must find room all the same. (A new flow whose
    // probe meets expired entries frees them itself; the first of these, port 50000, meets an empty slot first.)
    const flow = (sport: number, sec: number) => ({ data: ipv4Frame({ sport }), sec: T0 + sec, usec: 0 });
    const old = Array.from({ length: 1000 }, (_, i) => flow(10000 + i, 0));
    const fresh = Array.from({ length: 20 }, (_, i) => flow(50000 + i, 40));
    writePcap(join(dir, 'in.pcap'), [...old, ...fresh]);
    const result = await runConfig(dir, config(1000, '30s'));
    assert.is(result.elements.fc.new_flows, 1020);
    assert.is(result.elements.fc.untracked, 0);
  } finally {
    removeDir(dir);
  }
});

test('--elements DIR loads user elements for the CLI too', () => {
  const listed = cli(['elements', '--elements', USER_ELEMENTS]);
  assert.is(listed.status, 0);
  assert.match(listed.stdout, /FlowCount\s+counts packets per IPv4 5-tuple/);
  const doc = cli(['elements', 'FlowCount', '--elements', USER_ELEMENTS]);
  assert.match(doc.stdout, /flows \(per-flow table\): per-flow packet and byte counts\. Each entry: packets u64, bytes u64/);
  // The generated ./layout its process.ts imports.
  const layout = cli(['elements', 'FlowCount', '--elements', USER_ELEMENTS, '--layout']);
  assert.is(layout.status, 0, layout.stderr);
  assert.match(layout.stdout, /export class FlowCountState \{[^}]*\n {2}flows: FlowTable;[^}]*\}/);
  assert.match(layout.stdout, /export class FlowCountFlowsEntry \{\n {2}packets: u64; \/\/ @0\n {2}bytes: u64; \/\/ @8\n\}/);
  // A mistake in a folder given on the command line is not placed in the config (it was at its 1:1).
  const dir = tempDir();
  try {
    elementFolder(dir, 'Counter', '', 'out.push(0, p);');
    writeFileSync(join(dir, 'config.yaml'), 'elements:\n  src: { type: Generator, count: 1 }\n  out: { type: Discard }\nconnections:\n  - src -> out\n');
    const clash = cli(['check', 'config.yaml', '--elements', dir], dir);
    assert.is(clash.status, 2);
    assert.ok(clash.stderr.startsWith(`element type Counter in ${join(dir, 'Counter')} is already defined in `), clash.stderr);
  } finally {
    removeDir(dir);
  }
});

test('an element folder anywhere, without package.json or node_modules, loads and runs', () => {
  const dir = tempDir();
  try {
    // The temporary folder is outside this package: 'wirepath' resolves only through the engine's own hooks.
    cpSync(join(USER_ELEMENTS, 'flow-count'), join(dir, 'flow-count'), { recursive: true });
    trace(dir, [['A', 0], ['B', 1], ['A', 2]]);
    writeFileSync(join(dir, 'config.yaml'), config(1000, '30s').replace(USER_ELEMENTS, './flow-count'));
    const run = cli(['run', 'config.yaml', '--json'], dir);
    assert.is(run.status, 0, run.stderr);
    assert.is(JSON.parse(run.stdout).elements.fc.new_flows, 2);
  } finally {
    removeDir(dir);
  }
});

test('read handlers in the counters: a bigint (a counter as the view reads it) is a number (the control API\'s answer stopped the pipeline); one that takes an argument is none; one that fails says so', async () => {
  const dir = tempDir();
  try {
    editedFlowCount(join(dir, 'flow-count'), 'element.ts', (text) => text.replace("  example:", `  handlers: {
    seen: { doc: 'new flows, as read', read: (view) => view.read('new_flows') },
    one: { doc: 'a flow, named', read: (view, arg) => { if (!arg) throw new Error('name a flow'); return arg; } },
    broken: { doc: 'always fails', read: () => { throw new Error('broken'); } },
    pick: { doc: 'a flow, or all of them', read: (view, arg = 'all') => arg, takesArgument: true },
  },
  example:`));
    trace(dir, [['A', 0], ['B', 1], ['A', 2]]);
    writeFileSync(join(dir, 'config.yaml'), config(1000, '30s').replace(USER_ELEMENTS, './flow-count'));
    const run = cli(['run', 'config.yaml', '--json'], dir);
    assert.is(run.status, 0, run.stderr);
    const counters = JSON.parse(run.stdout).elements.fc;
    assert.is(counters.seen, 2);
    assert.not.ok('one' in counters, 'a read that takes an argument is no counter');
    assert.is(counters.broken, 'failed: broken', 'a handler that fails spoils neither the others nor the run');
    const pipeline = await Pipeline.create(await loadConfig(join(dir, 'config.yaml')), { shards: 1 });
    await pipeline.run();
    const control = await startControl({ pipeline: () => pipeline }, { port: 0 });
    try {
      const answer = await fetch(`${control.url}/elements/fc/seen`);
      assert.is(answer.status, 200);
      assert.is((await answer.json()).value, 2);
      // Its argument has a default: the function's length does not count it, its declaration does.
      const picked = await fetch(`${control.url}/elements/fc/pick?arg=7`);
      assert.is(picked.status, 200);
      assert.is((await picked.json()).value, '7');
      assert.is((await fetch(`${control.url}/elements/fc/seen?arg=7`)).status, 400, 'one that takes none is refused one');
    } finally {
      await control.close();
    }
  } finally {
    removeDir(dir);
  }
});

test('entries whose value fields moved or were added since the snapshot (a newer element, then reloaded or restored) keep their values; ones whose field changed type (or went) are left out, and the log says so; a damaged snapshot is refused', async () => {
  const dir = tempDir();
  try {
    trace(dir, [['A', 0], ['B', 1], ['A', 2]]);
    /** The element of folder `version`, its flow table's value declared as `value`. */
    const versionOf = (version: string, value: string) => {
      cpSync(join(USER_ELEMENTS, 'flow-count'), join(dir, version), { recursive: true });
      const file = join(dir, version, 'element.ts');
      writeFileSync(file, readFileSync(file, 'utf8').replace("value: { packets: 'u64', bytes: 'u64' }", `value: ${value}`));
    };
    versionOf('before', "{ packets: 'u64', bytes: 'u64' }");
    versionOf('swapped', "{ bytes: 'u64', packets: 'u64' }");
    // A u16 and a u32 added: the layout puts the u32 first (fields are placed by size), behind the old ones.
    versionOf('grown', "{ packets: 'u64', bytes: 'u64', flags: 'u16', marks: 'u32' }");
    versionOf('narrowed', "{ packets: 'u64', bytes: 'u32' }");
    const pipelineOf = async (version: string, log?: (m: string) => void) => {
      writeFileSync(join(dir, `${version}.yaml`), config(1000, '30s').replace(USER_ELEMENTS, `./${version}`));
      return Pipeline.create(await loadConfig(join(dir, `${version}.yaml`)), { shards: 1, log });
    };
    const before = await pipelineOf('before');
    await before.run();
    const snapshot = await before.snapshot();
    const restoredAs = async (version: string) => {
      const lines: string[] = [];
      const pipeline = await pipelineOf(version, (m) => lines.push(m));
      pipeline.restore(snapshot);
      return { lines, entries: pipeline.view('fc').entries('flows').map((e) => e.value).sort((a, b) => Number(a.packets) - Number(b.packets)) };
    };
    const swapped = await restoredAs('swapped');
    assert.ok(swapped.lines.includes("fc.flows: the entries carried over (snapshot or reload) are laid out otherwise (packets u64 @0, bytes u64 @8; now bytes u64 @0, packets u64 @8): their fields are moved to where they are now"), swapped.lines.join('\n'));
    assert.equal(swapped.entries.map((v) => [v.packets, v.bytes]), [[1n, 60n], [2n, 120n]]);
    const grown = await restoredAs('grown');
    assert.ok(grown.lines.includes("fc.flows: the entries carried over (snapshot or reload) are laid out otherwise (packets u64 @0, bytes u64 @8; now packets u64 @0, bytes u64 @8, marks u32 @16, flags u16 @20): their fields are moved to where they are now, and marks, flags start at 0"), grown.lines.join('\n'));
    assert.equal(grown.entries.map((v) => [v.packets, v.bytes, v.marks, v.flags]), [[1n, 60n, 0n, 0n], [2n, 120n, 0n, 0n]]);
    const narrowed = await restoredAs('narrowed');
    assert.ok(narrowed.lines.includes("fc.flows: the entries carried over (snapshot or reload) are laid out otherwise (packets u64 @0, bytes u64 @8; now packets u64 @0, bytes u32 @8): left out, the table starts empty"), narrowed.lines.join('\n'));
    assert.equal(narrowed.entries, []);
    const damaged = structuredClone(snapshot);
    const flows = damaged.elements.fc.tables.flows;
    flows.records = Buffer.from(flows.records, 'base64').subarray(0, -7).toString('base64');
    const again = await pipelineOf('before');
    assert.throws(() => again.restore(damaged), /the snapshot's fc\.flows entries are cut short \(\d+ bytes, not a whole number of \d+-byte records\): the file is damaged/);
  } finally {
    removeDir(dir);
  }
});

/** Writes an element folder `name` under `dir`: its element.ts declaration (after type, summary, ports) and process.ts body. */
function elementFolder(dir: string, name: string, declaration: string, body: string): void {
  mkdirSync(join(dir, name));
  writeFileSync(join(dir, name, 'element.ts'), `import { defineElement } from 'wirepath';
export default defineElement({ type: '${name}', summary: 'a test element', inputs: 1, outputs: [{ name: 'out', doc: 'packets' }], ${declaration} });
`);
  writeFileSync(join(dir, name, 'process.ts'), `import { Batch, Outputs, PACKET_RESTEERED, clonePacket, dropPacket, resteer } from "wirepath";
import { ${name}State } from "./layout";
export function process(self: ${name}State, batch: Batch, out: Outputs): void {
  for (let i: u32 = 0; i < batch.count; i++) {
    const p = batch.packet(i);
    ${body}
  }
}
`);
}

test('packets an element\'s mistakes drop are counted and said: more pushed to an output than it received without expands; a packet handed back twice (it went round forever)', async () => {
  const dir = tempDir();
  try {
    trace(dir, Array.from({ length: 2000 }, () => ['A', 0] as ['A', number])); // one millisecond: full batches
    elementFolder(dir, 'Twice', 'clones: () => 1', 'out.push(0, p); const copy = clonePacket(p); if (copy) out.push(0, copy);');
    elementFolder(dir, 'Again', '', 'if (p.flags & PACKET_RESTEERED) out.push(0, p); resteer(p);');
    for (const [name, said] of [['Twice', /^\d+ packets dropped: an element pushed them to an output whose batch was full, .*declare `expands` in its element\.ts$/],
      ['Again', /^2000 packets dropped: an element handed them back to the dispatcher \(resteer\) a second time; check PACKET_RESTEERED/]] as const) {
      writeFileSync(join(dir, 'config.yaml'), `element_dirs: [.]\nelements:\n  src: { type: FromPcap, file: in.pcap }\n  x: { type: ${name} }\n  out: { type: Discard }\nconnections:\n  - src -> x -> out\n`);
      const lines: string[] = [];
      const pipeline = await Pipeline.create(await loadConfig(join(dir, 'config.yaml')), { shards: 1, log: (m) => lines.push(m) });
      const result = await pipeline.run();
      assert.ok(lines.some((l) => said.test(l)), `${name}: ${lines.join('\n')}`);
      const counter = name === 'Twice' ? 'overrun' : 'resteered_again';
      assert.ok(pipeline.runtimeStats().shards[0][counter] > 0, counter);
      if (name === 'Twice') assert.is(result.elements.out.in as number + pipeline.runtimeStats().shards[0].overrun, 4000, 'every copy delivered or counted');
    }
  } finally {
    removeDir(dir);
  }
});

test('a packet pushed to an output the element does not have (a negative one too) is dropped and counted, not sent on through whatever lies beyond its outputs', async () => {
  const dir = tempDir();
  try {
    trace(dir, Array.from({ length: 3000 }, () => ['A', 0] as ['A', number]));
    elementFolder(dir, 'Past', '', 'out.push(<i32>(i % 3) - 1, p);');
    // Batches of 3: each sends one packet to output -1, one to 0 and one to 1.
    writeFileSync(join(dir, 'config.yaml'), `batch: 3\nelement_dirs: [.]\nelements:\n  src: { type: FromPcap, file: in.pcap }\n  x: { type: Past }\n  out: { type: Discard }\nconnections:\n  - src -> x -> out\n`);
    const lines: string[] = [];
    const pipeline = await Pipeline.create(await loadConfig(join(dir, 'config.yaml')), { shards: 1, log: (m) => lines.push(m) });
    const result = await pipeline.run();
    assert.is(result.elements.out.in, 1000, 'output 0 got its third, and nothing else');
    assert.is(pipeline.runtimeStats().shards[0].misrouted, 2000);
    assert.ok(lines.includes('2000 packets dropped: x (Past, 1 output) pushed them to an output it does not have'), lines.join('\n'));
    assert.is(result.packets_in, 3000);
    // More than the room the graph has for such packets in one call (each packet and two copies, to output 7): all
    // counted as misrouted, none as an overrun of the outputs it has.
    elementFolder(dir, 'Copies', 'clones: () => 2', 'out.push(7, p); for (let c = 0; c < 2; c++) { const copy = clonePacket(p); if (copy) out.push(7, copy); }');
    writeFileSync(join(dir, 'copies.yaml'), `batch: 3\nelement_dirs: [.]\nelements:\n  src: { type: FromPcap, file: in.pcap }\n  x: { type: Copies }\n  out: { type: Discard }\nconnections:\n  - src -> x -> out\n`);
    const copies = await Pipeline.create(await loadConfig(join(dir, 'copies.yaml')), { shards: 1 });
    await copies.run();
    const { misrouted, overrun } = copies.runtimeStats().shards[0];
    assert.equal([misrouted, overrun], [9000, 0]);
  } finally {
    removeDir(dir);
  }
});

test('packets an element neither pushes nor drops are said at the end of a run, with the elements that passed on fewer than they took; a run without such an element says nothing', async () => {
  const dir = tempDir();
  try {
    trace(dir, Array.from({ length: 1000 }, (_, i) => ['A', i / 1000] as ['A', number]));
    elementFolder(dir, 'Leaky', '', 'if (i % 10 != 0) out.push(0, p);');
    elementFolder(dir, 'Careful', '', 'if (i % 10 != 0) out.push(0, p); else dropPacket(p);');
    for (const [name, threads] of [['Leaky', 'inline'], ['Leaky', 'worker'], ['Careful', 'worker']] as const) {
      writeFileSync(join(dir, 'config.yaml'), `batch: 10\nelement_dirs: [.]\nelements:\n  src: { type: FromPcap, file: in.pcap }\n  x: { type: ${name} }\n  out: { type: Discard }\nconnections:\n  - src -> x -> out\n`);
      const lines: string[] = [];
      const pipeline = await Pipeline.create(await loadConfig(join(dir, 'config.yaml')), { shards: 2, threads, log: (m) => lines.push(m) });
      await pipeline.run();
      const said = lines.filter((l) => l.includes('neither sent on nor dropped'));
      if (name === 'Careful') assert.equal(said, [], lines.join('\n'));
      else {
        // The first packet of each batch is lost; how the packets fall into batches is the dispatcher's.
        const match = /^(\d+) packets were neither sent on nor dropped: an element must push \(out\.push\) or drop \(dropPacket\) every packet it receives, or its slot is lost for the rest of the run; these passed on fewer packets than they took: 'x' \(Leaky\) 1000 in, (\d+) out$/
          .exec(said.join('\n'));
        assert.ok(match, `${threads}: ${lines.join('\n')}`);
        const [, lost, out] = match!;
        assert.ok(Number(lost) >= 100, lost);
        assert.is(Number(lost), 1000 - Number(out));
      }
    }
  } finally {
    removeDir(dir);
  }
});

test('an element whose process.ts allocates (new, an array) is refused when its fast path compiles, naming the file and functions', () => {
  const dir = tempDir();
  try {
    mkdirSync(join(dir, 'Alloc'));
    writeFileSync(join(dir, 'Alloc', 'element.ts'), "import { defineElement } from 'wirepath';\n"
      + "export default defineElement({ type: 'Alloc', summary: 'allocates', inputs: 1, outputs: [{ name: 'out', doc: 'packets' }] });\n");
    writeFileSync(join(dir, 'Alloc', 'process.ts'), `import { Batch, Outputs } from "wirepath";
import { AllocState } from "./layout";
class Seen { n: u32 = 0; }
function pair(n: u32): u32[] { return [n, n + 1]; }
function plain(n: u32): u32 { return n + 1; }
function tally(n: u32): u32 { const m = new Map<u32, u32>(); m.set(n, 1); return m.get(n); }
export function process(self: AllocState, batch: Batch, out: Outputs): void {
  const seen = new Seen();
  seen.n = pair(plain(batch.count))[0] + tally(1);
  out.pushAll(0, batch);
}
`);
    writeFileSync(join(dir, 'config.yaml'), 'element_dirs: [.]\nelements:\n  src: { type: Generator, count: 10 }\n  x: { type: Alloc }\n  out: { type: Discard }\nconnections:\n  - src -> x -> out\n');
    const r = cli(['check', join(dir, 'config.yaml')]);
    assert.is(r.status, 2, 'a mistake in the user\'s code, as one the compiler finds');
    assert.match(r.stderr, /these functions allocate memory \(new, an array, a string\), which the fast path cannot/);
    // A generic's name (Map<u32,u32>) comes quoted in the module: the library's allocations are still the caller's.
    assert.ok(r.stderr.includes(`${join(dir, 'Alloc', 'process.ts')}: Seen#constructor (line 3), pair (line 4), tally (line 6), process (line 7)\n`), r.stderr);
    assert.match(r.stderr, /batchScratch\(\)/);
  } finally {
    removeDir(dir);
  }
});

test('a mistake in an element\'s process.ts is reported with its file\'s absolute path, line and column', () => {
  const dir = tempDir();
  try {
    const processFile = editedFlowCount(join(dir, 'flow-count'), 'process.ts', (text) => text.replace('entry.packets++', 'entry.pakets++'));
    trace(dir, [['A', 0]]);
    writeFileSync(join(dir, 'config.yaml'), config(1000, '30s').replace(USER_ELEMENTS, './flow-count'));
    const run = cli(['run', 'config.yaml'], dir);
    assert.is(run.status, 2, 'a mistake in the input, as a config\'s');
    assert.match(run.stderr, /the fast path did not compile:\nERROR TS2339: Property 'pakets' does not exist/);
    assert.ok(run.stderr.includes(`└─ in ${processFile}(`), run.stderr);
    const check = cli(['check', 'config.yaml'], dir);
    assert.is(check.status, 2, 'check compiles the fast path too');
    assert.match(check.stderr, /Property 'pakets' does not exist/);
  } finally {
    removeDir(dir);
  }
});

test('mistakes in an element\'s declaration, or a process.ts without the functions it names, are reported in those files, before a compile', () => {
  const dir = tempDir();
  try {
    const folder = join(dir, 'flow-count');
    const elementFile = join(folder, 'element.ts');
    const processFile = join(folder, 'process.ts');
    trace(dir, [['A', 0]]);
    writeFileSync(join(dir, 'config.yaml'), config(1000, '30s').replace(USER_ELEMENTS, './flow-count'));
    /** `check` with one file of the folder edited: its exit status and standard error. */
    const checkWith = (file: string, from: string, to: string) => {
      cpSync(join(USER_ELEMENTS, 'flow-count'), folder, { recursive: true });
      const text = readFileSync(file, 'utf8');
      assert.ok(text.includes(from), from);
      writeFileSync(file, text.replace(from, to));
      const r = cli(['check', 'config.yaml'], dir);
      assert.is(r.status, 2, r.stderr);
      return r.stderr;
    };
    // A table sized from a misspelt parameter: before, the run laid its tables out from NaN and wrote over the memory.
    assert.match(checkWith(elementFile, 'p.capacity,', 'p.capcity,'),
      `config.yaml:6:3: fc (FlowCount): ${elementFile}: state 'flows' (line 16): capacity(params) gave undefined, not a whole number of entries, at least 1`);
    assert.match(checkWith(elementFile, "param.int('most flows tracked at once', 1, 1 << 24, { default: 65536 })", "param.int('most flows tracked at once', 1, 1 << 24, { default: 0 })"),
      `${elementFile}: parameter 'capacity' (line 12): default 0 is out of range for a whole number (use a value from 1 to 16777216)`);
    // Several mistakes at once, each named: ports that are no list, a value type the fast path has not (it took u65 as u64).
    const several = checkWith(elementFile, "outputs: [{ name: 'out', doc: 'every packet' }],", "outputs: 1 as any, inputs: -1,");
    assert.match(several, `${elementFile}: inputs: -1 is not a number of input ports (0 or more); outputs: 1 is not a list of ports`);
    assert.match(checkWith(elementFile, "value: { packets: 'u64', bytes: 'u64' }", "value: { packets: 'u65' as any, bytes: 'u64' }"),
      `state 'flows' (line 16): value field 'packets' has type "u65", not one of u8, u16, u32, u64, i32, bool`);
    assert.match(checkWith(elementFile, "example:", "tick: 'sweeps', example:"),
      `${processFile} must export function tick(self: FlowCountState, out: Outputs): void (element.ts declares tick)`);
    assert.match(checkWith(elementFile, 'new_flows: state', 'capacity: state'),
      `${elementFile}: parameter 'capacity' and state field 'capacity' both make the layout field 'capacity'; rename one`);
    assert.match(checkWith(elementFile, 'not_ipv4: state', "'not-ipv4': state"), "state field 'not-ipv4' is not a name process.ts can use");
    assert.match(checkWith(elementFile, 'not_ipv4: state', 'reset: state'), "a state field named 'reset' would hide the handler that zeroes the counters; rename it");
    assert.match(checkWith(elementFile, "type: 'FlowCount'", "type: 'Flow-Count'"), "type 'Flow-Count' is not a name the generated code can use");
    assert.match(checkWith(elementFile, 'param.duration(', 'param.time('), `${elementFile}:13:20: param.time is not a function\n  hint: fix the element's declaration`);
    // A rule the engine does not know merged the shards' values by min, silently.
    assert.match(checkWith(elementFile, "state.counter('flows seen for the first time (or again after expiring)')", "state.gauge('flows seen', 'avg' as any)"),
      `state 'new_flows' (line 22): merge rule "avg" is not one of sum, max, min`);
    assert.match(checkWith(elementFile, "value: { packets: 'u64', bytes: 'u64' },", ''), "state 'flows' (line 16): value must name each field of an entry with its type");
    assert.match(checkWith(elementFile, 'timeout: param.duration(', "type: param.int('a kind', 0, 9, { default: 1 }), timeout: param.duration("),
      "a parameter named 'type' could never be set");
    assert.match(checkWith(elementFile, 'example:', "handlers: { odd: { doc: 'does nothing' } as any }, example:"), "handler 'odd' has neither read nor write");
    assert.match(checkWith(elementFile, 'example:', "warnings: () => ['oops'] as any, example:"),
      `fc (FlowCount): ${elementFile}: warnings() returned "oops", not a list of { param, message, hint?, at? } (ParamWarning)`);
    assert.match(checkWith(elementFile, "summary: 'counts packets per IPv4 5-tuple in a flow table',", ''), 'summary: the line `wirepath elements` lists, as a string, is missing');
    // A misspelt key was ignored: the handlers it declared did not exist, the example was never shown.
    assert.match(checkWith(elementFile, 'example:', 'exmaple:'), "'exmaple' is not a key of an element's declaration (did you mean 'example'?)");
    // The engine's own counts: a counter named 'in' showed in place of the packets the element took.
    assert.match(checkWith(elementFile, 'not_ipv4: state', 'in: state'),
      "'in' is the engine's own count of the element's packets (type, in, out, unconnected_drops): name your state field or handler otherwise");
    assert.match(checkWith(elementFile, "new_flows: state.counter('flows seen for the first time (or again after expiring)')", "rate_total: state.gauge('a rate', 'max')"),
      "state 'rate_total' (line 22): a gauge's name ends in _total, which /metrics keeps for counters");
    // /metrics had two wirepath_element_packets_in_total series for one element.
    assert.match(checkWith(elementFile, 'not_ipv4: state', 'element_packets_in: state'),
      "'element_packets_in' would be /metrics' wirepath_element_packets_in_total, one of the engine's own series");
    assert.match(checkWith(elementFile, "state.counter('flows seen for the first time (or again after expiring)')", 'state.counter(undefined as any)'),
      "state 'new_flows' (line 22): its first argument, the line that documents it, is missing");
    assert.match(checkWith(elementFile, 'example:', "handlers: { odd: { read: () => 1 } as any }, example:"), "handler 'odd': doc, the line that documents it, is missing");
    // /metrics showed it as wirepath_hit-rate, a name Prometheus refuses, and with it the whole scrape.
    assert.match(checkWith(elementFile, 'example:', "handlers: { 'hit-rate': { doc: 'hits per second', read: () => 1 } }, example:"),
      "handler 'hit-rate' is not a name /metrics can use (wirepath_hit-rate): letters, digits and _, not first a digit");
    // A negative minimum makes an i32: 5000000000 reached the fast path as 705032704.
    assert.match(checkWith(elementFile, "param.int('most flows tracked at once', 1, 1 << 24, { default: 65536 })", "param.int('most flows tracked at once', -1, 2 ** 40, { default: 65536 })"),
      'param.int with a negative min is an i32 in the fast path: min and max from -2147483648 to 2147483647, not min -1, max 1099511627776');
    // A forgotten doc shifts the arguments: that is what is said, not the range.
    assert.match(checkWith(elementFile, "param.int('most flows tracked at once', 1, 1 << 24, { default: 65536 })", '(param.int as any)(1, 1 << 24)'),
      "a parameter's first argument is the line that documents it, not 1");
    assert.match(checkWith(processFile, 'export function process(', 'export function processBatch('),
      `config.yaml:6:16: ${processFile} must export function process(self: FlowCountState, batch: Batch, out: Outputs): void\n  hint: the README's "Writing an element" shows the functions process.ts exports`);
  } finally {
    removeDir(dir);
  }
});

test('an element.ts edited since it was loaded is loaded anew by the next loadRegistry (as a reload loads the config\'s elements)', async () => {
  const dir = tempDir();
  try {
    const folder = join(dir, 'flow-count');
    cpSync(join(USER_ELEMENTS, 'flow-count'), folder, { recursive: true });
    const file = join(folder, 'element.ts');
    assert.is((await loadRegistry([dir])).get('FlowCount')!.summary, 'counts packets per IPv4 5-tuple in a flow table');
    writeFileSync(file, readFileSync(file, 'utf8').replace("summary: 'counts", "summary: 'now counts"));
    // Modification times may be as coarse as a second: the edit gets a later one.
    utimesSync(file, new Date(), new Date(Date.now() + 5000));
    assert.is((await loadRegistry([dir])).get('FlowCount')!.summary, 'now counts packets per IPv4 5-tuple in a flow table');
  } finally {
    removeDir(dir);
  }
});


test('a process.ts whose process does not take what the engine passes is named, with the signature the engine calls (the error was in a generated file)', () => {
  const dir = tempDir();
  try {
    const processFile = editedFlowCount(join(dir, 'flow-count'), 'process.ts',
      (text) => text.replace('batch: Batch, out: Outputs): void', 'batch: Batch, out: Outputs, port: i32, extra: i32): void'));
    writeFileSync(join(dir, 'config.yaml'), config(1000, '30s').replace(USER_ELEMENTS, './flow-count'));
    const r = cli(['check', 'config.yaml'], dir);
    assert.is(r.status, 2, 'a mistake in the user\'s code');
    assert.ok(r.stderr.includes(`${processFile}: the engine calls it as: export function process(self: FlowCountState, batch: Batch, out: Outputs): void; its process does not take that`), r.stderr);
  } finally {
    removeDir(dir);
  }
});

test('a compiled module is not reused once a file its process.ts imports from outside the element folders has changed', () => {
  const dir = tempDir();
  try {
    // The collection is elements/; the helper lies beside it, outside what the cache key covers.
    const folder = join(dir, 'elements', 'flow-count');
    editedFlowCount(folder, 'process.ts', (text) => `import { weight } from "../../lib/weight";\n${text.replace('self.new_flows++', 'self.new_flows += weight()')}`);
    mkdirSync(join(dir, 'lib'));
    trace(dir, [['A', 0], ['B', 1], ['A', 2]]);
    writeFileSync(join(dir, 'config.yaml'), config(1000, '30s').replace(USER_ELEMENTS, './elements/flow-count'));
    const newFlows = (weight: number) => {
      // A value no earlier run compiled: the first run compiles, whatever the cache holds.
      writeFileSync(join(dir, 'lib', 'weight.ts'), `export function weight(): u64 { return ${weight}; }\n`);
      const run = cli(['run', 'config.yaml', '--json'], dir);
      assert.is(run.status, 0, run.stderr);
      return JSON.parse(run.stdout).elements.fc.new_flows;
    };
    const first = 1 + Math.floor(Math.random() * 1000);
    assert.is(newFlows(first), 2 * first);
    assert.is(newFlows(first + 1), 2 * (first + 1), 'compiled anew, not the module of the first weight');
    assert.is(newFlows(first), 2 * first);
  } finally {
    removeDir(dir);
  }
});

test('a data field whose init throws is said by check, at its line in element.ts, and by run without a stack trace (exit 2 both)', () => {
  const dir = tempDir();
  try {
    // Four bytes asked for, twelve written.
    const elementFile = editedFlowCount(join(dir, 'flow-count'), 'element.ts', (text) => text.replace("    not_ipv4: state", `    limits: state.data({
      doc: 'a limit per flow class',
      size: () => 4,
      init: (p, bytes) => { bytes.setUint32(0, 1, true); bytes.setBigUint64(4, 2n, true); },
    }),
    not_ipv4: state`));
    const line = readFileSync(elementFile, 'utf8').split('\n').findIndex((l) => l.includes('setBigUint64')) + 1;
    trace(dir, [['A', 0]]);
    writeFileSync(join(dir, 'config.yaml'), config(1000, '30s').replace(USER_ELEMENTS, './flow-count'));
    for (const command of ['check', 'run']) {
      const r = cli([command, 'config.yaml'], dir);
      assert.is(r.status, 2, r.stderr);
      assert.match(r.stderr, `config.yaml:6:3: fc (FlowCount): ${elementFile}:${line}:`);
      assert.match(r.stderr, "state 'limits': init(params, bytes, address) threw Offset is outside the bounds of the DataView");
      assert.not.match(r.stderr, /\n\s+at /, 'no stack trace');
    }
  } finally {
    removeDir(dir);
  }
});

test('a periodic task that throws fails the run with its line in element.ts, without a stack trace; at the end, the counters are still shown', () => {
  const dir = tempDir();
  try {
    trace(dir, [['A', 0], ['B', 1]]);
    writeFileSync(join(dir, 'config.yaml'), config(1000, '30s').replace(USER_ELEMENTS, './flow-count'));
    for (const call of ['due', 'end']) {
      const elementFile = editedFlowCount(join(dir, 'flow-count'), 'element.ts', (text) => text.replace('  example:',
        `  periodic: { everyMs: 1, run: (view, call) => { if (call === '${call}') throw new Error('no report'); } },\n  example:`));
      const line = readFileSync(elementFile, 'utf8').split('\n').findIndex((l) => l.includes('no report')) + 1;
      const r = cli(['run', 'config.yaml'], dir);
      assert.is(r.status, 1, r.stderr);
      assert.match(r.stderr, `wirepath: fc (FlowCount): ${elementFile}:${line}:`);
      assert.match(r.stderr, `periodic.run(view, '${call}') threw no report`);
      assert.not.match(r.stderr, /\n\s+at /, 'no stack trace');
      // The final call failed after the packets went through: before, the run ended without its counters.
      if (call === 'end') assert.match(r.stdout, /fc\s+FlowCount\s+2\s+2/);
    }
  } finally {
    removeDir(dir);
  }
});

test('an element folder without process.ts yet shows its layout (elements TYPE --layout), which process.ts is written from; a config using it says what is missing', () => {
  const dir = tempDir();
  try {
    mkdirSync(join(dir, 'flow-count'));
    cpSync(join(USER_ELEMENTS, 'flow-count', 'element.ts'), join(dir, 'flow-count', 'element.ts'));
    const layout = cli(['elements', 'FlowCount', '--elements', dir, '--layout']);
    assert.is(layout.status, 0, layout.stderr);
    assert.match(layout.stdout, 'FlowCountFlowsEntry');
    writeFileSync(join(dir, 'config.yaml'), config(1000, '30s').replace(USER_ELEMENTS, './flow-count'));
    const check = cli(['check', 'config.yaml'], dir);
    assert.is(check.status, 2);
    assert.match(check.stderr, `${join(dir, 'flow-count', 'process.ts')} is missing`);
  } finally {
    removeDir(dir);
  }
});

test.run();
