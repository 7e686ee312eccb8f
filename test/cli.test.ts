// The wirepath command as a user runs it: output, error reports and exit codes.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { loadRegistry } from '../engine/registry.ts';
import { elementDoc, elementReference } from '../engine/docs.ts';
import { defineElement, param, types } from '../engine/api.ts';
import type { ElementType } from '../engine/element.ts';
import { declarationReference, runtimeReference } from '../engine/runtime-doc.ts';
import { statsTable } from '../engine/report.ts';
import { loadConfig } from '../engine/config.ts';
import { Pipeline } from '../engine/pipeline.ts';
import { ROOT, cli, tempDir, removeDir, readPcap } from './helpers.ts';

const USAGE_START = 'usage: wirepath <command> [options]\n';

let dir: string;
test.before(() => { dir = tempDir('wirepath-cli-'); });
test.after(() => removeDir(dir));

/** Writes a config into the temp folder and returns its name there. */
function writeConfig(name: string, ...lines: string[]): string {
  writeFileSync(join(dir, name), lines.join('\n') + '\n');
  return name;
}

// --- check ------------------------------------------------------------------------------------

test('check: the default config is valid', () => {
  const r = cli(['check', 'configs/default.yaml']);
  assert.is(r.stderr, '');
  assert.is(r.stdout, 'configs/default.yaml: ok (7 elements, 7 connections)\n');
  assert.is(r.status, 0);
});

test('check: every bundled config is valid', () => {
  for (const name of readdirSync(join(ROOT, 'configs')).filter((f) => f.endsWith('.yaml'))) {
    const r = cli(['check', `configs/${name}`]);
    assert.is(r.status, 0, `${name}: ${r.stderr}`);
    assert.match(r.stdout, new RegExp(`^configs/${name.replace('.', '\\.')}: ok`));
  }
});

/** A config with three mistakes. */
const brokenConfig = () => writeConfig('broken.yaml',
  'elements:',
  '  src: { type: FromPcap, file: in.pcap }',
  '  count: { type: Countr }',
  '  drop: { type: Discard, colour: red }',
  'connections:',
  '  - src -> -> drop');

test('check: a broken config prints every error as FILE:LINE:COL with its hint, then the count, and exits 2', () => {
  const r = cli(['check', brokenConfig()], dir);
  assert.is(r.status, 2);
  assert.is(r.stdout, '');
  assert.is(r.stderr, [
    "broken.yaml:3:18: unknown element type 'Countr'",
    "  hint: did you mean 'Counter'?",
    "broken.yaml:4:26: Discard has no parameter 'colour'",
    '  hint: Discard takes no parameters',
    'broken.yaml:6:12: connection: an element name is missing',
    '  hint: write NAME, NAME[OUT] or [IN]NAME between arrows, e.g. "tee[1] -> [0]count"',
    '3 errors',
    '',
  ].join('\n'));
});

test('check: 1500 rules of deny host compile (chained one after another; they overflowed the compiler\'s recursion once)', () => {
  const hosts = Array.from({ length: 1500 }, (_, i) => `'deny host 198.18.${i >> 8}.${i & 255}'`).join(', ');
  writeFileSync(join(dir, 'hosts.yaml'), `elements:\n  src: { type: FromPcap, file: in.pcap }\n  fw: { type: Filter, rules: [${hosts}] }\n  drop: { type: Discard }\nconnections:\n  - src -> fw -> drop\n`);
  const r = cli(['check', 'hosts.yaml'], dir);
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, /^hosts\.yaml: ok \(3 elements, 2 connections\)/);
});

test('check: graph errors are reported the same way', () => {
  const file = writeConfig('open.yaml',
    'elements:',
    '  src: { type: FromPcap, file: in.pcap }',
    '  tee: { type: Tee }',
    '  drop: { type: Discard }',
    'connections:',
    '  - src -> tee -> drop');
  const r = cli(['check', file], dir);
  assert.is(r.status, 2);
  assert.is(r.stderr, 'open.yaml:3:3: output tee[1] (copy1) is not connected\n'
    + '  hint: connect it, e.g. "tee[1] -> drop"\n1 error\n');
});

test('check: --set overrides are applied and checked', () => {
  assert.is(cli(['check', 'configs/default.yaml', '--set', 'tee.outputs=2', '--set', 'src.loop=true']).status, 0);
  const r = cli(['check', 'configs/default.yaml', '--set', 'rw.ip_src=203.0.113.300', '--set', 'rw2.dscp=1']);
  assert.is(r.status, 2);
  assert.is(r.stderr, [
    "--set rw2.dscp=1: the config has no element 'rw2'",
    "  hint: did you mean 'rw'?",
    "configs/default.yaml:7:27: rw.ip_src: '203.0.113.300' is not an IPv4 address (set on the command line)",
    '  hint: write four decimal numbers 0-255 separated by dots, e.g. 203.0.113.7',
    '2 errors',
    '',
  ].join('\n'));
});

test('run: --threads takes auto, worker or inline', () => {
  const r = cli(['run', 'configs/default.yaml', '--threads', 'two']);
  assert.is(r.status, 2);
  assert.match(r.stderr, "--threads must be one of auto, worker, inline, not 'two'");
  assert.match(cli(['run', 'configs/default.yaml', '--inline', '--threads', 'worker']).stderr, '--inline runs the shards on the I/O thread: leave out --threads worker');
  assert.is(cli(['run', 'configs/default.yaml', '--threads', 'inline', '--quiet']).status, 0);
});

test('check: a missing config file exits 2', () => {
  const r = cli(['check', 'no-such-config.yaml']);
  assert.is(r.status, 2);
  assert.is(r.stderr, 'config file no-such-config.yaml does not exist\n  hint: give the path of a YAML config, e.g. configs/default.yaml\n1 error\n');
});

test('check refuses the --shards, --clock and --threads that run refuses (it said ok to --shards 0)', () => {
  for (const [option, value, said] of [['--shards', '0', '--shards must be a whole number'], ['--shards', 'abc', '--shards must be'], ['--clock', 'foo', '--clock must be trace or wall'], ['--threads', 'x', '--threads must be one of']]) {
    const r = cli(['check', 'configs/default.yaml', option, value]);
    assert.is(r.status, 2, `${option} ${value}: ${r.stdout}`);
    assert.ok(r.stderr.startsWith(`wirepath: ${said}`), r.stderr);
  }
});

test('check: a folder instead of a config exits 2 without a stack trace', () => {
  const r = cli(['check', 'configs']);
  assert.is(r.status, 2);
  assert.is(r.stderr, 'config file configs is a folder\n  hint: give the path of a YAML config, e.g. configs/default.yaml\n1 error\n');
});

test('check: - reads the config from stdin', () => {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin/wirepath.js'), 'check', '-'], {
    cwd: join(ROOT, 'configs'), input: readFileSync(join(ROOT, 'configs/default.yaml')), encoding: 'utf8',
  });
  assert.is(r.stdout, '<stdin>: ok (7 elements, 7 connections)\n');
  assert.is(r.status, 0);
});

test('check: a missing --elements folder exits 2', () => {
  const r = cli(['check', 'configs/default.yaml', '--elements', 'no-such-folder']);
  assert.is(r.status, 2);
  assert.is(r.stderr, '--elements no-such-folder: the folder does not exist\n  hint: give a folder that holds element folders\n1 error\n');
});

test('check: without a config, or with two, is a usage error', () => {
  const none = cli(['check']);
  assert.is(none.status, 2);
  assert.ok(none.stderr.startsWith('wirepath: check needs a CONFIG file\n\nusage: wirepath check CONFIG [options]\n'), 'the command\'s own help');
  const two = cli(['check', 'configs/default.yaml', 'configs/other.yaml']);
  assert.is(two.status, 2);
  assert.ok(two.stderr.startsWith("wirepath: unexpected argument 'configs/other.yaml'\n"));
});

// --- elements and docs --------------------------------------------------------------------------

test('elements: lists every built-in type with its summary', async () => {
  const registry = await loadRegistry();
  const r = cli(['elements']);
  assert.is(r.status, 0);
  const lines = r.stdout.trimEnd().split('\n');
  assert.equal(lines.map((l) => l.split(' ')[0]), [...registry.keys()].sort());
  for (const line of lines) {
    const [, type, summary] = /^(\S+) +(.+)$/.exec(line)!;
    assert.is(summary, registry.get(type)!.summary);
  }
  assert.ok(lines.includes('Rewrite        rewrites Ethernet addresses, IPv4 addresses, ports, TTL and DSCP'));
});

test('elements TYPE: prints the documentation of one type', async () => {
  const r = cli(['elements', 'Rewrite']);
  assert.is(r.status, 0);
  const doc = r.stdout;
  assert.is(doc, elementDoc((await loadRegistry()).get('Rewrite')!));
  for (const part of [
    '## Rewrite\n\nrewrites Ethernet addresses, IPv4 addresses, ports, TTL and DSCP.\n',
    '**Ports.** Inputs: 1. Outputs:\n- [0] out: rewritten packets\n- [1] expired: packets whose TTL ran out (with dec_ttl) (optional)\n',
    '| name | type | default | description |\n|---|---|---|---|\n',
    '| ip_src | an IPv4 address | (unset) | new IPv4 source address |\n',
    '| dec_ttl | true or false | false | decrement the TTL, sending expired packets to output 1 |\n',
    '| dscp | a whole number from 0 to 63 | (unset) | new DSCP value (the ECN bits are kept) |\n',
    '**State.**\n- rewritten (all-flows, merged by sum): packets whose IPv4 header was processed\n',
    '**Handlers.**\n',
    '- ip_src (read/write): the ip_src parameter (an IPv4 address)\n',
    '- reset (write): zeroes the counters (its state fields, and its packets in and out)\n',
    '**Example.**\n\n```yaml\nrw: { type: Rewrite, ip_src: 203.0.113.7, dec_ttl: true }\n```\n',
  ]) assert.ok(doc.includes(part), `the doc lacks:\n${part}`);
});

test('elements TYPE: a type without parameters, state or handlers says so', () => {
  const r = cli(['elements', 'Discard']);
  assert.is(r.status, 0);
  for (const part of ['**Ports.** Inputs: 1. Outputs: none\n', '**Parameters.** None.\n', '**State.** None beyond', '**Handlers.** None.\n']) {
    assert.ok(r.stdout.includes(part), `the doc lacks:\n${part}`);
  }
  assert.ok(cli(['elements', 'FromPcap']).stdout.includes('| file | a string | (required) | the capture file, relative to the config file |\n'));
  // Ports made from a required parameter have no defaults to be shown with (a Classifier's patterns).
  assert.ok(cli(['elements', 'Classifier']).stdout.includes('- (the number of outputs follows the parameters; see above)\n'));
  assert.ok(cli(['elements', 'Tee']).stdout.includes('- (the number of outputs follows the parameters; shown here with the defaults)\n'));
});

test('elements TYPE: parameters a running pipeline cannot change say so; ports made from a required parameter do not break the doc', () => {
  const pcap = cli(['elements', 'ToPcap']).stdout;
  assert.ok(pcap.includes('- resolution (read; set at start): '), pcap);
  assert.ok(cli(['elements', 'FlowStats']).stdout.includes('- capacity (read; set at start): '));
  // Its table is sized by capacity only with stateful: true, not the default.
  assert.ok(cli(['elements', 'Filter']).stdout.includes('- capacity (read; set at start): '));
  assert.ok(cli(['elements', 'Counter']).stdout.includes('- reset (write): '));
  const split = defineElement({
    type: 'Split', summary: 'one output per network', inputs: 1, example: 'split: { type: Split, nets: [10.0.0.0/8] }',
    params: { nets: param.strings('networks', { required: true, item: types.cidr }), sample: param.int('every Nth packet', 1, 100, { default: 1 }) },
    outputs: (p) => (p.nets as unknown[]).map((_, i) => ({ name: `net${i}`, doc: 'packets of that network' })),
  });
  const doc = elementDoc({ ...split, dir: '', kind: 'element' } as ElementType);
  assert.ok(doc.includes('Outputs: made from the parameters'), doc);
  assert.ok(doc.includes('- sample (read/write): '), doc);
});

test('the README\'s example of a config with mistakes gives the errors the README shows', () => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const [, yaml, shown] = /\(`wirepath check bad\.yaml`\):\n\n```yaml\n([\s\S]*?)```\n\n```\n([\s\S]*?)```/.exec(readme)!;
  const dir = tempDir();
  try {
    writeFileSync(join(dir, 'bad.yaml'), yaml);
    const r = cli(['check', 'bad.yaml'], dir);
    assert.is(r.status, 2);
    assert.is(r.stderr, shown);
  } finally {
    removeDir(dir);
  }
});

test('elements: an unknown type exits 2', () => {
  const r = cli(['elements', 'Nope']);
  assert.is(r.status, 2);
  assert.ok(r.stderr.startsWith("wirepath: no element type 'Nope'; 'wirepath elements' lists them (with --elements DIR, also yours)\n"));
  assert.is(r.stdout, '');
  assert.ok(cli(['elements', 'Countr']).stderr.startsWith("wirepath: no element type 'Countr' (did you mean Counter?)"));
});

test('filter -v into a reader that stops early ends quietly with exit 0', () => {
  const r = spawnSync('bash', ['-c', `node bin/wirepath.js filter tcp traces/demo.pcap -v | head -1; echo "exit \${PIPESTATUS[0]}" >&2`], { cwd: ROOT, encoding: 'utf8' });
  assert.match(r.stdout, /^1 1700000000\.000000 64\n$/);
  assert.is(r.stderr, 'exit 0\n');
});

test('elements --layout without a TYPE is a usage error, not the list of types', () => {
  const r = cli(['elements', '--layout']);
  assert.is(r.status, 2);
  assert.ok(r.stderr.startsWith('wirepath: --layout prints the layout of one element type: give its TYPE'), r.stderr);
});

test('filter says what a run would of the capture: a record cut off at its end (it counted the records before it, silently)', () => {
  const dir = tempDir();
  try {
    writeFileSync(join(dir, 'cut.pcap'), readFileSync(join(ROOT, 'traces/demo.pcap')).subarray(0, 1000));
    const r = cli(['filter', 'ip', join(dir, 'cut.pcap')]);
    assert.is(r.status, 0, r.stderr);
    assert.is(r.stdout, '12 of 12 packets match\n');
    assert.match(r.stderr, /ignored 16 bytes at the end of .*cut\.pcap: a record cut off/);
  } finally {
    removeDir(dir);
  }
});

test('elements: a missing --elements folder exits 2 without a stack trace', () => {
  const r = cli(['elements', '--elements', '/no/such/folder']);
  assert.is(r.status, 2);
  assert.ok(r.stderr.startsWith('element folder /no/such/folder does not exist\n'));
  assert.not.match(r.stderr, /\n\s+at /);
});

test('docs: prints the element reference of every type', async () => {
  const r = cli(['docs']);
  assert.is(r.status, 0);
  assert.is(r.stdout, elementReference(await loadRegistry()));
  for (const type of ['CheckIPHeader', 'Classifier', 'Counter', 'Discard', 'Filter', 'FlowStats', 'FromPcap', 'Generator', 'Print', 'Rewrite', 'Tee', 'ToPcap']) {
    assert.ok(r.stdout.includes(`### ${type}\n`), type);
  }
  assert.not.ok(/^## /m.test(r.stdout), 'types are level-3 headings in the reference');
});

test('docs --write: replaces the text between the markers and nothing else', async () => {
  const begin = '<!-- element-reference:begin (generated by `npm run docs`; edit the elements instead) -->';
  const end = '<!-- element-reference:end -->';
  const readme = join(dir, 'README.md');
  writeFileSync(readme, `# Title\n\n${begin}\nold text\n${end}\n\nAfter.\n`);
  const r = cli(['docs', '--write', readme]);
  assert.is(r.status, 0);
  assert.is(r.stdout, `updated the references in ${readme}\n`);
  assert.is(readFileSync(readme, 'utf8'), `# Title\n\n${begin}\n\n${elementReference(await loadRegistry())}\n${end}\n\nAfter.\n`);
});

test('the README\'s element, runtime and declaration references are those the elements, assembly/ and engine/ give (npm run docs)', async () => {
  const readme = join(dir, 'README-now.md');
  writeFileSync(readme, readFileSync(join(ROOT, 'README.md'), 'utf8'));
  assert.is(cli(['docs', '--write', readme]).status, 0);
  assert.ok(readFileSync(readme, 'utf8') === readFileSync(join(ROOT, 'README.md'), 'utf8'), 'README.md is out of date: run npm run docs');
  const runtime = await runtimeReference();
  for (const entry of ['- `IPv4.header(p: Packet): usize`: Address of the packet\'s IPv4 header', '- `dropPacket(p: Packet): void`', '  - `pushAll(n: i32, batch: Batch): void`']) {
    assert.ok(runtime.includes(entry), entry);
  }
  const declarations = await declarationReference();
  for (const entry of ["  - `param.cidr(doc: string, o?: ParamOptions<Cidr>)`: A prefix ('10.0.0.0/8'): `NAME_address: u32` and `NAME_mask: u32`.",
    '  - `fixed?: boolean`: Read once', '  - `state.gauge(doc: string, merge: MergeRule)`', "  - `merge?: Record<string, 'sum' | 'max' | 'min'>`", '  - `count(table: string, where?: (key: TableEntry[\'key\']) => boolean): number`']) {
    assert.ok(declarations.includes(entry), entry);
  }
});

test('docs --write: a missing file or one without markers exits 3 without a stack trace', () => {
  const missing = cli(['docs', '--write', join(dir, 'nope.md')]);
  assert.is(missing.status, 3);
  assert.ok(missing.stderr.startsWith(`wirepath: ${join(dir, 'nope.md')} does not exist\n`));
  writeFileSync(join(dir, 'plain.md'), '# No markers\n');
  const plain = cli(['docs', '--write', join(dir, 'plain.md')]);
  assert.is(plain.status, 3);
  assert.ok(plain.stderr.startsWith(`wirepath: ${join(dir, 'plain.md')} has no element reference markers\n`));
  assert.is(readFileSync(join(dir, 'plain.md'), 'utf8'), '# No markers\n');
});

// --- graph ------------------------------------------------------------------------------------

test('graph --format dot: nodes with types, edges with port labels', () => {
  const r = cli(['graph', 'configs/default.yaml', '--format', 'dot']);
  assert.is(r.status, 0);
  const lines = r.stdout.split('\n');
  assert.is(lines[0], 'digraph wirepath {');
  assert.ok(lines.includes('  "rw" [label="rw :: Rewrite"];'));
  const edges = lines.filter((l) => l.includes(' -> '));
  assert.equal(edges.sort(), [
    '  "check" -> "drop" [taillabel="1", headlabel="0"];',
    '  "check" -> "rw" [taillabel="0", headlabel="0"];',
    '  "count" -> "drop" [taillabel="0", headlabel="0"];',
    '  "rw" -> "tee" [taillabel="0", headlabel="0"];',
    '  "src" -> "check" [taillabel="0", headlabel="0"];',
    '  "tee" -> "count" [taillabel="1", headlabel="0"];',
    '  "tee" -> "out" [taillabel="0", headlabel="0"];',
  ]);
  assert.is(cli(['graph', 'configs/default.yaml']).stdout, r.stdout, 'dot is the default');
});

test('graph --format mermaid: a flowchart with the same edges', () => {
  const r = cli(['graph', 'configs/default.yaml', '--format', 'mermaid']);
  assert.is(r.status, 0);
  const lines = r.stdout.split('\n');
  assert.is(lines[0], 'flowchart LR');
  assert.ok(lines.includes('  rw["rw :: Rewrite"]'));
  assert.equal(lines.filter((l) => l.includes('-->')).sort(), [
    '  check -- "0 → 0" --> rw',
    '  check -- "1 → 0" --> drop',
    '  count -- "0 → 0" --> drop',
    '  rw -- "0 → 0" --> tee',
    '  src -- "0 → 0" --> check',
    '  tee -- "0 → 0" --> out',
    '  tee -- "1 → 0" --> count',
  ]);
});

test('graph --format mermaid: elements named like Mermaid keywords (end, click) get other ids', () => {
  const file = writeConfig('keywords.yaml',
    'elements:',
    '  src: { type: FromPcap, file: in.pcap }',
    '  click: { type: Counter }',
    '  end: { type: Discard }',
    'connections:',
    '  - src -> click -> end');
  const r = cli(['graph', file, '--format', 'mermaid'], dir);
  assert.is(r.status, 0);
  assert.is(r.stdout, [
    'flowchart LR',
    '  src["src :: FromPcap"]',
    '  click_["click :: Counter"]',
    '  end_["end :: Discard"]',
    '  src -- "0 → 0" --> click_',
    '  click_ -- "0 → 0" --> end_',
    '',
  ].join('\n'));
});

test('graph: a bad --format exits 2; an invalid config exits 2 with its errors', () => {
  const bad = cli(['graph', 'configs/default.yaml', '--format', 'svg']);
  assert.is(bad.status, 2);
  assert.ok(bad.stderr.startsWith("wirepath: --format must be dot or mermaid, not 'svg'\n"));
  assert.is(bad.stdout, '');
  const broken = cli(['graph', brokenConfig()], dir);
  assert.is(broken.status, 2);
  assert.ok(broken.stderr.endsWith('3 errors\n'));
});

// --- run --------------------------------------------------------------------------------------

test('run --restore: a snapshot carries the state into a new run, with another shard count; a missing one exits 3', async () => {
  writeConfig('snap.yaml', 'elements:', `  src: { type: FromPcap, file: ${join(ROOT, 'traces/demo.pcap')} }`, '  stats: { type: FlowStats }', '  drop: { type: Discard }',
    'connections:', '  - src -> stats -> drop');
  const first = await Pipeline.create(await loadConfig(join(dir, 'snap.yaml')), { shards: 1, threads: 'inline' });
  await first.run();
  writeFileSync(join(dir, 'snap.json'), JSON.stringify(await first.snapshot()));
  const r = cli(['run', join(dir, 'snap.yaml'), '--restore', join(dir, 'snap.json'), '--shards', '2', '--json']);
  assert.is(r.status, 0, r.stderr);
  const stats = JSON.parse(r.stdout).elements.stats;
  assert.is(stats.total_packets, 4000, 'the first run\'s 2000 and this one\'s');
  assert.is(stats.new_flows, 64, 'the flows were known');
  const missing = cli(['run', join(dir, 'snap.yaml'), '--restore', join(dir, 'none.json')]);
  assert.is(missing.status, 3);
  assert.ok(missing.stderr.startsWith(`wirepath: snapshot ${join(dir, 'none.json')} does not exist\n`), missing.stderr);
  writeFileSync(join(dir, 'garbled.json'), '{"format": ');
  const garbled = cli(['run', join(dir, 'snap.yaml'), '--restore', join(dir, 'garbled.json')]);
  assert.is(garbled.status, 3);
  assert.match(garbled.stderr, /^wirepath: snapshot \S+garbled\.json cannot be read: .*\n {2}hint: give a file written by wirepath ctl snapshot FILE/);
  writeFileSync(join(dir, 'other.json'), JSON.stringify({ ...JSON.parse(readFileSync(join(dir, 'snap.json'), 'utf8')), elements: { nope: { type: 'Counter', scalars: {}, tables: {} } } }));
  const other = cli(['run', join(dir, 'snap.yaml'), '--restore', join(dir, 'other.json')]);
  assert.is(other.status, 3);
  assert.match(other.stderr, /snapshot \S+other\.json: the snapshot's element nope \(Counter\) is not in this config\n {2}hint: restore a snapshot into the config it was taken from/);
});

test('run --save writes the state the run ended with, which --restore goes on from; a path it cannot write is refused before the run', () => {
  writeConfig('save.yaml', 'elements:', `  src: { type: FromPcap, file: ${join(ROOT, 'traces/demo.pcap')} }`, '  stats: { type: FlowStats }', '  drop: { type: Discard }',
    'connections:', '  - src -> stats -> drop');
  const first = cli(['run', join(dir, 'save.yaml'), '--save', join(dir, 'saved.json'), '--quiet']);
  assert.is(first.status, 0, first.stderr);
  assert.ok(first.stderr.includes(`wirepath: state saved to ${join(dir, 'saved.json')} (go on from it with --restore `), first.stderr);
  const second = cli(['run', join(dir, 'save.yaml'), '--restore', join(dir, 'saved.json'), '--save', join(dir, 'saved.json'), '--json']);
  assert.is(second.status, 0, second.stderr);
  assert.is(JSON.parse(second.stdout).elements.stats.total_packets, 4000, 'the first run\'s 2000 and this one\'s');
  // Its packets in and out count on as its state does (before: 2000 in beside 4000 total_packets).
  assert.equal([JSON.parse(second.stdout).elements.stats.in, JSON.parse(second.stdout).elements.stats.out], [4000, [4000]]);
  assert.is(JSON.parse(second.stdout).elements.drop.in, 4000, 'an element without state too, as after a reload');
  assert.is(JSON.parse(readFileSync(join(dir, 'saved.json'), 'utf8')).elements.stats.scalars.total_packets, '4000', 'saved again, over the one it started from');
  // Into folders that do not exist yet: made, as the check before the run expects (before, the run's state and its counters were lost).
  const deeper = cli(['run', join(dir, 'save.yaml'), '--save', join(dir, 'new', 'folder', 'saved.json'), '--json']);
  assert.is(deeper.status, 0, deeper.stderr);
  assert.is(JSON.parse(deeper.stdout).elements.stats.total_packets, 2000);
  assert.is(JSON.parse(readFileSync(join(dir, 'new', 'folder', 'saved.json'), 'utf8')).elements.stats.scalars.total_packets, '2000');
  const refused = cli(['run', join(dir, 'save.yaml'), '--save', join(dir, 'save.yaml', 'x.json')]);
  assert.is(refused.status, 3);
  assert.ok(refused.stderr.startsWith(`wirepath: --save ${join(dir, 'save.yaml', 'x.json')}: cannot write it (ENOTDIR)\n`), refused.stderr);
  assert.is(refused.stdout, '', 'nothing ran');
});

test('run: a capture or block log that cannot be written (a folder under /proc) is exit 3 naming the file, not a hang', () => {
  writeConfig('proc.yaml', 'elements:', '  gen: { type: Generator, count: 10 }', '  out: { type: ToPcap, file: /proc/wirepath-nope/out.pcap }', 'connections:', '  - gen -> out');
  const r = cli(['run', join(dir, 'proc.yaml')]);
  assert.is(r.status, 3);
  // Placed at the element, as a config error is.
  assert.ok(r.stderr.startsWith(`${join(dir, 'proc.yaml')}:3:3: out: cannot write /proc/wirepath-nope/out.pcap: ENOENT\n`), r.stderr);
  writeConfig('proc-log.yaml', 'elements:', `  src: { type: FromPcap, file: ${join(ROOT, 'traces/demo.pcap')}, steer: nat }`, "  side: { type: Classifier, patterns: ['src net 100.64.0.0/10', '-'] }",
    '  nat: { type: NAT, pool: [203.0.113.0/28], log: /proc/wirepath-nope/blocks.jsonl }', '  out: { type: Discard }',
    'connections:', '  - src -> side', '  - side[0] -> [0]nat', '  - side[1] -> [1]nat', '  - nat[0] -> out', '  - nat[1] -> out');
  const log = cli(['run', join(dir, 'proc-log.yaml'), '--threads', 'worker']);
  assert.is(log.status, 3, log.stderr);
  assert.match(log.stderr, /^wirepath: nat: cannot write the block log \/proc\/wirepath-nope\/blocks\.jsonl: ENOENT\n/);
});

test('run --json with a Print: stdout is one JSON object, the printed lines go to stderr', () => {
  writeConfig('print.yaml', 'elements:', `  src: { type: FromPcap, file: ${join(ROOT, 'traces/demo.pcap')}, count: 3 }`, '  show: { type: Print }',
    'connections:', '  - src -> show');
  const r = cli(['run', join(dir, 'print.yaml'), '--json']);
  assert.is(r.status, 0, r.stderr);
  assert.is(JSON.parse(r.stdout).packets_in, 3);
  assert.match(r.stderr, /^1 1700000000\.000000 64\n2 1700000000\.000001 64\n3 1700000000\.000002 64\n/);
  assert.match(cli(['run', join(dir, 'print.yaml'), '--quiet']).stdout, /^1 1700000000\.000000 64\n/, 'without --json they go to stdout');
});

test('run: the bundled NAT on a capture (configs/nat-trace.yaml) translates every subscriber packet and logs its blocks', () => {
  const out = join(dir, 'nat-trace.pcap'), log = join(dir, 'nat-trace.jsonl');
  const r = cli(['run', 'configs/nat-trace.yaml', '--json', '--set', `out.file=${out}`, '--set', `nat.log=${log}`]);
  assert.is(r.status, 0, r.stderr);
  const nat = JSON.parse(r.stdout).elements.nat;
  assert.is(nat.translated_out, 2000);
  assert.is(nat.blocks_allocated, nat.subscribers);
  const sources = readPcap(out).records.map((rec) => [...rec.data.subarray(26, 30)].join('.'));
  assert.is(sources.length, 2000);
  assert.ok(sources.every((a) => /^203\.0\.113\.([0-9]|1[0-5])$/.test(a)), 'every packet leaves from the pool 203.0.113.0/28');
  const events = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l).event);
  // Each block allocated, and released when the run ends.
  assert.equal(events, [...Array(nat.blocks_allocated).fill('allocate'), ...Array(nat.blocks_allocated).fill('release')]);
  // log: - writes to standard output, or to standard error when --json takes standard output.
  const toStderr = cli(['run', 'configs/nat-trace.yaml', '--json', '--set', `out.file=${out}`, '--set', 'nat.log=-']);
  assert.is(toStderr.status, 0, toStderr.stderr);
  assert.is(JSON.parse(toStderr.stdout).elements.nat.blocks_allocated, nat.blocks_allocated);
  assert.is(toStderr.stderr.split('\n').filter((l) => l.startsWith('{"time"')).length, 2 * nat.blocks_allocated);
  const toStdout = cli(['run', 'configs/nat-trace.yaml', '--quiet', '--set', `out.file=${out}`, '--set', 'nat.log=-']);
  assert.is(toStdout.stdout.split('\n').filter((l) => l.startsWith('{"time"')).length, 2 * nat.blocks_allocated);
});

test('run: the final table shows counters and lists of numbers, and leaves records (a LoadBalancer\'s backends) to --json', () => {
  const table = statsTable({
    packets_in: 3, packets_out: 3, wall_seconds: 1, packets_per_second: 3, interrupted: false, crashes: [],
    elements: { lb: { type: 'LoadBalancer', in: 3, out: [2, 1], unconnected_drops: 0, encapsulated: 2, hits: [1, 2], backends: [{ name: 'web1', packets: 2 }], vips: {} } },
  } as never);
  const row = table.split('\n').find((l) => l.startsWith('lb '))!;
  assert.match(row, /encapsulated=2 hits=1,2$/);
  assert.not.match(table, /object Object/);
});

test('run --json: one JSON object with the totals and every element counters by name', () => {
  const out = join(dir, 'run-out.pcap');
  const r = cli(['run', 'configs/default.yaml', '--json', '--set', `out.file=${out}`]);
  assert.is(r.status, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  assert.is(lines.length, 1, 'one line of JSON');
  const result = JSON.parse(lines[0]);
  assert.is(result.packets_in, 2000);
  assert.is(result.packets_out, 2000);
  assert.is(typeof result.wall_seconds, 'number');
  assert.is(typeof result.packets_per_second, 'number');
  assert.is(result.interrupted, false);
  assert.equal(Object.keys(result.elements), ['src', 'check', 'rw', 'tee', 'out', 'count', 'drop']);
  const e = result.elements;
  assert.equal([e.src.type, e.src.out, e.src.packets], ['FromPcap', [2000], 2000]);
  assert.equal([e.check.in, e.check.out, e.check.bad_checksum], [2000, [2000, 0], 0]);
  assert.equal([e.rw.in, e.rw.rewritten, e.rw.expired], [2000, 2000, 0]);
  assert.equal([e.tee.out, e.tee.no_buffer], [[2000, 2000], 0]);
  assert.equal([e.out.in, e.out.packets], [2000, 2000]);
  assert.equal([e.count.type, e.count.packets], ['Counter', 2000]);
  assert.is(e.drop.in, 2000);
  assert.is(readPcap(out).records.length, 2000);
});

test('run: a missing capture file exits 3 and names the file', () => {
  const out = join(dir, 'never.pcap');
  const r = cli(['run', 'configs/default.yaml', '--set', 'src.file=missing.pcap', '--set', `out.file=${out}`]);
  assert.is(r.status, 3);
  assert.ok(r.stderr.includes(`src: cannot open ${join(ROOT, 'configs/missing.pcap')}: ENOENT`), r.stderr);
  assert.ok(r.stderr.includes("hint: check the file parameter: a relative path starts at the config file's folder"));
  assert.not.match(r.stderr, /\n\s+at /);
});

test('run: a bad --clock exits 2 before running', () => {
  const out = join(dir, 'clock.pcap');
  const r = cli(['run', 'configs/default.yaml', '--clock', 'sundial', '--set', `out.file=${out}`]);
  assert.is(r.status, 2);
  assert.ok(r.stderr.startsWith("wirepath: --clock must be trace or wall, not 'sundial'\n"));
  assert.not.ok(existsSync(out));
});

// --- verify -----------------------------------------------------------------------------------

test('verify: --trace is a path from where the command runs; one shard count is no comparison', () => {
  // The config lives in the temp folder, the trace is named from the project root (the working directory).
  writeConfig('v.yaml', readFileSync(join(ROOT, 'configs/default.yaml'), 'utf8').replace('../traces/demo.pcap', 'nowhere.pcap'));
  const r = cli(['verify', join(dir, 'v.yaml'), '--trace', 'traces/demo.pcap', '--shards', '1,2', '--scale-every', '500']);
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, /equivalent: 2000 packets in 64 flows, same packets in the same order per flow with 3 scale events\n/);
  // After it, at most a note on events that had no packet to hold (2000 packets go by in about a millisecond).
  assert.match(r.stdout, /events\n(note: \d of the scale events saw no packet of a moving bucket .*\n)?$/);
  const one = cli(['verify', join(dir, 'v.yaml'), '--trace', 'traces/demo.pcap', '--shards', '1']);
  assert.is(one.status, 2);
  assert.ok(one.stderr.startsWith('wirepath: --shards needs a count above 1'));
  const many = cli(['verify', join(dir, 'v.yaml'), '--trace', 'traces/demo.pcap', '--shards', '1,65']);
  assert.is(many.status, 2, 'a usage error, not a stack trace');
  assert.ok(many.stderr.startsWith('wirepath: --shards takes counts from 1 to 64'), many.stderr);
  // A trace shorter than --scale-every: the scaled run never left one shard, and compared nothing.
  const short = cli(['verify', join(dir, 'v.yaml'), '--trace', 'traces/demo.pcap', '--shards', '1,2,4', '--scale-every', '2000']);
  assert.is(short.status, 1);
  assert.match(short.stdout, /NOT equivalent: no scale event: the trace has 2000 packets, not more than --scale-every 2000; give a smaller --scale-every\n/);
  const fromTwo = cli(['verify', join(dir, 'v.yaml'), '--trace', 'traces/demo.pcap', '--shards', '2,4', '--scale-every', '5000']);
  assert.is(fromTwo.status, 1, 'from two shards too: the counts were named to be gone through');
  assert.match(fromTwo.stdout, /NOT equivalent: no scale event: the trace has 2000 packets, not more than --scale-every 5000/);
  // Left to its default, it goes through the counts and back on a short trace too.
  const fitted = cli(['verify', join(dir, 'v.yaml'), '--trace', 'traces/demo.pcap', '--shards', '1,2,4']);
  assert.is(fitted.status, 0, fitted.stderr);
  assert.match(fitted.stdout, /^scale 1 -> 2: .*\nscale 2 -> 4: .*\nscale 4 -> 1: .*\nequivalent: 2000 packets in 64 flows, same packets in the same order per flow with 3 scale events\n/);
  const missing = cli(['verify', join(dir, 'v.yaml'), '--trace', 'traces/nowhere.pcap']);
  assert.is(missing.status, 3);
  assert.is(missing.stderr, `wirepath: --trace ${join(ROOT, 'traces/nowhere.pcap')}: no such file\n  hint: the --trace path is taken from where the command runs\n`);
  const four = cli(['verify', join(dir, 'v.yaml'), '--trace', 'traces/demo.pcap', '--shards', '4', '--scale-every', '1000']);
  assert.is(four.status, 2, 'it ran with no scale event and said nothing');
  assert.match(four.stderr, /--shards 4 names one shard count, so the scaled run would make no scale event: name the counts it goes through, e\.g\. 1,4/);
  // Before: run, then 'NOT equivalent: no scale event: the trace has 2000 packets, not more than --scale-every 500' (exit 1).
  const twice = cli(['verify', join(dir, 'v.yaml'), '--trace', 'traces/demo.pcap', '--shards', '2,2', '--scale-every', '500']);
  assert.is(twice.status, 2, twice.stdout);
  assert.match(twice.stderr, /--shards 2,2 names one shard count, so the scaled run would make no scale event/);
});

test('verify: a NAT that picks ports at random is refused with the way to verify it; output that nothing reaches is no equivalence', () => {
  writeConfig('vn.yaml',
    'elements:',
    `  src: { type: FromPcap, file: ${join(ROOT, 'traces/demo.pcap')}, steer: nat }`,
    '  nat: { type: NAT, pool: [203.0.113.0/28] }',
    '  check: { type: CheckIPHeader }',
    '  out: { type: ToPcap, file: out.pcap }',
    'connections:',
    '  - src -> check -> [0]nat',
    '  - check[1] -> [1]nat # nothing: the trace has no bad header',
    '  - nat[0] -> out',
    '  - nat[1] -> out');
  const random = cli(['verify', join(dir, 'vn.yaml')]);
  assert.is(random.status, 2);
  assert.match(random.stderr, /vn\.yaml:3:3: verify cannot compare runs of 'nat' \(NAT\): it picks external addresses and ports from a random start.*\n {2}hint: verify it with deterministic: true/);
  // Deterministic, but for inside addresses none of the trace's are in: everything is dropped, nothing compared.
  const none = cli(['verify', join(dir, 'vn.yaml'), '--set', 'nat.deterministic=true', '--set', 'nat.inside=[100.64.0.0/24]']);
  assert.is(none.status, 1);
  assert.match(none.stdout, /NOT equivalent: no packet reached a ToPcap sink in the one-shard run: nothing to compare/);
  writeConfig('vs.yaml', 'elements:', `  src: { type: FromPcap, file: ${join(ROOT, 'traces/demo.pcap')} }`, '  drop: { type: Discard }', 'connections:', '  - src -> drop');
  const sinkless = cli(['verify', join(dir, 'vs.yaml')]);
  assert.is(sinkless.status, 2, 'a config mistake');
  assert.match(sinkless.stderr, /vs\.yaml:1:1: the config has no ToPcap sink to compare\n {2}hint: verify compares what ToPcap elements write: add one/);
});

// --- usage ------------------------------------------------------------------------------------

test('a compile cache this user cannot write is one error naming it and WIREPATH_CACHE, exit 3 (it was an EACCES stack trace)', () => {
  // /sys takes no folder, root's neither.
  const r = spawnSync(process.execPath, [join(ROOT, 'bin/wirepath.js'), 'check', 'configs/default.yaml'], {
    cwd: ROOT, encoding: 'utf8', env: { ...process.env, WIREPATH_CACHE: '/sys/wirepath-cache' },
  });
  assert.is(r.status, 3, r.stderr);
  assert.match(r.stderr, /^wirepath: cannot write the compile cache \/sys\/wirepath-cache: E[A-Z]+\n {2}hint: set WIREPATH_CACHE to a folder/);
  assert.not.match(r.stderr, /\n\s+at /, 'no stack trace');
});

test('usage: an unknown command exits 2', () => {
  const r = cli(['frobnicate']);
  assert.is(r.status, 2);
  assert.ok(r.stderr.startsWith("wirepath: unknown command 'frobnicate'\n\n" + USAGE_START));
});

test('usage: an unknown option exits 2', () => {
  const r = cli(['check', 'configs/default.yaml', '--colour']);
  assert.is(r.status, 2);
  assert.is(r.stderr, "wirepath: unknown option '--colour'\n  hint: wirepath --help lists the commands and their options\n");
});

test('usage: an option of another command is refused, not ignored (check --json printed text, graph --shards 2 did nothing)', () => {
  for (const [args, option, command] of [[['check', 'configs/default.yaml', '--json'], 'json', 'check'], [['graph', 'configs/default.yaml', '--shards', '2'], 'shards', 'graph'],
    [['docs', '--format', 'dot'], 'format', 'docs'], [['filter', 'tcp', 'traces/demo.pcap', '--shards', '2'], 'shards', 'filter']] as const) {
    const r = cli([...args]);
    assert.is(r.status, 2, args.join(' '));
    assert.ok(r.stderr.startsWith(`wirepath: --${option} is not an option of ${command}\n\nusage: wirepath ${command} `), r.stderr);
  }
  // Each command's own still count, the short ones too.
  assert.is(cli(['filter', 'tcp', 'traces/demo.pcap', '-v']).status, 0);
  assert.is(cli(['graph', 'configs/default.yaml', '--format', 'mermaid', '--set', 'src.count=5']).status, 0);
});

test('usage: --help exits 0 with the usage on stdout; no command exits 2 with it on stderr', () => {
  const help = cli(['--help']);
  assert.is(help.status, 0);
  assert.ok(help.stdout.startsWith(USAGE_START));
  assert.ok(help.stdout.includes('exit codes: 0 done, 1 runtime failure (a shard that crashed too), 2 bad usage, invalid config or an element that does not compile, 3 missing file'));
  const none = cli([]);
  assert.is(none.status, 2);
  assert.is(none.stdout, '');
  assert.ok(none.stderr.startsWith('wirepath: no command given\n\n' + USAGE_START));
  const version = cli(['--version']);
  assert.is(version.status, 0);
  assert.is(version.stdout, `wirepath ${JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version} (node ${process.versions.node})\n`);
});

test('usage: CMD --help shows that command and the options it takes; an unknown command exits 2', () => {
  const run = cli(['run', '-h']);
  assert.is(run.status, 0);
  assert.ok(run.stdout.startsWith('usage: wirepath run CONFIG [options]\n\n  run CONFIG '), run.stdout);
  assert.ok(run.stdout.includes('--restore FILE') && run.stdout.includes('--set NAME.PARAM=VALUE'));
  assert.not.ok(run.stdout.includes('--scale-every') || run.stdout.includes('ctl COMMAND'));
  const verify = cli(['verify', '--help']);
  assert.ok(verify.stdout.includes('--scale-every K') && verify.stdout.includes('--set NAME.PARAM=VALUE'));
  assert.not.ok(verify.stdout.includes('--json'));
  const ctl = cli(['ctl', '--help']);
  assert.ok(ctl.stdout.includes('write ELEMENT.HANDLER VALUE') && ctl.stdout.includes('$WIREPATH_TOKEN'));
  const bogus = cli(['bogus', '--help']);
  assert.is(bogus.status, 2);
  assert.ok(bogus.stderr.startsWith("wirepath: unknown command 'bogus'"));
});

test.run();
