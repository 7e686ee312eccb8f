// Config validation: every kind of mistake is reported at FILE:LINE:COL with a message and a hint,
// all mistakes of a file at once, in file order.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { loadConfig, type LoadOptions } from '../engine/config.ts';
import { buildGraph } from '../engine/graph.ts';
import { ConfigErrors, type ConfigError } from '../engine/errors.ts';
import { parseDuration, formatDuration, parseSize, parseIPv4, formatIPv4, parseCidr, parseMac, ParamTypeError, param, types } from '../engine/params.ts';
import { ROOT, tempDir, removeDir } from './helpers.ts';
import { loadRegistry } from '../engine/registry.ts';

/** The built-in types as hints list them, whatever elements the project has. */
const builtIn = async () => [...(await loadRegistry()).keys()].sort().join(', ');

const FILE = 'pipeline.yaml';

/** A config of these lines, so that line N of the file is the Nth argument. */
const lines = (...l: string[]) => l.join('\n') + '\n';

/** Lines 1-6 of a valid config; its connections start on line 7. */
const ELEMENTS = [
  'elements:',
  '  src: { type: FromPcap, file: in.pcap }',
  '  count: { type: Counter }',
  '  tee: { type: Tee }',
  '  drop: { type: Discard }',
  'connections:',
];
const CHAINS = ['  - src -> count -> tee -> drop', '  - tee[1] -> drop'];

/** Every error that loading and wiring the config reports. */
async function errorsOf(text: string, options: LoadOptions = {}, file = FILE): Promise<ConfigError[]> {
  try {
    buildGraph(await loadConfig(file, { text, ...options }));
  } catch (e) {
    if (e instanceof ConfigErrors) return e.errors;
    throw e;
  }
  throw new Error('the config was accepted');
}

/** The errors as 'LINE:COL message' (or just the message, for the command line's), for comparing lists. */
const summary = (errors: ConfigError[]) => errors.map((e) => (e.position ? `${e.position.line}:${e.position.col} ${e.message}` : e.message));

/** Asserts that the config has exactly one error, at `where` (FILE:LINE:COL or '' for none), with this message and hint. */
async function expectError(text: string, where: string, message: string, hint: string | undefined, options: LoadOptions = {}): Promise<void> {
  const errors = await errorsOf(text, options);
  assert.is(errors.length, 1, `expected one error, got:\n${errors.map((e) => e.format()).join('\n')}`);
  const [e] = errors;
  assert.is(e.position ? `${e.position.file}:${e.position.line}:${e.position.col}` : '', where);
  assert.is(e.message, message);
  assert.is(e.hint, hint);
}

test('the base config is valid', async () => {
  const config = await loadConfig(FILE, { text: lines(...ELEMENTS, ...CHAINS) });
  const graph = buildGraph(config);
  assert.equal(graph.nodes.map((n) => n.name), ['src', 'count', 'tee', 'drop']);
  assert.is(config.batch, 256);
});

// --- YAML and the top level -------------------------------------------------------------------

test('YAML: an unclosed flow mapping is reported where the parser notices it', async () => {
  await expectError(lines('elements:', '  src: { type: FromPcap, file: in.pcap', '  drop: { type: Discard }', 'connections:', '  - src -> drop'),
    'pipeline.yaml:3:3', 'YAML syntax: Flow map in block collection must be sufficiently indented and end with a }',
    'fix the YAML syntax; indentation and unclosed brackets or quotes are the usual causes');
});

test('YAML: a quote never closed is reported where it opens, once (the parser notices at the end of the file)', async () => {
  await expectError(lines('elements:', '  src: { type: FromPcap, file: "in.pcap }', '  drop: { type: Discard }', 'connections:', '  - src -> drop'),
    'pipeline.yaml:2:32', 'YAML syntax: the double quote here is never closed', 'close it with another " where the value ends');
  await expectError(lines(...ELEMENTS, "  - 'src -> count"), 'pipeline.yaml:7:5', 'YAML syntax: the single quote here is never closed',
    "close it with another ' where the value ends");
});

test('YAML: bad indentation', async () => {
  await expectError(lines('elements:', '  src: { type: FromPcap, file: in.pcap }', '   drop: { type: Discard }', 'connections:', '  - src -> drop'),
    'pipeline.yaml:3:1', 'YAML syntax: All mapping items must start at the same column',
    'fix the YAML syntax; indentation and unclosed brackets or quotes are the usual causes');
});

test('YAML: a file with syntax errors reports only them, not guesses about its broken tree', async () => {
  const errors = await errorsOf(lines('elements:', '\tsrc: { type: Nope }', 'connections:', '  - src -> drop'));
  assert.equal(summary(errors), ['2:1 YAML syntax: Tabs are not allowed as indentation']);
});

test('YAML: a second document, elements written as a list, a type written as a list, a parameter with no value', async () => {
  await expectError(lines(...ELEMENTS, ...CHAINS, '---', 'more: 1'), 'pipeline.yaml:9:1', 'a config is one YAML document, and a --- line here starts another',
    'remove the --- line and what follows it, or merge the two');
  await expectError(lines('elements:', '  - src: { type: FromPcap, file: in.pcap }', 'connections:', '  - src -> src'), 'pipeline.yaml:2:3',
    'elements is a list: it must map names to elements', 'write `name: { type: ..., params }` lines under elements:, without a leading -');
  // Before: unknown element type 'undefined'.
  await expectError(lines(...ELEMENTS, ...CHAINS).replace('type: Counter', 'type: [Counter]'), 'pipeline.yaml:3:18',
    "element 'count': type is one type's name, not a list or a mapping", 'write type: Counter');
  // Before: null is not a non-empty string, with a hint about quoting numbers.
  await expectError(lines(...ELEMENTS, ...CHAINS).replace('file: in.pcap', 'file: ~'), 'pipeline.yaml:2:32',
    'src.file: no value (YAML reads nothing, ~ and null as none)', 'give a string');
});

test('columns count characters, as editors show them: an emoji before the mistake is one column, not two UTF-16 units', async () => {
  await expectError(lines(...ELEMENTS, ...CHAINS).replace('file: in.pcap', 'file: "\u{1F600}.pcap", bogus: 1'), 'pipeline.yaml:2:42',
    "FromPcap has no parameter 'bogus'", 'its parameters are file, timing, loop, count, preload, steer');
});

test('YAML: a name used twice', async () => {
  await expectError(lines('elements:', '  src: { type: FromPcap, file: in.pcap }', '  src: { type: Discard }', 'connections:', '  - src -> src'),
    'pipeline.yaml:3:3', 'YAML syntax: Map keys must be unique', 'each key may appear once in a mapping: give each element its own name, and each parameter once');
});

test('YAML: an alias stands for what its anchor marks (a whole element, or one value); a mistake in it is reported at the anchor', async () => {
  const config = await loadConfig(FILE, { text: lines('elements:', '  src: &source { type: FromPcap, file: &trace in.pcap }', '  again: *source',
    '  more: { type: FromPcap, file: *trace }', '  drop: { type: Discard }', 'connections:', '  - src -> drop', '  - again -> drop', '  - more -> drop') });
  assert.equal(['again', 'more'].map((name) => config.elements.get(name)!.params.file), ['in.pcap', 'in.pcap']);
  assert.is(config.elements.get('again')!.type.type, 'FromPcap');
  const errors = await errorsOf(lines('elements:', '  src: { type: FromPcap, file: in.pcap, count: &many -1 }', '  more: { type: FromPcap, file: in.pcap, count: *many }',
    '  drop: { type: Discard }', 'connections:', '  - src -> drop', '  - more -> drop'));
  assert.equal(summary(errors), ['2:54 src.count: -1 is out of range for a whole number', '2:54 more.count: -1 is out of range for a whole number']);
});

test('YAML: aliases of aliases that would expand past 10000 copies are refused at once (billion laughs)', async () => {
  const levels = ['a: &a [x, x, x, x, x, x, x, x, x, x]'];
  for (let i = 1; i < 8; i++) levels.push(`${'abcdefgh'[i]}: &${'abcdefgh'[i]} [${Array(10).fill(`*${'abcdefgh'[i - 1]}`).join(', ')}]`);
  const started = performance.now();
  await expectError(lines(...levels, 'elements: {}'), 'pipeline.yaml:1:1', 'its aliases expand to more than 10000 copies', 'write the repeated parts out, or use fewer aliases of aliases');
  assert.ok(performance.now() - started < 5000, 'without expanding them');
  // A value used many times over is fine.
  const flat = await loadConfig(FILE, { text: lines('elements:', '  src: { type: FromPcap, file: &trace in.pcap }',
    ...Array.from({ length: 200 }, (_, i) => `  src${i}: { type: FromPcap, file: *trace }`), '  drop: { type: Discard }', 'connections:', '  - src -> drop',
    ...Array.from({ length: 200 }, (_, i) => `  - src${i} -> drop`)) });
  assert.is(flat.elements.get('src199')!.params.file, 'in.pcap');
});

test('top level: a list, a scalar or nothing is not a config', async () => {
  for (const text of ['- src -> drop\n', 'hello\n', '']) {
    await expectError(text, 'pipeline.yaml:1:1', 'a config is a mapping with `elements:` and `connections:`', 'see configs/default.yaml for an example');
  }
});

test('top level: an unknown key, with the key it probably meant (not reported again as missing)', async () => {
  await expectError(lines(...ELEMENTS.slice(0, 5), 'connection:', ...CHAINS),
    'pipeline.yaml:6:1', "unknown top-level key 'connection'", "did you mean 'connections'?");
  await expectError(lines('colour: red', ...ELEMENTS, ...CHAINS),
    'pipeline.yaml:1:1', "unknown top-level key 'colour'", 'the keys are elements, connections, element_dirs, batch, slot_size, pool_slots, shards, threads');
});

test('top level: no elements, no connections', async () => {
  const errors = await errorsOf(lines('batch: 64'));
  assert.equal(summary(errors), ['1:1 the config has no elements', '1:1 the config has no connections']);
  assert.is(errors[0].hint, 'add `elements:` mapping names to { type: ..., params }');
  assert.is(errors[1].hint, "add `connections:` with lines like 'src -> count -> drop'");
  // An empty mapping is none either (check said ok, and run failed with a TypeError).
  assert.equal(summary(await errorsOf(lines('elements: {}', 'connections: []'))).slice(0, 1), ['1:11 the config has no elements']);
  await expectError(lines(...ELEMENTS, '  src: drop'), 'pipeline.yaml:7:3', 'connections must be a list of strings',
    'write each chain as a list item: - src -> count -> drop');
});

// --- elements ---------------------------------------------------------------------------------

test('element: without a type', async () => {
  const known = `add type:, one of ${await builtIn()}`;
  await expectError(lines('elements:', '  src: { file: in.pcap }', '  drop: { type: Discard }', 'connections:', '  - src -> drop'),
    'pipeline.yaml:2:3', "element 'src' has no type", known);
  await expectError(lines('elements:', '  src: { type: , file: in.pcap }', '  drop: { type: Discard }', 'connections:', '  - src -> drop'),
    'pipeline.yaml:2:3', "element 'src' has no type", known);
});

test('element: a bare type instead of a mapping', async () => {
  await expectError(lines('elements:', '  src: { type: FromPcap, file: in.pcap }', '  drop: Discard', 'connections:', '  - src -> drop'),
    'pipeline.yaml:3:9', "element 'drop' must be a mapping with a type", 'write drop: { type: Discard }');
});

test('element: a name that connections cannot use', async () => {
  const errors = await errorsOf(lines('elements:', '  my-src: { type: FromPcap, file: in.pcap }', '  drop: { type: Discard }', 'connections:', '  - src -> drop'));
  assert.equal(summary(errors), ["2:3 element name 'my-src' is not a valid name"]);
  // Before: 'starting with a letter', though _src is a name connections take.
  assert.is(errors[0].hint, 'use letters, digits and _, not starting with a digit');
  assert.equal(summary(await errorsOf(lines('elements:', '  _src: { type: FromPcap, file: in.pcap }', '  drop: { type: Discard }', 'connections:', '  - _src -> drop', '  - 2nd -> drop'))),
    ["6:5 connection: '2nd' is not an element reference"]);
});

test('element: an unknown type, with did-you-mean', async () => {
  await expectError(lines('elements:', '  src: { type: FromPcap, file: in.pcap }', '  count: { type: Countr }', '  drop: { type: Discard }', 'connections:', '  - src -> count -> drop'),
    'pipeline.yaml:3:18', "unknown element type 'Countr'", "did you mean 'Counter'?");
  await expectError(lines('elements:', '  src: { type: FromPcap, file: in.pcap }', '  fw: { type: Firewall }', '  drop: { type: Discard }', 'connections:', '  - src -> fw -> drop'),
    'pipeline.yaml:3:15', "unknown element type 'Firewall'", `known types: ${await builtIn()}; one of your own needs its folder in element_dirs`);
});

test('element: an unknown parameter, with did-you-mean (and the required one it meant is missing)', async () => {
  const errors = await errorsOf(lines('elements:', '  src: { type: FromPcap, fle: in.pcap }', '  drop: { type: Discard }', 'connections:', '  - src -> drop'));
  assert.equal(summary(errors), ["2:3 FromPcap 'src' needs parameter 'file' (a string)", "2:26 FromPcap has no parameter 'fle'"]);
  assert.is(errors[0].hint, 'add file: ... — the capture file, relative to the config file');
  assert.is(errors[1].hint, "did you mean 'file'?");
});

test('element: an unknown parameter without a close match lists the parameters', async () => {
  await expectError(lines(...ELEMENTS.slice(0, 3), '  tee: { type: Tee, colour: red }', ...ELEMENTS.slice(4), ...CHAINS),
    'pipeline.yaml:4:21', "Tee has no parameter 'colour'", 'its parameters are outputs');
  await expectError(lines(...ELEMENTS.slice(0, 2), '  count: { type: Counter, rate: 5 }', ...ELEMENTS.slice(3), ...CHAINS),
    'pipeline.yaml:3:27', "Counter has no parameter 'rate'", 'Counter takes no parameters');
});

test('element: a parameter named as what every object has (constructor, __proto__) is unknown like any other', async () => {
  for (const name of ['constructor', 'toString', '__proto__', 'hasOwnProperty']) {
    await expectError(lines(...ELEMENTS.slice(0, 3), `  tee: { type: Tee, ${name}: 1 }`, ...ELEMENTS.slice(4), ...CHAINS),
      'pipeline.yaml:4:21', `Tee has no parameter '${name}'`, 'its parameters are outputs');
  }
});

test('element: a missing required parameter', async () => {
  await expectError(lines('elements:', '  src: { type: FromPcap }', '  drop: { type: Discard }', 'connections:', '  - src -> drop'),
    'pipeline.yaml:2:3', "FromPcap 'src' needs parameter 'file' (a string)", 'add file: ... — the capture file, relative to the config file');
});

// --- parameter types --------------------------------------------------------------------------

/**
 * Asserts the error of one parameter, written on line 5 of a config as `    KEY: VALUE` (so its value
 * starts at column 7 + KEY's length), with `more` parameter lines after it.
 */
async function expectParamError(type: string, key: string, value: string, message: string, hint: string | undefined, more: string[] = [], options: LoadOptions = {}) {
  // Wired as its kind wants: the connections are judged with the parameters' mistakes.
  const kind = (await loadRegistry()).get(type)?.kind;
  const text = lines('elements:', '  src: { type: FromPcap, file: in.pcap }', '  el:', `    type: ${type}`, `    ${key}: ${value}`, ...more,
    ...(kind === 'sink' ? [] : ['  drop: { type: Discard }']), 'connections:',
    ...(kind === 'source' ? ['  - src -> drop', '  - el -> drop'] : kind === 'sink' ? ['  - src -> el'] : ['  - src -> el -> drop']));
  await expectError(text, `pipeline.yaml:5:${7 + key.length}`, `el.${key}: ${message}`, hint, options);
}

test('an element whose type key is misspelt or capitalised is told where and how', async () => {
  for (const key of ['Type', 'tpye', 'TYPE']) {
    await expectError(lines('elements:', '  src: { type: FromPcap, file: in.pcap }', `  count: { ${key}: Counter }`, 'connections:', '  - src -> count'),
      'pipeline.yaml:3:12', "element 'count' has no type", "did you mean 'type'? (keys are lower case)");
  }
});

test('param: IPv4 addresses', async () => {
  const hint = 'write four decimal numbers 0-255 separated by dots, e.g. 203.0.113.7';
  await expectParamError('Rewrite', 'ip_src', '203.0.113.300', "'203.0.113.300' is not an IPv4 address", hint);
  await expectParamError('Rewrite', 'ip_dst', '10.0.0', "'10.0.0' is not an IPv4 address", hint);
  await expectParamError('Rewrite', 'ip_dst', '010.0.0.1', "'010.0.0.1' is not an IPv4 address", 'write each number without leading zeros (they are read as octal elsewhere), e.g. 10.0.0.1');
  await expectParamError('Rewrite', 'ip_dst', '12', '12 is not an IPv4 address', hint);
});

test('param: CIDR prefixes', async () => {
  await expectParamError('Generator', 'src_net', '10.0.0.1/8', "'10.0.0.1/8' has bits set past its /8", 'did you mean 10.0.0.0/8?');
  await expectParamError('Generator', 'dst_net', '198.18.0.0/33', "'198.18.0.0/33' is not a CIDR prefix", 'write ADDRESS/LENGTH with a length 0-32, e.g. 100.64.0.0/10');
  await expectParamError('Generator', 'dst_net', '198.18.0.0', "'198.18.0.0' is not a CIDR prefix", 'write ADDRESS/LENGTH with a length 0-32, e.g. 100.64.0.0/10');
});

test('param: ports', async () => {
  await expectParamError('Rewrite', 'src_port', '70000', '70000 is out of range for a port number', 'use a value from 0 to 65535');
  await expectParamError('Rewrite', 'dst_port', 'http', "'http' is not a port number", 'write a whole number from 0 to 65535');
  await expectParamError('Rewrite', 'dst_port', '-1', '-1 is out of range for a port number', 'use a value from 0 to 65535');
});

test('param: enums, with the value meant when it is close, else the values', async () => {
  await expectParamError('FromPcap', 'timing', 'slow', "'slow' is not one of fast, original", 'write one of fast, original', ['    file: in.pcap']);
  await expectParamError('FromPcap', 'timing', 'fsat', "'fsat' is not one of fast, original", 'did you mean fast?', ['    file: in.pcap']);
  await expectParamError('ToPcap', 'resolution', 'NS', "'NS' is not one of us, ns", 'did you mean ns?', ['    file: out.pcap']);
});

test('param: booleans (YAML 1.2: yes is a string)', async () => {
  await expectParamError('FromPcap', 'loop', 'yes', "'yes' is not true or false", 'write true or false', ['    file: in.pcap']);
  await expectParamError('Rewrite', 'dec_ttl', '1', '1 is not true or false', 'write true or false');
});

test('param: sizes, with or without a unit, in their range (the README promised 64B and 2KiB; no parameter took them)', async () => {
  await expectParamError('Generator', 'frame_size', '10KiB', "'10KiB' is out of range", 'use a size from 60 to 9216 bytes');
  await expectParamError('Generator', 'frame_size', '1.5', '1.5 is not a size', "write a whole number of bytes, optionally with a unit: B, KiB, MiB, GiB (or k, M, G), e.g. '64B'");
  await expectParamError('ToPcap', 'snaplen', '32B', "'32B' is out of range", 'use a size from 64 to 262144 bytes', ['    file: out.pcap']);
  const config = await loadConfig(FILE, { text: lines('slot_size: 4KiB', 'elements:', '  src: { type: Generator, count: 1, frame_size: 1KiB }', '  drop: { type: Discard }', 'connections:', '  - src -> drop') });
  assert.equal([config.slotSize, config.elements.get('src')!.params.frame_size], [4096, 1024]);
});

test('param: whole numbers out of range or not whole', async () => {
  await expectParamError('Rewrite', 'dscp', '64', '64 is out of range for a whole number', 'use a value from 0 to 63');
  await expectParamError('Tee', 'outputs', '1.5', '1.5 is not a whole number', 'write a whole number from 1 to 64');
  await expectParamError('Tee', 'outputs', 'two', "'two' is not a whole number", 'write a whole number from 1 to 64');
  await expectParamError('Tee', 'outputs', "'3'", "'3' is not a whole number", 'write it without quotes: 3');
});

test('a Generator frame larger than a packet slot is a config error at its frame_size, with the slot_size that fits it', async () => {
  const config = (slot: string) => lines(...slot ? [slot] : [], 'elements:', '  gen: { type: Generator, count: 10, frame_size: 9216 }', '  drop: { type: Discard }', 'connections:', '  - gen -> drop');
  await expectError(config(''), 'pipeline.yaml:2:50', 'gen.frame_size: 9216 bytes do not fit a packet slot (1920 bytes after the headroom)',
    'raise slot_size in the config to 16384, or send smaller frames');
  await loadConfig(FILE, { text: config('slot_size: 16384') });
});

test('more Generator flows than its nets, ports and protocol have distinct 5-tuples is a config error at flows', async () => {
  const config = (flows: number) => lines('elements:', `  gen: { type: Generator, flows: ${flows}, src_net: 100.64.0.1/32, dst_net: 198.18.0.1/32, protocol: udp }`, '  drop: { type: Discard }', 'connections:', '  - gen -> drop');
  await expectError(config(645121), 'pipeline.yaml:2:34', 'gen.flows: 645121 distinct 5-tuples do not fit src_net, dst_net and protocol (645120 do)',
    'widen src_net or dst_net, or make fewer flows');
  await loadConfig(FILE, { text: config(645120) });
});

test('param: Ethernet addresses', async () => {
  const hint = 'write six hex bytes separated by colons, e.g. 02:00:00:00:00:01';
  await expectParamError('Rewrite', 'eth_src', '02:00:00:00:00', "'02:00:00:00:00' is not an Ethernet address", hint);
  await expectParamError('Rewrite', 'eth_dst', '02:00:00:00:00:0g', "'02:00:00:00:00:0g' is not an Ethernet address", hint);
  await expectParamError('Rewrite', 'eth_dst', '02:00-00:00:00:01', "'02:00-00:00:00:01' is not an Ethernet address", hint);
});

test('param: every mistaken item of a list is reported, each at its item, columns counted from the start of the rule', async () => {
  const errors = await errorsOf(lines('elements:', '  src: { type: FromPcap, file: in.pcap }', '  fw:', '    type: Filter', '    rules:',
    '      - allow tcp dst port 80', '      - deny udp and (port 53', '      - "allow icmp[icmptype] == icmp-foo"', '      - permit tcp',
    '  drop: { type: Discard }', 'connections:', '  - src -> fw -> drop'));
  assert.equal(summary(errors), [
    "7:30 fw.rules: expected ')' to close the '(' at column 14, found the end of the expression (column 22)",
    "8:34 fw.rules: expected a value to compare with, found 'icmp-foo' (column 25)",
    '9:9 fw.rules: "permit tcp" does not start with allow, deny or an output number',
  ]);
});

test('param: an expression of ether alone is the parameter\'s error at its column, not a crash with a stack trace', async () => {
  const errors = await errorsOf(lines('elements:', '  src: { type: FromPcap, file: in.pcap }', "  cl: { type: Classifier, patterns: ['tcp', 'udp or not ether'] }",
    '  drop: { type: Discard }', 'connections:', '  - src -> cl -> drop', '  - cl[1] -> drop'));
  assert.equal(summary(errors), ["3:57 cl.patterns: 'ether' alone is not a filter (column 12)"]);
  assert.is(errors[0].hint, 'qualify something with it, e.g. ether proto 0x0800 or ether host 02:00:00:00:00:01');
});

test('param: strings that YAML reads as numbers', async () => {
  await expectParamError('ToPcap', 'file', '2024', '2024 is not a non-empty string', "quote a value YAML would read as a number or a boolean, e.g. '2024'");
  await expectParamError('ToPcap', 'file', "''", "'' is not a non-empty string", 'give it a value');
});

/** A folder with a user element `Units` that takes a duration and a size (no built-in does). */
function unitsElement(dir: string): string {
  const folder = join(dir, 'elements', 'units');
  mkdirSync(folder, { recursive: true });
  writeFileSync(join(folder, 'element.ts'), `import { defineElement, param } from ${JSON.stringify(pathToFileURL(join(ROOT, 'engine/api.ts')).href)};
export default defineElement({
  type: 'Units',
  summary: 'takes a duration and a size',
  inputs: 1,
  outputs: [{ name: 'out', doc: 'every packet' }],
  params: { idle: param.duration('idle timeout', { default: 30e9 }), room: param.size('buffer size', { default: 2048 }) },
  example: 'u: { type: Units, idle: 5m }',
});
`);
  writeFileSync(join(folder, 'process.ts'), `import { Batch, Outputs } from "wirepath";
import { UnitsState } from "./layout";

export function process(self: UnitsState, batch: Batch, out: Outputs): void {
  out.pushAll(0, batch);
}
`);
  return join(dir, 'elements');
}

test('param: durations and sizes (of a user element)', async () => {
  const dir = tempDir();
  try {
    const options = { elementDirs: [unitsElement(dir)] };
    const durationHint = "write a number with a unit: ns, us, ms, s, m, h or d, e.g. '300s' or '2h'";
    const sizeHint = "write a whole number of bytes, optionally with a unit: B, KiB, MiB, GiB (or k, M, G), e.g. '64B'";
    await expectParamError('Units', 'idle', '5 minutes', "'5 minutes' is not a duration", durationHint, [], options);
    await expectParamError('Units', 'idle', '-3', '-3 is not a duration', durationHint, [], options);
    await expectParamError('Units', 'idle', '.inf', 'Infinity is not a duration', durationHint, [], options);
    await expectParamError('Units', 'room', '2 kilobytes', "'2 kilobytes' is not a size", sizeHint, [], options);
    await expectParamError('Units', 'room', '1.5KiB', "'1.5KiB' is not a size", sizeHint, [], options);
    await expectParamError('Units', 'room', '8GiB', "'8GiB' is too large", 'a size is at most 4294967295 bytes (4 GiB - 1)', [], options);

    const config = await loadConfig(FILE, { ...options, text: lines('elements:', '  src: { type: FromPcap, file: in.pcap }',
      '  u: { type: Units, idle: 1.5h, room: 16MiB }', '  v: { type: Units }', '  drop: { type: Discard }', 'connections:', '  - src -> u -> v -> drop') });
    assert.equal(config.elements.get('u')!.params, { idle: 5400e9, room: 16 << 20 });
    assert.equal(config.elements.get('v')!.params, { idle: 30e9, room: 2048 });
  } finally {
    removeDir(dir);
  }
});

// --- --set overrides --------------------------------------------------------------------------

test('--set: replaces a parameter of the file and adds one it does not have', async () => {
  const config = await loadConfig(FILE, { text: lines(...ELEMENTS, ...CHAINS), overrides: ['src.file=other.pcap', 'src.loop=true', 'src.count=10'] });
  assert.equal(config.elements.get('src')!.params, { file: 'other.pcap', timing: 'fast', loop: true, count: 10, preload: false, steer: 'flow' });
});

test('--set: only [...] and {...} make lists and mappings; a value that YAML reads as a block list or mapping is text', async () => {
  for (const file of ['-', 'a: b', '- x']) {
    const config = await loadConfig(FILE, { text: lines(...ELEMENTS, ...CHAINS), overrides: [`src.file=${file}`] });
    assert.is(config.elements.get('src')!.params.file, file);
  }
  await expectError(lines(...ELEMENTS, ...CHAINS), 'pipeline.yaml:2:26', 'src.file: [1,2] is not a non-empty string (set on the command line)',
    "quote a value YAML would read as a number or a boolean, e.g. '2024'", { overrides: ['src.file= [1, 2]'] });
});

test('--set: an override reaches the graph checks', async () => {
  await expectError(lines(...ELEMENTS, ...CHAINS), 'pipeline.yaml:4:3', 'output tee[2] (copy2) is not connected',
    'connect it, e.g. "tee[2] -> drop"', { overrides: ['tee.outputs=3'] });
});

test('--set: a bad value is reported at the parameter (or the element when the file has no such parameter)', async () => {
  await expectError(lines(...ELEMENTS, ...CHAINS), 'pipeline.yaml:2:26', 'src.file: [1,2] is not a non-empty string (set on the command line)',
    "quote a value YAML would read as a number or a boolean, e.g. '2024'", { overrides: ['src.file=[1, 2]'] });
  await expectError(lines(...ELEMENTS, ...CHAINS), 'pipeline.yaml:4:3', "tee.outputs: 'many' is not a whole number (set on the command line)",
    'write a whole number from 1 to 64', { overrides: ['tee.outputs=many'] });
  await expectError(lines(...ELEMENTS, ...CHAINS), 'pipeline.yaml:3:3', "Counter has no parameter 'rate' (set on the command line)",
    'Counter takes no parameters', { overrides: ['count.rate=5'] });
});

test('--set: an unknown element, with did-you-mean', async () => {
  await expectError(lines(...ELEMENTS, ...CHAINS), '', "--set cuont.rate=5: the config has no element 'cuont'", "did you mean 'count'?", { overrides: ['cuont.rate=5'] });
});

test('--set: malformed overrides', async () => {
  for (const o of ['src.file', 'file=x.pcap', 'src.file.x=1', '=1']) {
    await expectError(lines(...ELEMENTS, ...CHAINS), '', `--set ${o}: expected NAME.PARAM=VALUE`, 'for example --set src.file=trace.pcap', { overrides: [o] });
  }
  await expectError(lines(...ELEMENTS, ...CHAINS), '', '--set batch=64: expected NAME.PARAM=VALUE',
    '--set changes an element\'s parameter; settings of the whole config (batch, shards, ...) are set in its file', { overrides: ['batch=64'] });
  // A type set on the command line is reported where the element is, and says where it came from.
  await expectError(lines(...ELEMENTS, ...CHAINS), 'pipeline.yaml:3:3', "unknown element type 'Nope' (set on the command line)",
    `known types: ${await builtIn()}; one of your own needs its folder in element_dirs`, { overrides: ['count.type=Nope'] });
  // A Tee named drop: the hint's Discard is not itself.
  const [first] = await errorsOf(lines(...ELEMENTS, ...CHAINS), { overrides: ['drop.type=Tee'] });
  assert.equal([first.message, first.hint], ['output drop[0] (copy0) is not connected', 'connect it, e.g. "drop[0] -> drop2" with drop2: { type: Discard }']);
  // A Discard of another name is the one the hint names (it proposed a new drop beside it).
  const [other] = await errorsOf(lines(...ELEMENTS, ...CHAINS), { overrides: ['drop.type=Tee', 'count.type=Discard'] });
  assert.equal(other.hint, 'connect it, e.g. "drop[0] -> count"');
});

test('--set: an element that is not a mapping is reported once, not a crash', async () => {
  await expectError(lines('elements:', '  src: { type: FromPcap, file: in.pcap }', '  drop: Discard', 'connections:', '  - src -> drop'),
    'pipeline.yaml:3:9', "element 'drop' must be a mapping with a type", 'write drop: { type: Discard }', { overrides: ['drop.x=1'] });
});

// --- connection syntax: the column is inside the string -----------------------------------------

const SYNTAX_HINT = 'write NAME, NAME[OUT] or [IN]NAME between arrows, e.g. "tee[1] -> [0]count"';

test('connection: an element name missing between arrows', async () => {
  await expectError(lines(...ELEMENTS, '  - src -> -> drop'), 'pipeline.yaml:7:12', 'connection: an element name is missing', SYNTAX_HINT);
  await expectError(lines(...ELEMENTS, '  - src -> drop ->'), 'pipeline.yaml:7:19', 'connection: an element name is missing', SYNTAX_HINT);
});

test('connection: a quoted string shifts the column by the quote', async () => {
  await expectError(lines(...ELEMENTS, '  - "src -> -> drop"'), 'pipeline.yaml:7:13', 'connection: an element name is missing', SYNTAX_HINT);
  await expectError(lines(...ELEMENTS, "  - 'src -> drop[0]'"), 'pipeline.yaml:7:17',
    'connection: an output port on the last element of a chain connects nothing', 'add "-> NAME" after it');
});

test('connection: a chain written as a block scalar (folded or literal) is placed on the line of the mistake', async () => {
  for (const mark of ['>-', '|']) {
    await expectError(lines(...ELEMENTS, `  - ${mark}`, '    src ->', '    -> drop'), 'pipeline.yaml:9:5', 'connection: an element name is missing', SYNTAX_HINT);
  }
});

test('connection: a bad port', async () => {
  await expectError(lines(...ELEMENTS, '  - src[x] -> drop'), 'pipeline.yaml:7:5', "connection: 'src[x]' is not an element reference", SYNTAX_HINT);
  await expectError(lines(...ELEMENTS, '  - src -> [-1]drop'), 'pipeline.yaml:7:12', "connection: '[-1]drop' is not an element reference", SYNTAX_HINT);
  // Said as written (it was 'has no output 1e+23').
  await expectError(lines(...ELEMENTS, '  - src[99999999999999999999999] -> drop'), 'pipeline.yaml:7:9',
    "connection: port 99999999999999999999999 is larger than any element's", 'ports count from 0, e.g. "tee[1] -> [0]count"');
});

test('connection: an arrow that is not ->, pasted from rendered docs or typed by habit, is named where it is', async () => {
  const hint = 'join elements with -> (a hyphen and a greater-than sign)';
  await expectError(lines(...ELEMENTS, '  - src -> count \u2192 drop'), 'pipeline.yaml:7:18', "connection: '\u2192' is not an arrow", hint);
  await expectError(lines(...ELEMENTS, '  - src => drop'), 'pipeline.yaml:7:9', "connection: '=>' is not an arrow", hint);
  await expectError(lines(...ELEMENTS, '  - src \u2014> drop'), 'pipeline.yaml:7:9', "connection: '\u2014>' is not an arrow", hint);
});

test('connection: a chain of one element', async () => {
  await expectError(lines(...ELEMENTS, '  - src'), 'pipeline.yaml:7:5', 'connection: a chain needs at least two elements joined by ->', 'e.g. "src -> drop"');
});

test('connection: a chain that starts with [ must be quoted in YAML, and the hint says so', async () => {
  await expectError(lines(...ELEMENTS, ...CHAINS, '  - [0]count -> drop'), 'pipeline.yaml:9:8', 'YAML syntax: Unexpected scalar at node end',
    'quote a connection that starts with an input port: - "[1]count -> drop"');
});

test('connection: an input port on the first element, an output port on the last', async () => {
  await expectError(lines(...ELEMENTS, '  - "[0]src -> drop"'), 'pipeline.yaml:7:6',
    'connection: an input port on the first element of a chain connects nothing', 'write "src" or put an element before it');
  await expectError(lines(...ELEMENTS, '  - src -> drop[0]'), 'pipeline.yaml:7:16',
    'connection: an output port on the last element of a chain connects nothing', 'add "-> NAME" after it');
});

test('connection: a chain wrapped over lines points at the right line', async () => {
  await expectError(lines(...ELEMENTS, '  - src -> count', '      -> tee ->', '    drop[0]'), 'pipeline.yaml:9:9',
    'connection: an output port on the last element of a chain connects nothing', 'add "-> NAME" after it');
});

test('connection: not a string', async () => {
  await expectError(lines(...ELEMENTS, '  - 42'), 'pipeline.yaml:7:5', 'a connection is a string like "a -> b"', 'quote it if it holds YAML special characters');
});

// --- the graph --------------------------------------------------------------------------------

test('graph: an unknown element in a connection, with did-you-mean, reported once', async () => {
  await expectError(lines(...ELEMENTS, '  - src -> count -> tee -> dorp -> drop', '  - tee[1] -> drop'),
    'pipeline.yaml:7:28', "connection names unknown element 'dorp'", "did you mean 'drop'?");
  await expectError(lines(...ELEMENTS, '  - src -> count -> tee -> drop', '  - tee[1] -> sink'),
    'pipeline.yaml:8:15', "connection names unknown element 'sink'", 'declare it under elements: or use one of src, count, tee, drop');
});

test('graph: mistakes in the connections come with the others of the file, unless ports depend on a failed parameter', async () => {
  // A bad parameter of an element whose ports are fixed, an unknown top-level key: the wiring is judged too.
  const withBadParam = await errorsOf(lines('elements:', '  src: { type: FromPcap, file: in.pcap, count: -1 }', '  count: { type: Counter }',
    '  tee: { type: Tee }', '  drop: { type: Discard }', 'connections:', '  - src -> count -> tee -> drop', '  - tee[1] -> dorp'));
  assert.equal(summary(withBadParam), ['2:48 src.count: -1 is out of range for a whole number', "8:15 connection names unknown element 'dorp'"]);
  const withUnknownKey = await errorsOf(lines('bach: 32', ...ELEMENTS, '  - src -> count -> tee -> drop', '  - tee[1] -> count'));
  assert.equal(summary(withUnknownKey), ["1:1 unknown top-level key 'bach'", '4:3 the connections form a cycle through count, tee']);
  // The Tee's outputs are what its parameter says: with that parameter wrong, its ports cannot be judged.
  const withBadOutputs = await errorsOf(lines('elements:', '  src: { type: FromPcap, file: in.pcap }', '  count: { type: Counter }',
    "  tee: { type: Tee, outputs: 'three' }", '  drop: { type: Discard }', 'connections:', '  - src -> count -> tee -> drop', '  - tee[2] -> drop'));
  assert.equal(summary(withBadOutputs), ["4:30 tee.outputs: 'three' is not a whole number"]);
  // But a name that names no element is wrong whatever the ports.
  const withBadOutputsAndName = await errorsOf(lines('elements:', '  src: { type: FromPcap, file: in.pcap }', '  count: { type: Counter }',
    "  tee: { type: Tee, outputs: 'three' }", '  drop: { type: Discard }', 'connections:', '  - src -> count -> tee -> drop', '  - tee[2] -> dorp'));
  assert.equal(summary(withBadOutputsAndName), ["4:30 tee.outputs: 'three' is not a whole number", "8:15 connection names unknown element 'dorp'"]);
});

test('graph: an output port out of range', async () => {
  const errors = await errorsOf(lines(...ELEMENTS, '  - src -> count[1] -> tee -> drop', '  - tee[1] -> drop'));
  // count[0] is indeed open; tee is not reported as unfed, since the rejected connection meant to feed it.
  assert.equal(summary(errors), ['3:3 output count[0] (out) is not connected', '7:17 count (Counter) has no output 1']);
  assert.is(errors[1].hint, 'its outputs are [0] out');
  await expectError(lines(...ELEMENTS, ...CHAINS, '  - drop[0] -> count'),
    'pipeline.yaml:9:9', 'drop (Discard) has no output 0', 'Discard has no outputs');
});

test('graph: an input port out of range, and an input into a source', async () => {
  await expectError(lines(...ELEMENTS, '  - src -> [1]count -> tee -> drop', '  - tee[1] -> drop'),
    'pipeline.yaml:7:12', 'count (Counter) has no input 1', 'it has one input, [0]');
  await expectError(lines(...ELEMENTS, '  - src -> count -> tee -> drop', '  - tee[1] -> src'),
    'pipeline.yaml:8:15', 'src (FromPcap) has no input 0', 'FromPcap is a source and has no inputs');
});

test('graph: an output connected twice', async () => {
  await expectError(lines(...ELEMENTS, ...CHAINS, '  - count -> drop'), 'pipeline.yaml:9:5',
    'output count[0] is connected twice (to tee and drop)', 'an output feeds exactly one input; put a Tee in between to copy packets to both');
});

test('graph: a required output left unconnected (an optional one may be)', async () => {
  await expectError(lines(...ELEMENTS, '  - src -> count -> tee -> drop'), 'pipeline.yaml:4:3',
    'output tee[1] (copy1) is not connected', 'connect it, e.g. "tee[1] -> drop"');
  const config = await loadConfig(FILE, { text: lines('elements:', '  src: { type: FromPcap, file: in.pcap }', '  check: { type: CheckIPHeader }',
    '  rw: { type: Rewrite, dec_ttl: true }', '  drop: { type: Discard }', 'connections:', '  - src -> check -> rw -> drop') });
  assert.equal(buildGraph(config).byName.get('check')!.targets, [{ node: 'rw', port: 0 }, null]);
});

test('graph: an element nothing feeds', async () => {
  await expectError(lines(...ELEMENTS.slice(0, 5), '  idle: { type: Counter }', 'connections:', ...CHAINS, '  - idle -> drop'),
    'pipeline.yaml:6:3', 'nothing feeds idle', 'connect an output to it, e.g. "NAME -> idle", or remove it');
  // The example names an output that is free (it named src, whose output was taken: connected twice).
  const free = await errorsOf(lines(...ELEMENTS.slice(0, 5), '  idle: { type: Counter }', 'connections:', CHAINS[0], '  - idle -> drop'));
  assert.is(free.find((e) => e.message === 'nothing feeds idle')?.hint, 'connect an output to it, e.g. "tee[1] -> idle", or remove it');
  // The only source turned into an element with an input: the example does not feed it from itself.
  const errors = await errorsOf(lines(...ELEMENTS, ...CHAINS), { overrides: ['src.type=Counter'] });
  const unfed = errors.find((e) => e.message === 'nothing feeds src');
  assert.is(unfed?.hint, 'connect an output to it, e.g. "NAME -> src", or remove it');
});

test('YAML merge keys share parameters between elements; one value is a list of one', async () => {
  // Before: '<<' was read as a key ("element 'rw2' has no type", then "Rewrite has no parameter '<<'").
  const config = await loadConfig(FILE, { text: lines('elements:', '  src: { type: FromPcap, file: in.pcap }', '  rw: &r { type: Rewrite, dec_ttl: true, ip_src: 10.0.0.1 }',
    '  rw2: { <<: *r, ip_src: 10.0.0.2 }', '  drop: { type: Discard }', 'connections:', '  - src -> rw -> rw2 -> drop') });
  const rw2 = config.elements.get('rw2')!;
  assert.is(rw2.type.type, 'Rewrite');
  assert.equal([rw2.params.dec_ttl, rw2.params.ip_src], [true, 0x0a000002], 'inherited, and its own value wins');
  // Mistakes in an inherited value are placed where it is written.
  const inherited = await errorsOf(lines('elements:', '  src: { type: FromPcap, file: in.pcap }', '  rw: &r { type: Rewrite, dscp: 99 }', '  rw2: { <<: *r }',
    '  drop: { type: Discard }', 'connections:', '  - src -> rw -> rw2 -> drop'));
  assert.equal(inherited.map((e) => e.format()), ['pipeline.yaml:3:33: rw.dscp: 99 is out of range for a whole number\n  hint: use a value from 0 to 63',
    'pipeline.yaml:3:33: rw2.dscp: 99 is out of range for a whole number\n  hint: use a value from 0 to 63']);
  // Before: "is not a non-empty list", which hid the /33 (and --set can write no list).
  const nat = (pool: string) => lines('elements:', '  src: { type: FromPcap, file: in.pcap }', `  nat: { type: NAT, pool: ${pool} }`, '  back: { type: FromPcap, file: in.pcap }',
    '  drop: { type: Discard }', 'connections:', '  - src -> nat -> drop', '  - back -> [1]nat', '  - nat[1] -> drop');
  await expectError(nat('203.0.113.0/33'), 'pipeline.yaml:3:27', "nat.pool: '203.0.113.0/33' is not a CIDR prefix", 'write ADDRESS/LENGTH with a length 0-32, e.g. 100.64.0.0/10');
  const one = await loadConfig(FILE, { text: nat('[203.0.113.0/24]'), overrides: ['nat.pool=198.18.0.0/24'] });
  assert.equal(one.elements.get('nat')!.params.pool, [{ address: 0xc6120000, prefix: 24, mask: 0xffffff00 }], '--set NAME.pool=PREFIX');
});

test('graph: a cycle names the elements on it (not those below it)', async () => {
  await expectError(lines('elements:', '  src: { type: FromPcap, file: in.pcap }', '  a: { type: Counter }', '  b: { type: Counter }',
    '  tee: { type: Tee }', '  drop: { type: Discard }', 'connections:', '  - src -> a -> tee -> drop', '  - tee[1] -> b -> a'),
  'pipeline.yaml:3:3', 'the connections form a cycle through a, b, tee', 'packets must flow from sources to sinks without returning to an element they passed');
});

// --- engine settings and element folders -------------------------------------------------------

test('settings: bad batch, slot_size and pool_slots values', async () => {
  const errors = await errorsOf(lines('batch: 0', 'slot_size: 1000', 'pool_slots: many', ...ELEMENTS, ...CHAINS));
  assert.equal(summary(errors), [
    '1:8 batch must be a whole number from 1 to 4096',
    '2:12 slot_size must be a size from 256 to 65536 bytes and a power of two',
    '3:13 pool_slots must be a whole number from 64 to 1048576 and a power of two',
  ]);
  assert.equal(errors.map((e) => e.hint), ['leave it out for the default, 256', 'leave it out for the default, 2048 (2KiB: a size may have a unit)', 'leave it out for the default, 16384']);
  await expectError(lines('batch: 5000', ...ELEMENTS, ...CHAINS), 'pipeline.yaml:1:8', 'batch must be a whole number from 1 to 4096', 'leave it out for the default, 256');
  await expectError(lines('pool_slots: 32', ...ELEMENTS, ...CHAINS), 'pipeline.yaml:1:13',
    'pool_slots must be a whole number from 64 to 1048576 and a power of two', 'leave it out for the default, 16384');
  const config = await loadConfig(FILE, { text: lines('batch: 64', 'slot_size: 4096', 'pool_slots: 1024', ...ELEMENTS, ...CHAINS) });
  assert.equal([config.batch, config.slotSize, config.poolSlots], [64, 4096, 1024]);
  // Slots of more than 3 GiB leave too little of WebAssembly's 4 GiB (before, a run failed with a stack trace).
  await expectError(lines('slot_size: 4096', 'pool_slots: 1048576', ...ELEMENTS, ...CHAINS), 'pipeline.yaml:2:13',
    "pool_slots × slot_size is 4 GiB: the packet slots may take at most 3 GiB of the pipeline's 4 GiB of memory", 'fewer pool_slots (at most 524288) or a smaller slot_size');
});

test('settings: threads is auto, worker or inline', async () => {
  await expectError(lines('threads: 2', ...ELEMENTS, ...CHAINS), 'pipeline.yaml:1:10', 'threads must be one of auto, worker, inline',
    'leave it out for auto: shard workers, or the I/O thread when a device source shares two cores or fewer with the kernel');
  assert.is((await loadConfig(FILE, { text: lines(...ELEMENTS, ...CHAINS) })).threads, 'auto');
  assert.is((await loadConfig(FILE, { text: lines('threads: inline', ...ELEMENTS, ...CHAINS) })).threads, 'inline');
});

test('element_dirs: each missing folder is reported at its item, relative to the config file', async () => {
  const dir = tempDir();
  try {
    const errors = await errorsOf(lines('element_dirs: [./nope, ../also-nope]', ...ELEMENTS, ...CHAINS), {}, join(dir, 'pipeline.yaml'));
    assert.equal(summary(errors), ["1:16 element folder './nope' does not exist", "1:24 element folder '../also-nope' does not exist"]);
    assert.is(errors[0].position!.file, join(dir, 'pipeline.yaml'));
    assert.is(errors[0].hint, 'folders are relative to the config file');
    const notList = await errorsOf(lines('element_dirs: ./nope', ...ELEMENTS, ...CHAINS), {}, join(dir, 'pipeline.yaml'));
    assert.equal(summary(notList), ['1:15 element_dirs must be a list of folders']);
    // A file, and a folder whose element takes a built-in type's name: each at its item (they were at the list, with one hint for all).
    writeFileSync(join(dir, 'a.pcap'), '');
    const units = unitsElement(join(dir, 'mine'));
    writeFileSync(join(units, 'units', 'element.ts'), readFileSync(join(units, 'units', 'element.ts'), 'utf8').replace("type: 'Units'", "type: 'Counter'"));
    const [file] = await errorsOf(lines('element_dirs: [./a.pcap]', ...ELEMENTS, ...CHAINS), {}, join(dir, 'pipeline.yaml'));
    assert.equal([summary([file]), file.hint], [[`1:16 element folder ${join(dir, 'a.pcap')} is a file`], 'give the folder that holds element folders (each with element.ts and process.ts)']);
    const [taken] = await errorsOf(lines('element_dirs: [./mine/elements]', ...ELEMENTS, ...CHAINS), {}, join(dir, 'pipeline.yaml'));
    assert.equal([summary([taken]), taken.hint], [[`1:16 element type Counter in ${join(units, 'units')} is already defined in ${join(ROOT, 'elements/counter')}`], 'give your element another type name']);
  } finally {
    removeDir(dir);
  }
});

test('element_dirs: a folder that exists adds its elements', async () => {
  const dir = tempDir();
  try {
    unitsElement(dir);
    const config = await loadConfig(join(dir, 'pipeline.yaml'), { text: lines('element_dirs: [./elements]', ...ELEMENTS.slice(0, 3),
      '  u: { type: Units, idle: 250ms }', ...ELEMENTS.slice(3), '  - src -> count -> u -> tee -> drop', '  - tee[1] -> drop') });
    assert.is(config.elements.get('u')!.params.idle, 250e6);
  } finally {
    removeDir(dir);
  }
});

test('--elements: a missing folder is reported without a file position', async () => {
  await expectError(lines(...ELEMENTS, ...CHAINS), '', '--elements /no/such/folder: the folder does not exist',
    'give a folder that holds element folders', { elementDirs: ['/no/such/folder'] });
});

// --- all at once ------------------------------------------------------------------------------

test('all the mistakes of a file are reported at once, in file order', async () => {
  const errors = await errorsOf(lines(
    'batch: 0',
    'elements:',
    '  src: { type: FromPcap, file: in.pcap }',
    '  count: { type: Countr }',
    '  rw: { type: Rewrite, ip_src: 10.0.0.256 }',
    '  drop: { type: Discard, colour: red }',
    'connections:',
    '  - src -> -> drop',
    'flavour: vanilla',
  ), { overrides: ['nope.x=1'] });
  assert.equal(summary(errors), [
    "--set nope.x=1: the config has no element 'nope'",
    '1:8 batch must be a whole number from 1 to 4096',
    "4:18 unknown element type 'Countr'",
    "5:32 rw.ip_src: '10.0.0.256' is not an IPv4 address",
    "6:26 Discard has no parameter 'colour'",
    '8:12 connection: an element name is missing',
    "9:1 unknown top-level key 'flavour'",
  ]);
  const thrown = await loadConfig(FILE, { text: lines('batch: 0', 'elements:', '  count: { type: Countr }', 'connections:', '  - count -> count') }).catch((e) => e);
  assert.instance(thrown, ConfigErrors);
  assert.is(thrown.message, thrown.errors.map((e: ConfigError) => e.format()).join('\n'));
  assert.ok(thrown.message.startsWith('pipeline.yaml:1:8: batch must be a whole number from 1 to 4096\n  hint: leave it out for the default, 256\n'));
});

test('all the graph mistakes of a file are reported at once, in file order', async () => {
  const errors = await errorsOf(lines(
    'elements:',
    '  src: { type: FromPcap, file: in.pcap }',
    '  count: { type: Counter }',
    '  tee: { type: Tee, outputs: 3 }',
    '  idle: { type: Counter }',
    '  drop: { type: Discard }',
    'connections:',
    '  - src -> count -> tee -> drop',
    '  - tee[1] -> dorp',
    '  - count -> drop',
    '  - idle[1] -> drop',
  ));
  assert.equal(summary(errors), [
    '4:3 output tee[2] (copy2) is not connected',
    '5:3 output idle[0] (out) is not connected',
    '5:3 nothing feeds idle',
    "9:15 connection names unknown element 'dorp'",
    '10:5 output count[0] is connected twice (to tee and drop)',
    '11:9 idle (Counter) has no output 1',
  ]);
  assert.ok(errors.every((e) => e.hint), 'every graph error has a hint');
});

test('param: an expression nested too deeply for the parser is the parameter\'s error, not a stack overflow', async () => {
  const nested = `${'('.repeat(5000)}tcp${')'.repeat(5000)}`;
  const deep = await errorsOf(lines('elements:', '  src: { type: FromPcap, file: in.pcap }', `  cl: { type: Classifier, patterns: ['${nested}'] }`, '  drop: { type: Discard }',
    'connections:', '  - src -> cl -> drop'));
  assert.equal(summary(deep), ['3:39 cl.patterns: the expression nests too deeply to parse']);
});

// --- the parameter parsers ----------------------------------------------------------------------

const throwsParamError = (f: () => unknown) => assert.throws(f, (e: unknown) => e instanceof ParamTypeError);

test('parseDuration: units, fractions, bare seconds', () => {
  assert.is(parseDuration('300s'), 300e9);
  assert.is(parseDuration('5m'), 300e9);
  assert.is(parseDuration('1.5h'), 5400e9);
  assert.is(parseDuration('250ms'), 250e6);
  assert.is(parseDuration('20us'), 20e3);
  assert.is(parseDuration('7ns'), 7);
  assert.is(parseDuration('2d'), 2 * 86400e9);
  assert.is(parseDuration(' 10 s '), 10e9);
  assert.is(parseDuration(30), 30e9);
  assert.is(parseDuration(0.5), 0.5e9);
  for (const bad of ['5', '5 min', 's', '-5s', '1e3s', -1, Infinity, NaN, null, true]) throwsParamError(() => parseDuration(bad));
  // Ten years at most: past 2^64 ns a deadline wraps to the past (18446744073s expired every entry at once).
  assert.is(parseDuration('3650d'), 3650 * 86400e9);
  for (const long of ['3651d', '18446744073s', 1e12]) throwsParamError(() => parseDuration(long));
});

test('a parameter default written as text is parsed as in a config; a bad one is kept for the declaration check to report', () => {
  assert.is(param.duration('idle', { default: '30s' }).default, 30e9);
  assert.is(param.duration('idle', { default: 30e9 }).default, 30e9, 'a number is the value itself (ns)');
  assert.is(param.ipv4('address', { default: '10.0.0.1' }).default, 0x0a000001);
  assert.is(param.string('name', { default: '30s' }).default, '30s');
  const bad = param.duration('idle', { default: '30 parsecs' });
  assert.match(bad.badDefault ?? '', /^: default '30 parsecs' is not a duration \(write a number with a unit/);
  assert.is(bad.default, undefined);
  // A list's items too (the default showed as 0.0.0.0/undefined).
  assert.equal(param.strings('nets', { item: types.cidr, default: ['10.0.0.0/8'] }).default, [{ address: 0x0a000000, prefix: 8, mask: 0xff000000 }]);
  assert.equal(param.strings('names', { default: ['a', 'b'] }).default, ['a', 'b']);
  assert.equal(param.strings('none', { item: types.cidr, default: [] }).default, []);
});

test('formatDuration: the largest whole unit', () => {
  assert.is(formatDuration(300e9), '5m');
  assert.is(formatDuration(5400e9), '90m');
  assert.is(formatDuration(7200e9), '2h');
  assert.is(formatDuration(250e6), '250ms');
  assert.is(formatDuration(1500), '1500ns');
});

test('parseSize: bytes, decimal and binary units', () => {
  assert.is(parseSize(1500), 1500);
  assert.is(parseSize('64B'), 64);
  assert.is(parseSize('2KiB'), 2048);
  assert.is(parseSize('2 kib'), 2048);
  assert.is(parseSize('2k'), 2000);
  assert.is(parseSize('2KB'), 2000);
  assert.is(parseSize('16MiB'), 16 << 20);
  assert.is(parseSize('1G'), 1e9);
  assert.is(parseSize('1GiB'), 2 ** 30);
  for (const bad of ['1.5KiB', '2 kilobytes', 'KiB', '-1', -1, 1.5, null]) throwsParamError(() => parseSize(bad));
});

test('parseIPv4 and formatIPv4 round trip', () => {
  for (const text of ['0.0.0.0', '10.0.0.1', '203.0.113.7', '255.255.255.255', '192.168.100.200']) {
    assert.is(formatIPv4(parseIPv4(text)), text);
  }
  assert.is(parseIPv4('255.255.255.255'), 0xffffffff);
  assert.is(parseIPv4('1.2.3.4'), 0x01020304);
  for (const bad of ['256.0.0.1', '1.2.3', '1.2.3.4.5', '01.2.3.4', '1.2.3.x', '', 0x01020304]) throwsParamError(() => parseIPv4(bad));
});

test('parseCidr: address, prefix and mask', () => {
  assert.equal(parseCidr('100.64.0.0/10'), { address: 0x64400000, prefix: 10, mask: 0xffc00000 });
  assert.equal(parseCidr('0.0.0.0/0'), { address: 0, prefix: 0, mask: 0 });
  assert.equal(parseCidr('203.0.113.7/32'), { address: 0xcb007107, prefix: 32, mask: 0xffffffff });
  assert.equal(parseCidr('240.0.0.0/4'), { address: 0xf0000000, prefix: 4, mask: 0xf0000000 });
  for (const bad of ['10.0.0.1/8', '10.0.0.0/33', '10.0.0.0', '10.0.0.0/', '/8', '10.0.0.256/8', 8]) throwsParamError(() => parseCidr(bad));
});

test('parseMac: colons or dashes, any case', () => {
  assert.equal(parseMac('02:00:00:00:00:01'), [2, 0, 0, 0, 0, 1]);
  assert.equal(parseMac('AA-bb-CC-dd-EE-ff'), [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]);
  for (const bad of ['02:00:00:00:00', '02:00:00:00:00:01:02', '02:00-00:00:00:01', '0g:00:00:00:00:01', '020000000001', 2]) throwsParamError(() => parseMac(bad));
});

test('an element that writes a file another element reads or writes, or the config itself, is refused with both named', async () => {
  const dir = tempDir();
  try {
    const file = join(dir, 'c.yaml');
    writeFileSync(join(dir, 'in.pcap'), '');
    symlinkSync(join(dir, 'in.pcap'), join(dir, 'link.pcap'));
    const config = (...elements: string[]) => lines('elements:', ...elements, 'connections:', '  - src -> out');
    const clash = async (text: string) => summary(await errorsOf(text, {}, file));
    // Written where it is read: the capture would be emptied before its first packet (also through a link).
    assert.equal(await clash(config('  src: { type: FromPcap, file: in.pcap }', '  out: { type: ToPcap, file: ./link.pcap }')),
      [`3:30 out.file: src reads ${join(dir, 'link.pcap')}, which this writes`]);
    assert.equal(await clash(config('  out: { type: ToPcap, file: in.pcap }', '  src: { type: FromPcap, file: in.pcap }')),
      [`3:32 src.file: out writes ${join(dir, 'in.pcap')}, which this reads`]);
    // Two writers, before the file exists: each would overwrite the other's records.
    const two = lines('elements:', '  src: { type: FromPcap, file: in.pcap }', '  tee: { type: Tee }', '  a: { type: ToPcap, file: out.pcap }',
      '  b: { type: ToPcap, file: sub/../out.pcap }', 'connections:', '  - src -> tee -> a', '  - tee[1] -> b');
    const errors = await errorsOf(two, {}, file);
    assert.equal(summary(errors), [`5:28 b.file: a writes ${join(dir, 'out.pcap')} too: the two would overwrite each other's records`]);
    assert.is(errors[0].hint, 'give each element a file of its own');
    // The same new file through a link to its folder.
    mkdirSync(join(dir, 'captures'));
    symlinkSync(join(dir, 'captures'), join(dir, 'linked'));
    assert.equal(summary(await errorsOf(two.replace('file: out.pcap', 'file: captures/new.pcap').replace('sub/../out.pcap', 'linked/new.pcap'), {}, file)),
      [`5:28 b.file: a writes ${join(dir, 'linked/new.pcap')} too: the two would overwrite each other's records`]);
    assert.equal(await clash(config('  src: { type: FromPcap, file: in.pcap }', '  out: { type: ToPcap, file: c.yaml }')),
      [`3:30 out.file: ${file} is the config file`]);
    // Readers share a file, and so do logs that append; a device is no file to clash on.
    const shared = lines('elements:', '  a: { type: FromPcap, file: in.pcap }', '  b: { type: FromPcap, file: link.pcap }',
      '  n1: { type: NAT, pool: [203.0.113.1], log: nat.log }', '  n2: { type: NAT, pool: [203.0.113.2], log: nat.log }',
      '  x: { type: ToPcap, file: /dev/null }', '  y: { type: ToPcap, file: /dev/null }', '  t1: { type: Tee }', '  t2: { type: Tee }',
      'connections:', '  - a -> t1 -> n1 -> x', '  - t1[1] -> [1]n1[1] -> x', '  - b -> t2 -> n2 -> y', '  - t2[1] -> [1]n2[1] -> y');
    buildGraph(await loadConfig(file, { text: shared }));
    assert.equal(await clash(lines('elements:', '  src: { type: FromPcap, file: nat.log }', '  nat: { type: NAT, pool: [203.0.113.1], log: nat.log }',
      '  t: { type: Tee }', '  d: { type: Discard }', 'connections:', '  - src -> t -> nat -> d', '  - t[1] -> [1]nat[1] -> d')), [`3:47 nat.log: src reads ${join(dir, 'nat.log')}, which this writes`]);
  } finally {
    removeDir(dir);
  }
});

test.run();
