// Agreement with libpcap: for every expression, the packets a Classifier matches on the compiled fast
// path are exactly those `tcpdump -r FILE EXPR` selects, on real captures (recorded in network
// namespaces by test/fixtures/captures/record.sh, whole and cut to 64 bytes) and on generated frames
// (IPv6, VLAN/QinQ, odd TCP flags, IPv4 options, fragments, ARP, truncated frames). Both ways of running
// the decision program are checked: as code made for the expression (what a pipeline runs) and
// interpreted (what `wirepath filter` runs). Packets are identified by their timestamps, unique in each
// capture. Click-only spellings are compared with their tcpdump equivalent. The expressions run in a
// few large pipelines, each expression with its own source per capture, so that there are few compiles.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { readPcap, tempDir, removeDir, runConfig, ROOT } from './helpers.ts';
import { writeGenerated } from './fixtures/captures/generated.ts';
import { compileRules, parseRules } from '../elements/classifier/decision.ts';
import { splitOnEthertype } from '../elements/classifier/vector.ts';

/** An expression, or [ours, tcpdump's spelling of the same filter]. */
const EXPRESSIONS: (string | [string, string])[] = [
  // protocols
  'ip', 'ip6', 'tcp', 'udp', 'icmp', 'icmp6', 'sctp', 'arp', 'rarp', 'ip proto 47', 'proto 17', 'ip6 proto 6', 'ip6 proto 58', 'proto 58',
  ['ip proto tcp', 'ip proto \\tcp'], 'ip proto 132', 'not ip', 'not ip and not arp', 'icmp or arp', 'udp or sctp',
  // a bare number after proto is another protocol (libpcap's elision), not Click's port
  'ip proto 6 or 17', 'proto 6 or 58', 'ip6 proto 17 or 58', 'ether proto 0x800 or 0x806', 'ip proto 6 or 17 and port 53',
  // hosts and nets
  'host 100.64.0.2', 'src host 100.64.0.2', 'dst host 198.18.0.2', 'host 198.18.0.1', 'ip host 100.64.0.1', 'arp host 100.64.0.1',
  'src or dst host 198.18.0.2', 'src and dst host 203.0.113.2', 'host 203.0.113.2', 'ip src 100.64.0.2', 'src 198.18.0.2', 'dst 100.64.0.1',
  'rarp host 203.0.113.1', 'arp src host 198.18.0.1', 'net 100.64.0.0/10', 'net 198.18.0.0/15', 'src net 100.64.0.0/24', 'dst net 198.18',
  'net 203.0.113', 'net 100', 'net 100.64.0.0 mask 255.192.0.0', 'src net 198.18.0.0 mask 255.255.255.0', 'dst net 198.19.0.0/16',
  'net 0.0.0.0/0', 'not net 100.64.0.0/10', ['100.64.0.0/10', 'net 100.64.0.0/10'], 'host 100.64.0.2 or host 203.0.113.3',
  'src host 100.64.0.2 or 198.18.0.2', 'dst net 198.18 or 203.0.113',
  // ports
  'port 80', 'port 8080', 'tcp port 8080', 'udp port 5353', 'src port 8080', 'dst port 5353', 'tcp dst port 80', 'udp src port 53',
  'port 53 or port 5353', 'portrange 5000-6000', 'tcp portrange 1-1023', 'udp dst portrange 5000-5400', 'src portrange 40000-65535',
  'sctp port 2905', 'port 0', 'port 65535', 'src and dst port 123', 'src or dst port 53', 'dst port 80 or 443', 'src port 80 or 81 or 8080',
  'tcp dst port 80 or 443 or 8080', 'not port 80', 'port 80 and not port 8080', ['port domain', 'port 53'],
  ['dst tcp port 80', 'tcp dst port 80'], ['src udp port 53', 'udp src port 53'], ['dst port > 1023', 'dst portrange 1024-65535'],
  ['src port < 1024', 'src portrange 0-1023'], ['tcp dst port >= 8080', 'tcp dst portrange 8080-65535'], ['udp port <= 53', 'udp portrange 0-53'],
  ['tcp port != 80', 'tcp and not tcp port 80'], ['port != 53', '(tcp or udp or sctp) and not port 53'], ['www', 'port 80'], ['5353', 'port 5353'],
  ['dst port > 1023 and dst port < 8081', 'dst portrange 1024-65535 and dst portrange 0-8080'],
  // TCP flags
  ['syn', 'tcp[tcpflags] & tcp-syn != 0'], ['tcp opt ack', 'tcp[13] & 16 != 0'], ['fin', 'tcp[13] & 1 != 0'], ['rst', 'tcp[13] & 4 != 0'],
  ['psh', 'tcp[13] & 8 != 0'], ['urg', 'tcp[13] & 32 != 0'], ['syn and not ack', 'tcp[13] & 2 != 0 and not tcp[13] & 16 != 0'],
  ['syn && ack', 'tcp[13] & 2 != 0 and tcp[13] & 16 != 0'], 'tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn',
  'tcp[tcpflags] & (tcp-syn|tcp-ack) == (tcp-syn|tcp-ack)', 'tcp[tcpflags] == 0', 'tcp[tcpflags] & tcp-fin != 0', 'tcp[tcpflags] & (tcp-fin|tcp-rst) != 0',
  'tcp[13] = 0x3f', 'tcp[tcpflags] & (tcp-ece|tcp-cwr) != 0', 'tcp[13] & 0x12 = 0x12', 'tcp[tcpflags] & tcp-push != 0 and tcp[tcpflags] & tcp-ack != 0',
  // byte expressions
  'ip[8] < 64', 'ip[8] = 1', 'ip[9] = 6', 'ip[0] & 0xf > 5', 'ip[0] & 0xf = 5', 'ip[2:2] > 100', 'ip[2:2] <= 60', 'ip[6:2] & 0x1fff != 0',
  'ip[6:2] & 0x2000 != 0', 'ip[12:4] = 0x64400002', 'ip[16:4] & 0xffffff00 = 0xc6120000', 'ip[1] & 0xfc != 0', 'tcp[0:2] = 80', 'tcp[2:2] > 1023',
  'tcp[12] & 0xf0 > 0x50', 'tcp[4:4] = 1000', 'udp[0:2] = 53', 'udp[2:2] = 5353', 'udp[4:2] > 100', 'udp[8] = 0x10', 'icmp[icmptype] == icmp-echo',
  'icmp[icmptype] == icmp-echoreply', 'icmp[0] != 8', 'icmp[icmpcode] = 0', 'icmp[4:2] = 0x4242', 'ether[0] & 1 != 0', 'ether[12:2] = 0x0800',
  'ether[12:2] = 0x8100', 'ip6[6] = 6', 'ip6[7] = 64', 'arp[7] = 1', 'arp[7] = 2', 'ip[0:4] & 0xf0000000 = 0x40000000', 'tcp[100] = 1',
  'udp[1000:2] = 0', 'ip[1500] = 0', 'ip[40:4] = 0', 'ip[65535] = 0', 'not ip[65522] = 2', 'vlan and ip[65518] = 2', 'tcp[14:2] >= 1024', '10 < ip[8]', 'sctp[0:2] = 2905', '100 < ip[2:2]', 'ip[2:2] > 0x10 | 0x20',
  ['ip ttl < 10', 'ip[8] < 10'], ['ip ttl = 64', 'ip[8] = 64'], ['ip tos 16', 'ip[1] = 16'], ['ip id 7', 'ip[4:2] = 7'], ['icmp type 8', 'icmp[0] = 8'],
  ['icmp type 0', 'icmp[icmptype] = 0'], ['ip frag', 'ip[6:2] & 0x3fff != 0'], ['ip unfrag', 'ip[6:2] & 0x3fff = 0'],
  // lengths
  'len > 100', 'len < 70', 'len = 64', 'len >= 1514', 'less 64', 'greater 1000', 'len <= 60', 'not less 100', 'len > 60 and len < 100',
  // VLAN
  'vlan', 'vlan 7', 'vlan 100', 'vlan 300', 'vlan and ip', 'vlan 7 and udp', 'vlan and tcp port 80', 'vlan 100 and vlan 100', 'vlan 20 and vlan 7 and udp',
  'vlan or ip', 'not vlan', 'vlan and host 203.0.113.2', 'ip or vlan', 'vlan and icmp', 'vlan 7 and src host 203.0.113.2', 'vlan and not ip',
  ['vlan and syn', 'vlan and tcp[13] & 2 != 0'], 'vlan and ip[9] = 6', 'vlan and vlan', 'tcp port 80 and vlan',
  // Ethernet addresses, broadcast and multicast
  'ether host 02:00:00:00:00:01', 'ether src 02:00:00:00:00:01', 'ether dst 02:00:00:00:00:02', 'ether dst ff:ff:ff:ff:ff:ff',
  'ether host 36:e2:be:b7:3a:1a or de:ea:47:9c:e6:97', 'ether src and dst 02:00:00:00:00:01', 'ether dst de-ea-47-9c-e6-97',
  'ether src 36e2.beb7.3a1a', 'ether src 2:0:0:0:0:1 and tcp', 'vlan and ether src 02:00:00:00:00:01', 'ether broadcast', 'broadcast',
  'multicast', 'ether multicast', 'not ether broadcast and arp',
  // IPv6 addresses
  'host 2001:db8::1', 'ip6 host 2001:db8::2', 'src host 2001:db8::1', 'dst 2001:db8::2', 'net 2001:db8::/32', 'ip6 net 2001:db8::/64',
  'src net 2001:db9::/32', 'host 2001:db8:0:0:0:0:0:1', 'net ::/0', 'ip6 src 2001:db8::1 and tcp', 'host 2001:db8::1 or 2001:db8::2',
  'not host 2001:db8::1', 'dst net 2001:db8::/127 and udp', 'host 2001:db8::1 or host 100.64.0.2',
  // EtherTypes, backslashed names, octal numbers, ICMPv6 bytes
  'ether proto \\arp', 'ether proto 0x86dd', 'ether proto \\ip and tcp', 'vlan and ether proto \\ip', 'ip proto \\sctp', 'proto \\icmp',
  'port 053', 'ip[9] = 021', 'udp port 012351', 'ip[8] = 0X40', 'udp dst port 0X35', 'icmp6[0] = 128', 'icmp6[icmp6type] = icmp6-echo', 'icmp6[icmp6type] != icmp6-echo', 'ip broadcast', 'ip multicast', 'ip6 multicast', 'ip multicast or ip6 multicast',
  // combinations, precedence, elision, short captures
  'tcp and port 80', 'tcp or udp', 'not tcp', '!tcp', 'tcp && port 80', 'tcp || icmp', '(tcp or udp) and port 53', 'tcp or udp and port 53',
  'not (tcp or udp)', 'not tcp and not udp', 'host 100.64.0.2 and (port 8080 or icmp)', 'src host 100.64.0.2 and dst port 8080 and tcp[tcpflags] & tcp-syn != 0',
  'ip and not tcp and not udp', 'ip6 and tcp', 'ip6 and udp port 53', 'ip6 or arp', 'tcp and ip6', 'ip6 and port 80', 'ip6 and not tcp',
  'udp and ip[6:2] & 0x1fff != 0', 'udp port 5353 and ip[6:2] & 0x2000 != 0', 'icmp and ip[6:2] & 0x3fff != 0', 'len > 1000 and ip[6:2] & 0x3fff != 0',
  'tcp and len < 60', 'dst net 198.18.0.0/15 and dst port 80', 'dst net 198.18 and dst port 8080', 'src net 100.64.0.0/10 and (tcp[13] & 3 != 0)',
  'arp or (tcp and tcp[13] & 2 != 0)', 'not tcp[13] & 2 != 0', 'tcp[13] & 2 != 0 or udp', 'udp or tcp[13] & 2 != 0', 'not udp[8:2] = 0',
  'icmp[8] = 0 or arp', 'ip[6:2] & 0x1fff != 0 or tcp[13] = 2', 'not (host 100.64.0.2 and port 8080)', 'port 8080 and (tcp[13] & 1 != 0 or tcp[13] & 4 != 0)',
  'tcp[2:2] = 80 or udp[2:2] = 53', 'ip and ip6', 'not not tcp', '((tcp))', 'ip[9] = 17 and udp[2:2] = 5353 and len > 80',
  ['-', 'len >= 0'], ['true', 'len >= 0'], ['false', 'len < 0'], ['tcp or false', 'tcp'], ['not -', 'len < 0'],
  // one field equal to many values (a hash lookup in the bit vector)
  'port 53 or port 80 or port 443 or port 5353 or port 8080', 'tcp dst port 22 or 80 or 443 or 8080 or 8443', 'not (udp port 53 or 123 or 5353 or 443)',
  'ip proto 1 or ip proto 6 or ip proto 17 or ip proto 47', 'ip[8] = 1 or ip[8] = 64 or ip[8] = 63 or ip[8] = 128 or ip[8] = 255',
  // reads past the capture end the evaluation where they come
  'tcp[100] = 1 or ip[8] = 64', 'not (ip[1500] = 0 and ip)', 'udp and tcp[100] = 1', 'tcp[100] = 1 or ip[9] = 6', 'not (tcp[100] = 1 and ip[9] = 17)',
  'tcp[100] = 1 or ether[12:2] = 0x800', 'ip[9] = 6 and (tcp[100] = 1 or ip[9] > 5)',
  // long lists in one expression (a lookup of each field they test), with the captures' own addresses and ports among them
  listOf(150, (i) => `host 198.19.${i >> 8}.${i & 255}`, { 40: 'host 100.64.0.2', 120: 'host 203.0.113.2' }),
  listOf(120, (i) => `net 10.${i}.0.0/16`, { 7: 'net 198.18.0.0/16', 90: 'net 100.64.0.0/16' }),
  listOf(120, (i) => `port ${20000 + i}`, { 3: 'port 8080', 100: 'port 5353' }),
  `not (${listOf(100, (i) => `src host 198.19.0.${i}`, { 50: 'src host 100.64.0.2' })}) and ip`,
  `tcp and (${listOf(100, (i) => `dst host 198.19.1.${i}`, { 10: 'dst host 198.18.0.2' })})`,
  // short lists, on frames cut after the source: each field's items are tested together, as libpcap's optimizer groups them
  'host 198.19.9.9 or host 100.64.0.1', 'port 9999 or port 40000', 'src host 198.19.9.9 or dst host 198.19.9.8 or src host 100.64.0.1',
  // a list with an item of several tests: the items after it are not evaluated before it
  listOf(40, (i) => `host 198.19.2.${i}`, { 20: 'tcp[100] = 1', 30: 'host 100.64.0.2', 35: 'host 198.18.0.2' }),
];

/** `count` terms joined with or; `replace` puts other terms at some positions. */
function listOf(count: number, term: (i: number) => string, replace: Record<number, string>): string {
  return Array.from({ length: count }, (_, i) => replace[i] ?? term(i)).join(' or ');
}
/** A test title's spelling of an expression: long lists are cut. */
const titled = (expression: string) => (expression.length > 90 ? `${expression.slice(0, 80)}... (${expression.length} chars)` : expression);

/** Patterns for one Classifier: overlapping, so that the order decides (first match wins). */
const MANY_PATTERNS = ['tcp dst port 80 or 443', 'udp dst port 53', 'udp dst port 123 and src net 100.64.0.0/12', 'tcp[tcpflags] & tcp-syn != 0',
  'dst net 203.0.113.0/24 and udp', 'tcp dst port 8080 or 8443', 'arp', 'icmp[icmptype] == icmp-echo', 'ip6',
  'port 5353 or port 8080 or port 443 or port 22 or port 80', 'len > 1000', 'ip[8] < 65 and not icmp', 'vlan and ip', 'not ip and not ip6'];

const generated = tempDir('wirepath-classifier-');
writeGenerated(join(generated, 'generated.pcap'));
const CAPTURES = {
  real: join(ROOT, 'test/fixtures/captures/real.pcap'),
  snap64: join(ROOT, 'test/fixtures/captures/real-snap64.pcap'),
  generated: join(generated, 'generated.pcap'),
};
const timeKey = (r: { sec: number; frac: number }) => `${r.sec}.${r.frac}`;
const numbers = Object.fromEntries(Object.entries(CAPTURES).map(([name, file]) => {
  const map = new Map(readPcap(file).records.map((r, i) => [timeKey(r), i + 1]));
  return [name, map];
}));

/** Packet numbers (from 1) of the records of `file`, by their timestamps in the capture they came from. */
function numbersOf(capture: keyof typeof CAPTURES, file: string): number[] {
  return readPcap(file).records.map((r) => numbers[capture].get(timeKey(r))!);
}

function tcpdumpMatches(capture: keyof typeof CAPTURES, expression: string, dir: string): number[] {
  const out = join(dir, `tcpdump-${capture}.pcap`);
  const r = spawnSync('tcpdump', ['-r', CAPTURES[capture], '-w', out, expression], { encoding: 'utf8' });
  // libpcap refuses a filter its optimizer proves empty.
  if (r.status !== 0 && r.stderr.includes('expression rejects all packets')) return [];
  if (r.status !== 0) throw new Error(`tcpdump '${expression}': ${r.stderr}`);
  return numbersOf(capture, out);
}

type Matches = Record<keyof typeof CAPTURES, number[]>;
/** Expressions per pipeline: each compile covers this many. */
const CHUNK = 60;

/** Per expression, the packet numbers a Classifier of it matches in each capture. */
async function classifierMatches(expressions: string[], dir: string, specialize: boolean): Promise<Matches[]> {
  const names = Object.keys(CAPTURES) as (keyof typeof CAPTURES)[];
  const results: Matches[] = [];
  for (let start = 0; start < expressions.length; start += CHUNK) {
    const chunk = expressions.slice(start, start + CHUNK);
    const yaml = ['elements:',
      ...chunk.flatMap((expression, i) => names.flatMap((n) => [
        `  src_${i}_${n}: { type: FromPcap, file: ${JSON.stringify(CAPTURES[n])} }`,
        `  cl_${i}_${n}: { type: Classifier, patterns: [${JSON.stringify(expression)}] }`,
        `  out_${i}_${n}: { type: ToPcap, file: ours-${i}-${n}.pcap }`])),
      'connections:', ...chunk.flatMap((_, i) => names.map((n) => `  - src_${i}_${n} -> cl_${i}_${n} -> out_${i}_${n}`))].join('\n');
    await runConfig(dir, yaml, { threads: 'inline', specialize });
    results.push(...chunk.map((_, i) => Object.fromEntries(names.map((n) => [n, numbersOf(n, join(dir, `ours-${i}-${n}.pcap`))])) as Matches));
  }
  return results;
}

const ours = EXPRESSIONS.map((e) => (typeof e === 'string' ? e : e[0]));
const runs: Record<'code' | 'interpreted', Matches[]> = { code: [], interpreted: [] };
const workDir = tempDir();

test.before(async () => {
  runs.code = await classifierMatches(ours, workDir, true);
  runs.interpreted = await classifierMatches(ours, workDir, false);
});

test.after(() => {
  removeDir(workDir);
  removeDir(generated);
});

test('the captures have unique timestamps (packets are identified by them)', () => {
  for (const [name, file] of Object.entries(CAPTURES)) assert.is(numbers[name].size, readPcap(file).records.length, name);
});

let checked = 0;
EXPRESSIONS.forEach((entry, index) => {
  const [mine, theirs] = typeof entry === 'string' ? [entry, entry] : entry;
  test(`'${titled(mine)}' matches what tcpdump '${titled(theirs)}' matches`, () => {
    for (const capture of Object.keys(CAPTURES) as (keyof typeof CAPTURES)[]) {
      const expected = tcpdumpMatches(capture, theirs, workDir);
      assert.equal(runs.code[index][capture], expected, `${capture}: packet numbers, as code`);
      assert.equal(runs.interpreted[index][capture], expected, `${capture}: packet numbers, interpreted`);
    }
    checked++;
  });
});

/** Per capture, per pattern, the packet numbers a Classifier of `patterns` sends to that pattern's output. */
async function classifierOutputs(patterns: string[], name: string, specialize: boolean): Promise<number[][][]> {
  const names = Object.keys(CAPTURES) as (keyof typeof CAPTURES)[];
  const file = (n: string, k: number) => `${name}-${specialize}-${n}-${k}.pcap`;
  const yaml = ['elements:', ...names.flatMap((n) => [
    `  src_${n}: { type: FromPcap, file: ${JSON.stringify(CAPTURES[n])} }`,
    `  cl_${n}: { type: Classifier, patterns: ${JSON.stringify(patterns)} }`,
    ...patterns.map((_, k) => `  out_${n}_${k}: { type: ToPcap, file: ${file(n, k)} }`)]),
  'connections:', ...names.flatMap((n) => [`  - src_${n} -> cl_${n}`, ...patterns.map((_, k) => `  - cl_${n}[${k}] -> out_${n}_${k}`)])].join('\n');
  const result = await runConfig(workDir, yaml, { threads: 'inline', specialize });
  const outputs = names.map((n) => patterns.map((_, k) => numbersOf(n, join(workDir, file(n, k)))));
  // What no pattern matched is counted: every packet is either sent out or counted.
  names.forEach((n, i) => {
    const sent = outputs[i].reduce((sum, o) => sum + o.length, 0);
    assert.is(Number(result.elements[`cl_${n}`].unmatched) + sent, readPcap(CAPTURES[n]).records.length, `${n}: unmatched + sent`);
  });
  return outputs;
}

test('a Classifier of many overlapping patterns sends each packet where the decision DAG sends it (first match wins)', async () => {
  // As code these patterns run as a bit vector; interpreted, as the DAG that the tests above hold to tcpdump.
  const { vector } = compileRules(parseRules(MANY_PATTERNS)).compiled;
  assert.ok(vector && splitOnEthertype(vector), 'the patterns fit a bit vector, split on the ethertype');
  const code = await classifierOutputs(MANY_PATTERNS, 'many', true);
  assert.equal(code, await classifierOutputs(MANY_PATTERNS, 'many', false));
  // Every pattern but the last gets packets, so the order is really tested.
  assert.ok(MANY_PATTERNS.slice(0, -1).every((_, k) => code.some((capture) => capture[k].length > 0)), JSON.stringify(code.map((c) => c.map((o) => o.length))));
});

test('patterns too many for a bit vector run as the DAG\'s code, and send each packet where the interpreted DAG sends it', async () => {
  const patterns = [...Array.from({ length: 8 }, (_, i) => `udp port ${5350 + i} or tcp port ${8080 + i}`), ...MANY_PATTERNS];
  const { compiled } = compileRules(parseRules(patterns));
  assert.not.ok(compiled.vector, 'more than 64 terms');
  assert.ok(compiled.nodes.length <= 256, 'small enough to run as code');
  assert.equal(await classifierOutputs(patterns, 'dag', true), await classifierOutputs(patterns, 'dag', false));
});

test('a list of 5000 hosts in one pattern compiles to a lookup of each address field, not a chain of 10000 tests; three lists of 2000, to lookups of them all', () => {
  const list = (n: number, net: number) => listOf(n, (i) => `host 198.${net}.${i >> 8}.${i & 255}`, {});
  const { compiled } = compileRules(parseRules([list(5000, 19)]));
  const lookups = compiled.nodes.filter((n) => n.kind === 'lookup');
  // IPv4 source and destination, ARP and RARP sender and target: lookups of all 5000 addresses each.
  assert.ok(compiled.nodes.length < 12, `${compiled.nodes.length} nodes`);
  assert.equal(lookups.map((n) => n.kind === 'lookup' && n.entries.size), [5000, 5000, 5000, 5000]);
  assert.is(compiled.mode, 'shared');
  // Each list's values lead to its pattern, or to an earlier list's by the other address.
  const three = compileRules(parseRules([list(2000, 19), list(2000, 20), list(2000, 21)])).compiled;
  assert.is(three.mode, 'shared');
  assert.ok(three.nodes.length < 20, `${three.nodes.length} nodes`);
});

test('a negated list of 2000 hosts compiles to lookups too, in about the time the list takes (it took 20 s, and failed at 2000)', () => {
  const list = listOf(2000, (i) => `host 198.19.${i >> 8}.${i & 255}`, {});
  const started = performance.now();
  const { compiled } = compileRules(parseRules([`not (${list})`]));
  assert.ok(compiled.nodes.length < 12, `${compiled.nodes.length} nodes`);
  assert.equal(compiled.nodes.filter((n) => n.kind === 'lookup').map((n) => n.kind === 'lookup' && n.entries.size), [2000, 2000, 2000, 2000]);
  assert.ok(performance.now() - started < 10_000, `${Math.round(performance.now() - started)} ms`);
});

test('patterns that are lists send each packet to the first list holding its source or destination, as tcpdump matches each list', async () => {
  // A list that tests the destination first reads it first, also where an earlier list made a lookup of the source.
  const destinationFirst = [listOf(16, (i) => `host 198.19.5.${i}`, {}), 'dst host 198.19.7.7 or src host 100.64.0.1'];
  const firstMatch = async (patterns: string[], name: string) => {
    const outputs = await classifierOutputs(patterns, name, true);
    (Object.keys(CAPTURES) as (keyof typeof CAPTURES)[]).forEach((capture, c) => {
      const taken = new Set<number>();
      const expected = patterns.map((p) => tcpdumpMatches(capture, p, workDir).filter((n) => !taken.has(n) && taken.add(n)));
      assert.equal(outputs[c], expected, `${name}, ${capture}`);
    });
    return outputs;
  };
  await firstMatch(destinationFirst, 'destination-first');
  // Overlapping lists of the captures' own addresses among others: the order decides.
  const patterns = [listOf(20, (i) => `host 198.19.3.${i}`, { 5: 'host 100.64.0.1' }), listOf(20, (i) => `host 198.19.4.${i}`, { 7: 'host 198.18.0.1', 9: 'host 100.64.0.2' }),
    listOf(20, (i) => `net 10.${i}.0.0/16`, { 3: 'net 203.0.113.0/24', 11: 'net 198.18.0.0/16' })];
  const outputs = await firstMatch(patterns, 'lists');
  // A negated list matches what the list does not; before a list, it leaves that list what it holds; after one, what that one left.
  await firstMatch([`not (${patterns[0]})`, patterns[1]], 'negated');
  await firstMatch([patterns[1], `not (${patterns[0]})`], 'list then negated');
  assert.ok(patterns.every((_, k) => outputs.some((capture) => capture[k].length > 0)), JSON.stringify(outputs.map((c) => c.map((o) => o.length))));
});

test(`${EXPRESSIONS.length} expressions were checked on ${Object.keys(CAPTURES).length} captures`, () => {
  assert.ok(EXPRESSIONS.length >= 150);
  assert.is(checked, EXPRESSIONS.length);
});

test.run();
