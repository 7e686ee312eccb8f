// LoadBalancer and BeamerBackend on captures: the encapsulation as tshark dissects it, VIP matching,
// fragments, ICMP errors, malformed packets, the control handlers, and daisy chaining on the trace's
// virtual clock (the mux's table changes between paced packets).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { tempDir, removeDir, runConfig, writePcap, readPcap, ipv4Frame, tshark, internetChecksum, type FrameSpec } from './helpers.ts';
import { loadConfig } from '../engine/config.ts';
import { Pipeline, type PipelineOptions } from '../engine/pipeline.ts';
import { LiveTable } from '../elements/load-balancer/table.ts';

const T0 = 1_700_000_000;
const VIP = '198.18.100.1';
const BACKENDS = ['web1 198.18.1.11', 'web2 198.18.1.12', 'web3 198.18.1.13 2'];
const ADDRESS: Record<string, string> = { web1: '198.18.1.11', web2: '198.18.1.12', web3: '198.18.1.13' };
const SYN = 0x02, ACK = 0x10, PSH_ACK = 0x18;

const lb = (extra = '') => `{ type: LoadBalancer, vips: ['${VIP} tcp 80', '${VIP} udp any'], source: 198.18.0.0/24, backends: ${JSON.stringify(BACKENDS)}${extra} }`;

const muxConfig = (other: boolean) => `
batch: 1
elements:
  src: { type: FromPcap, file: in.pcap }
  lb:  ${lb()}
  out: { type: ToPcap, file: out.pcap }
${other ? '  rest: { type: ToPcap, file: other.pcap }\n' : ''}connections:
  - src -> lb -> out
${other ? '  - lb[1] -> rest\n' : ''}`;

const client = (spec: FrameSpec): FrameSpec => ({ src: '100.64.0.2', dst: VIP, sport: 40000, dport: 80, ...spec });
const ip = (b: Buffer, at: number) => [...b.subarray(at, at + 4)].join('.');

/** The outer header of an encapsulated frame (untagged Ethernet), and its inner packet. */
function outer(frame: Buffer) {
  const hl = (frame[14] & 15) * 4;
  return {
    protocol: frame[23], hl, src: ip(frame, 26), dst: ip(frame, 30),
    option: { type: frame[34], length: frame[35], flags: frame[36], previous: ip(frame, 38), generation: frame.readUInt32BE(42), ageMs: frame.readUInt32BE(46) },
    inner: frame.subarray(14 + hl),
  };
}

async function runMux(frames: Parameters<typeof writePcap>[1], other = true, options: PipelineOptions = { threads: 'inline' }) {
  const dir = tempDir();
  try {
    writePcap(join(dir, 'in.pcap'), frames);
    const result = await runConfig(dir, muxConfig(other), options);
    const out = readPcap(join(dir, 'out.pcap')).records.map((r) => r.data);
    const rest = other ? readPcap(join(dir, 'other.pcap')).records.map((r) => r.data) : [];
    const fields = tshark(join(dir, 'out.pcap'), ['ip.checksum.status', 'ip.proto', 'ip.len', 'tcp.checksum.status', 'udp.checksum.status']);
    return { out, rest, fields, lb: result.elements.lb as Record<string, any> };
  } finally {
    removeDir(dir);
  }
}

test('packets to a VIP leave encapsulated: outer IPv4 with the option, valid checksums (tshark), the inner packet unchanged', async () => {
  const frames = [client({ tcpFlags: SYN }), client({}), client({ sport: 40001 }), client({ proto: 'udp', dport: 5353 })].map(ipv4Frame);
  const { out, fields, lb } = await runMux(frames);
  assert.is(out.length, 4);
  out.forEach((frame, i) => {
    const o = outer(frame);
    assert.is(o.protocol, 4);
    assert.is(o.hl, 36);
    assert.ok(o.src.startsWith('198.18.0.'), o.src);
    assert.ok(Object.values(ADDRESS).includes(o.dst), o.dst);
    assert.equal({ ...o.option, ageMs: 0 }, { type: 158, length: 16, flags: 0, previous: '0.0.0.0', generation: 0, ageMs: 0 });
    assert.is(o.option.ageMs, 0xffffffff, 'no previous backend: the oldest age');
    assert.ok(o.inner.equals(frames[i].subarray(14)), `frame ${i}: inner packet changed`);
    assert.ok(frame.subarray(0, 14).equals(frames[i].subarray(0, 14)), 'Ethernet header kept');
    // tshark: outer IP checksum good (status 1 = good), protocol 4 and the inner header dissected behind it.
    assert.is(fields[i][0].split(',')[0], '1');
    assert.is(fields[i][1].split(',')[0], '4');
  });
  assert.is(outer(out[0]).dst, outer(out[1]).dst, 'one connection, one backend');
  assert.is(outer(out[0]).src, outer(out[1]).src, 'one connection, one outer source');
  assert.is(lb.encapsulated, 4);
  assert.equal(lb.vips.map((v: any) => v.packets), [3, 1]);
  assert.is(lb.backends.reduce((s: number, b: any) => s + b.packets, 0), 4);
});

test('connections spread by weight: 6000 source ports, web3 (weight 2) gets about half', async () => {
  const frames = Array.from({ length: 6000 }, (_, i) => ipv4Frame(client({ src: `100.64.${i % 200}.${1 + (i % 250)}`, sport: 10000 + i })));
  const { out, lb } = await runMux(frames);
  const counts: Record<string, number> = {};
  for (const frame of out) counts[outer(frame).dst] = (counts[outer(frame).dst] ?? 0) + 1;
  const share = (name: string) => counts[ADDRESS[name]] / out.length;
  assert.ok(Math.abs(share('web3') - 0.5) < 0.03, `web3 ${share('web3')}`);
  assert.ok(Math.abs(share('web1') - 0.25) < 0.03, `web1 ${share('web1')}`);
  assert.equal(lb.backends.map((b: any) => b.buckets), [16384, 16384, 32769]);
  // Outer sources spread too: the flow hash picks the host part of 198.18.0.0/24, never its network or broadcast address
  // (6000 flows gave each of them about 23 times).
  const sources = new Set(out.map((f) => outer(f).src));
  assert.ok(sources.size > 200);
  assert.not.ok(sources.has('198.18.0.0') || sources.has('198.18.0.255'), 'a martian source');
});

test('no per-flow state: two shards send every packet where one does', async () => {
  const frames = Array.from({ length: 3000 }, (_, i) => ipv4Frame(client({ src: `100.64.7.${i % 250}`, sport: 20000 + i })));
  const one = await runMux(frames);
  const two = await runMux(frames, true, { shards: 2 });
  const sorted = (out: Buffer[]) => out.map((f) => f.toString('hex')).sort();
  assert.is(two.out.length, frames.length);
  assert.equal(sorted(two.out), sorted(one.out));
  assert.is(two.lb.backends.reduce((s: number, b: any) => s + b.packets, 0), frames.length, 'both shards count');
});

test('not for a VIP: other address, other port, other protocol, ICMP echo, ARP leave on output 1 unchanged; unconnected, dropped and counted', async () => {
  const arp = Buffer.concat([Buffer.from('ffffffffffff020000000001', 'hex'), Buffer.from([0x08, 0x06]), Buffer.alloc(28)]);
  const frames = [ipv4Frame(client({ dst: '198.18.100.2' })), ipv4Frame(client({ dport: 81 })), ipv4Frame(client({ proto: 47 })), ipv4Frame(client({ proto: 'icmp' })), arp];
  const { out, rest, lb } = await runMux(frames);
  assert.is(out.length, 0);
  assert.is(rest.length, frames.length);
  rest.forEach((f, i) => assert.ok(f.equals(frames[i])));
  assert.is(lb.other, 5);
  const dropped = await runMux(frames, false);
  assert.is(dropped.lb.other, 5);
  assert.is(dropped.lb.unconnected_drops, 5);
});

test('fragments: all fragments of a datagram go to one backend, hashed by the source address (counted)', async () => {
  // Different source ports land on different backends; fragments of any of them follow the address alone.
  const sources = ['100.64.1.1', '100.64.1.2', '100.64.1.3', '100.64.1.4'];
  const frames = sources.flatMap((src) => [
    ipv4Frame(client({ src, proto: 'udp', dport: 4000, moreFragments: true, payload: 64 })),
    ipv4Frame(client({ src, proto: 'udp', fragOffset: 9, payload: 40 })),
    ipv4Frame(client({ src, fragOffset: 20, payload: 40 })),
  ]);
  const { out, lb } = await runMux(frames);
  assert.is(out.length, frames.length);
  assert.is(lb.fragments, frames.length);
  for (let i = 0; i < out.length; i += 3) {
    assert.is(outer(out[i]).dst, outer(out[i + 1]).dst);
    assert.is(outer(out[i]).dst, outer(out[i + 2]).dst);
    assert.is(outer(out[i]).option.flags, 0);
  }
});

test('the outer header copies DF; a fragmentable one has an identification as unique as the inner (RFC 6864)', async () => {
  const frames = [client({ id: 1 }), client({ id: 2 }), client({ id: 3 }), client({ sport: 40001, id: 1 }), client({ dontFragment: true })].map(ipv4Frame);
  const { out } = await runMux(frames);
  assert.equal(out.map((f) => f.readUInt16BE(20)), [0, 0, 0, 0, 0x4000]);
  const ids = out.map((f) => f.readUInt16BE(18));
  assert.is(new Set(ids.slice(0, 4)).size, 4, `identifications ${ids}`);
  assert.is(ids[4], 0, 'atomic');
});

/** An ICMP error from a router to the VIP, quoting the first bytes of a packet VIP:80 -> client:port. */
function icmpError(port: number, type = 3, code = 4, dst = VIP): Buffer {
  const quoted = ipv4Frame({ src: VIP, dst: '100.64.0.2', sport: 80, dport: port, payload: 0 }).subarray(14, 14 + 28);
  const icmp = Buffer.concat([Buffer.from([type, code, 0, 0, 0, 0, 0x05, 0xdc]), quoted]);
  icmp.writeUInt16BE(internetChecksum(icmp), 2);
  const frame = ipv4Frame({ src: '100.64.0.254', dst, proto: 'icmp', payload: 0 });
  const header = Buffer.from(frame.subarray(0, 34));
  header.writeUInt16BE(20 + icmp.length, 16);
  header.writeUInt16BE(0, 24);
  header.writeUInt16BE(internetChecksum(header.subarray(14, 34)), 24);
  return Buffer.concat([header, icmp]);
}

test('ICMP errors about a VIP connection go to the backend of the connection they quote', async () => {
  const ports = Array.from({ length: 30 }, (_, i) => 41000 + i * 7);
  const frames = ports.flatMap((port) => [ipv4Frame(client({ sport: port })), icmpError(port), icmpError(port, 11, 0)]);
  const { out, lb } = await runMux(frames);
  assert.is(out.length, frames.length);
  assert.is(lb.icmp_errors, 60);
  assert.ok(new Set(out.map((f) => outer(f).dst)).size > 1, 'the connections use several backends');
  for (let i = 0; i < out.length; i += 3) {
    assert.is(outer(out[i + 1]).dst, outer(out[i]).dst, `port ${ports[i / 3]}: unreachable`);
    assert.is(outer(out[i + 2]).dst, outer(out[i]).dst, `port ${ports[i / 3]}: time exceeded`);
    assert.ok(out[i + 1].subarray(50).equals(frames[i + 1].subarray(14)));
  }
});

test('an ICMP error quoting a VIP connection but sent to another address is not for the VIP', async () => {
  const { out, rest, lb } = await runMux([icmpError(41000, 3, 4, '100.64.0.9')]);
  assert.is(out.length, 0);
  assert.is(rest.length, 1);
  assert.is(lb.icmp_errors, 0);
});

test('an ICMP error quoting a packet of protocol 0 from the VIP is not about a VIP connection (it matched any VIP\'s protocol)', async () => {
  const error = icmpError(41000);
  error[14 + 20 + 8 + 9] = 0; // the quoted header's protocol
  error.writeUInt16BE(0, 14 + 20 + 2);
  error.writeUInt16BE(internetChecksum(error.subarray(14 + 20)), 14 + 20 + 2);
  const { out, rest, lb } = await runMux([error]);
  assert.is(out.length, 0);
  assert.is(rest.length, 1);
  assert.is(lb.icmp_errors, 0);
});

/** The frame's first `l4` bytes after its IPv4 header, its total length (and fragment offset field) and checksum saying so. */
function cutAfterHeader(frame: Buffer, l4: number, fragmentField = 0): Buffer {
  const cut = Buffer.from(frame.subarray(0, 14 + 20 + l4));
  cut.writeUInt16BE(20 + l4, 16);
  cut.writeUInt16BE(fragmentField, 20);
  cut.writeUInt16BE(0, 24);
  cut.writeUInt16BE(internetChecksum(cut.subarray(14, 34)), 24);
  return cut;
}

test('malformed: a TCP or ICMP header cut short, an ICMP error with a truncated quote, to a VIP: counted and dropped, never read past', async () => {
  const frames = [cutAfterHeader(ipv4Frame(client({ payload: 0 })), 10), cutAfterHeader(icmpError(40000), 8 + 12), cutAfterHeader(icmpError(40000), 4)];
  // An ICMP packet cut short to another address is not for the load balancer.
  const elsewhere = cutAfterHeader(ipv4Frame({ proto: 'icmp', src: '100.64.0.2', dst: '198.18.0.77' }), 4);
  const { out, rest, lb } = await runMux([...frames, elsewhere, ipv4Frame(client({}))]);
  assert.is(lb.malformed, frames.length);
  assert.is(out.length, 1);
  assert.is(rest.length, 1);
});

test('a VIP packet whose IPv4 header is bad (IHL 4, IHL 15 on a short frame, total length past the frame or 10) is malformed; to another address, or cut by a capture, other', async () => {
  const bad = (edit: (f: Buffer) => void, spec: FrameSpec = {}) => {
    const f = Buffer.from(ipv4Frame(client({ payload: 0, ...spec })));
    edit(f);
    return f;
  };
  const frames = [
    bad((f) => { f[14] = 0x44; }),
    bad((f) => { f[14] = 0x4f; }),
    bad((f) => f.writeUInt16BE(f.length, 16)),
    bad((f) => f.writeUInt16BE(10, 16)),
    bad((f) => { f[14] = 0x44; }, { dst: '198.18.100.9' }),
  ];
  const whole = ipv4Frame(client({ payload: 200 }));
  const cut = { data: whole.subarray(0, 60), origlen: whole.length };
  const { out, rest, lb } = await runMux([...frames, cut]);
  assert.equal({ malformed: lb.malformed, other: lb.other, out: out.length, rest: rest.length }, { malformed: 4, other: 2, out: 0, rest: 2 });
  assert.ok(rest[0].equals(frames[4]));
  assert.ok(rest[1].equals(cut.data));
});

// --- control ------------------------------------------------------------------------------------

async function livePipeline(dir: string, yaml: string) {
  const file = join(dir, 'config.yaml');
  writeFileSync(file, yaml);
  return Pipeline.create(await loadConfig(file), { threads: 'inline' });
}

/** The config errors (formatted: position, message, hint) of an lb with these parameters after its VIPs and source. */
async function lbErrors(params: string, vips = "['198.18.100.1 tcp 80']", source = '198.18.0.0/24'): Promise<string[]> {
  const text = `elements:\n  src: { type: FromPcap, file: in.pcap }\n  lb: { type: LoadBalancer, vips: ${vips}, source: ${source}, ${params} }\n`
    + '  out: { type: Discard }\nconnections:\n  - src -> lb -> out\n';
  const e = await loadConfig('lb.yaml', { text }).then(() => undefined, (x) => x);
  return (e?.errors ?? []).map((x: { format(): string }) => x.format());
}

test('an outer source prefix with no host\'s addresses, or with a VIP\'s or a backend\'s, and a VIP that no client sends to (no host\'s address, port 0): config errors', async () => {
  const one = "backends: ['web1 198.18.1.11']";
  // Before: all accepted, and outer packets came from multicast, loopback, or the backend's own address.
  assert.equal(await lbErrors(one, undefined, '0.0.0.0/0'), [
    'lb.yaml:3:68: lb.source: 0.0.0.0/0 holds "this network" addresses, which no packet may come from\n  hint: a unicast prefix of the mux\'s own, e.g. 198.18.0.0/24',
    'lb.yaml:3:68: lb.source: 0.0.0.0/0 holds the address of VIP 198.18.100.1: outer packets would come from it\n  hint: a prefix apart from the VIPs and the backends',
  ]);
  assert.equal(await lbErrors(one, undefined, '224.0.0.0/8'), [
    "lb.yaml:3:68: lb.source: 224.0.0.0/8 holds multicast addresses, which no packet may come from\n  hint: a unicast prefix of the mux's own, e.g. 198.18.0.0/24",
  ]);
  assert.equal(await lbErrors(one, undefined, '198.18.1.0/24'), [
    'lb.yaml:3:68: lb.source: 198.18.1.0/24 holds the address of backend web1: outer packets would come from it\n  hint: a prefix apart from the VIPs and the backends',
  ]);
  assert.equal(await lbErrors(one, "['0.0.0.0 tcp 80', '224.0.0.1 udp any', '198.18.100.1 tcp 0']"), [
    "lb.yaml:3:36: lb.vips: VIP 0.0.0.0 is a \"this network\" address, which no client sends to\n  hint: give the unicast address clients reach the service at",
    "lb.yaml:3:54: lb.vips: VIP 224.0.0.1 is a multicast address, which no client sends to\n  hint: give the unicast address clients reach the service at",
    "lb.yaml:3:75: lb.vips: VIP 198.18.100.1: port 0 is no service's\n  hint: give the service's port, or any for all of them",
  ]);
});

test('a config\'s backends: every malformed item is reported at once, each at its item; a repeated name with a hint', async () => {
  const errors = (backends: string) => lbErrors(`backends: ${backends}`);
  // Before, one mistake a run: the first item's, then the next once that was fixed.
  assert.equal(await errors("[x, 'web1 198.18.1.11', 'web3 198.18.1.13 1.5']"), [
    "lb.yaml:3:94: lb.backends: \"x\" is not NAME ADDRESS [WEIGHT]\n  hint: write e.g. 'web1 198.18.1.11 2' (a name of up to 31 letters, digits, '_', '.', '-'; weight 1 by default)",
    "lb.yaml:3:117: lb.backends: \"web3 198.18.1.13 1.5\" is not NAME ADDRESS [WEIGHT]\n  hint: write e.g. 'web1 198.18.1.11 2' (a name of up to 31 letters, digits, '_', '.', '-'; weight 1 by default)",
  ]);
  assert.equal(await errors("['web1 198.18.1.11', 'web1 198.18.1.12']"), [
    'lb.yaml:3:114: lb.backends: backend web1 (198.18.1.12) repeats the name of web1\n  hint: give each backend a name and an address of its own',
  ]);
});

test('one backend is a list of one, written alone or with --set (it was "not a non-empty list")', async () => {
  assert.equal(await lbErrors("backends: 'web1 198.18.1.11'"), []);
  const text = "elements:\n  src: { type: FromPcap, file: in.pcap }\n  lb: { type: LoadBalancer, vips: '198.18.100.1 tcp 80', source: 198.18.0.0/24, backends: ['web1 198.18.1.11', 'web2 198.18.1.12'] }\n"
    + '  out: { type: Discard }\nconnections:\n  - src -> lb -> out\n';
  const config = await loadConfig('lb.yaml', { text, overrides: ['lb.backends=web3 198.18.1.13 2'] });
  assert.equal(config.elements.get('lb')!.params.backends, [{ name: 'web3', address: 0xc612010d, weight: 2 }]);
});

test('more backends than max_backends: a config error at the first backend without a slot (the table would put it over the buckets)', async () => {
  assert.equal(await lbErrors("backends: ['web1 198.18.1.11', 'web2 198.18.1.12', 'web3 198.18.1.13'], max_backends: 1"), [
    'lb.yaml:3:114: lb.backends: 3 backends do not fit max_backends: 1 (web2 is the first without a slot)\n'
      + '  hint: raise max_backends to 3 or more (room for backends added at run time, and for removed ones that buckets still remember), or list fewer backends',
  ]);
  assert.equal(await lbErrors("backends: ['web1 198.18.1.11', 'web2 198.18.1.12'], max_backends: 2"), []);
});

test('health_path must start with \'/\' (it is put after the port): a config error', async () => {
  assert.equal(await lbErrors("backends: ['web1 198.18.1.11'], health_check: http, health_path: who"), [
    "lb.yaml:3:148: lb.health_path: 'who' does not start with '/': the HTTP check would ask for http://ADDRESS:80who\n  hint: write the path from the root, e.g. '/who'",
  ]);
});

test('VIPs that repeat or that an earlier any-port VIP covers, backends at no host\'s or at a VIP\'s address, a table too small for the backends, health port or interval 0: config errors', async () => {
  const one = "backends: ['web1 198.18.1.11']";
  const vipHint = "  hint: list each service once (an address and protocol with port 'any' covers all of its ports)";
  assert.equal(await lbErrors(one, "['198.18.100.1 tcp 80', '198.18.100.2 udp any', '198.18.100.1 tcp 80', '198.18.100.2 udp 53', '198.18.100.1 udp 80', '198.18.100.2 tcp 53']"), [
    `lb.yaml:3:83: lb.vips: VIP 198.18.100.1 tcp 80 repeats the earlier 198.18.100.1 tcp 80: it would get no packet\n${vipHint}`,
    `lb.yaml:3:106: lb.vips: VIP 198.18.100.2 udp 53 is covered by the earlier 198.18.100.2 udp any: it would get no packet\n${vipHint}`,
  ]);
  const hostHint = "  hint: give the backend's unicast address (not 0.0.0.0, multicast 224.0.0.0/4 or reserved 240.0.0.0/4, broadcast included)";
  assert.equal(await lbErrors("backends: ['a 0.0.0.0', 'b 255.255.255.255', 'c 239.1.2.3', 'd 240.0.0.1', 'e 198.18.1.12']"), [
    `lb.yaml:3:94: lb.backends: backend a: 0.0.0.0 is not the address of a host\n${hostHint}`,
    `lb.yaml:3:107: lb.backends: backend b: 255.255.255.255 is not the address of a host\n${hostHint}`,
    `lb.yaml:3:128: lb.backends: backend c: 239.1.2.3 is not the address of a host\n${hostHint}`,
    `lb.yaml:3:143: lb.backends: backend d: 240.0.0.1 is not the address of a host\n${hostHint}`,
  ]);
  assert.equal(await lbErrors("backends: ['web1 198.18.1.11', 'web2 198.18.100.1']"), [
    "lb.yaml:3:114: lb.backends: backend web2 has the address of a VIP, 198.18.100.1\n  hint: give the backend host's own address: the VIP is the address the backends share with the mux",
  ]);
  const tableHint = '  hint: a prime table size well above 100 x the backends (65537 or 655373), or weights closer together';
  assert.equal(await lbErrors(`backends: [${Array.from({ length: 8 }, (_, i) => `'web${i} 198.18.1.${10 + i}'`).join(', ')}], table_size: 7`), [
    `lb.yaml:3:234: lb.backends: web7 (weight 1) would get none of the table's 7 buckets: no traffic, though weighted\n${tableHint}`,
  ]);
  assert.equal(await lbErrors("backends: ['web1 198.18.1.11 1000000', 'web2 198.18.1.12']"), [
    `lb.yaml:3:122: lb.backends: web2 (weight 1) would get none of the table's 65537 buckets: no traffic, though weighted\n${tableHint}`,
  ]);
  assert.equal(await lbErrors(`${one}, health_port: 0, health_interval: 0s, health_timeout: 0s`), [
    "lb.yaml:3:128: lb.health_port: the checks cannot connect to port 0\n  hint: the port the backends' servers answer on, e.g. 80",
    'lb.yaml:3:148: lb.health_interval: health_interval 0 would probe every backend as often as the control plane can\n  hint: a time between two checks of a backend, e.g. 2s',
    'lb.yaml:3:168: lb.health_timeout: health_timeout 0 would fail every check\n  hint: a time a healthy backend answers within, e.g. 1s',
  ]);
  assert.equal(await lbErrors(one, "['198.18.100.1 tcp 80', '198.18.100.1 tcp 443', '198.18.100.1 udp any', '198.18.100.2 tcp any']"), [], 'VIPs that differ');
});

test('at run time: a backend at no host\'s or a VIP\'s address, a weight that leaves a backend no bucket, health port or interval 0 are refused', async () => {
  const dir = tempDir();
  try {
    writePcap(join(dir, 'in.pcap'), [ipv4Frame(client({}))]);
    const p = await livePipeline(dir, muxConfig(false));
    for (const [handler, value, pattern] of [
      ['add_backend', 'web4 0.0.0.0', /backend web4: 0.0.0.0 is not the address of a host/],
      ['add_backend', 'web4 224.0.0.5', /224.0.0.5 is not the address of a host/],
      ['add_backend', 'web4 198.18.100.1', /backend web4 has the address of a VIP, 198.18.100.1 \(give the backend host's own address/],
      ['set_weight', 'web3 1000000', /web1 \(weight 1\), web2 \(weight 1\) would get none of the table's 65537 buckets: no traffic, though weighted \(a prime table size/],
      ['health_port', '0', /health_port: the checks cannot connect to port 0/],
      ['health_interval', '0s', /health_interval: health_interval 0 would probe/],
    ] as const) {
      assert.throws(() => p.handlerWrite('lb', handler, value), pattern);
    }
    assert.equal((p.handlerRead('lb', 'backends') as any[]).map((b) => `${b.name} ${b.weight}`), ['web1 1', 'web2 1', 'web3 2'], 'nothing changed');
    assert.is((p.handlerRead('lb', 'buckets') as { generation: number }).generation, 0);
    p.handlerWrite('lb', 'health_port', '8080');
    assert.is(p.handlerRead('lb', 'health_port'), '8080');
  } finally {
    removeDir(dir);
  }
});

test('add, drain, set weight, remove: only moved buckets change; an unknown backend is an error and changes nothing', async () => {
  const dir = tempDir();
  try {
    writePcap(join(dir, 'in.pcap'), [ipv4Frame(client({}))]);
    const p = await livePipeline(dir, muxConfig(false));
    const read = () => p.handlerRead('lb', 'backends') as any[];
    const table = () => p.handlerRead('lb', 'buckets') as { size: number; generation: number; moved_last_change: number };
    const snapshot = () => {
      const live = new LiveTable(p.view('lb').data('table'));
      return Array.from({ length: 65537 }, (_, i) => JSON.stringify({ ...live.describe(i), changed_ns: undefined }));
    };
    assert.equal(table(), { size: 65537, generation: 0, moved_last_change: 0 });
    // A bucket is named by its digits: before, ' ' read as bucket 0 and 1e1 as bucket 10.
    assert.is((p.handlerRead('lb', 'buckets', '10') as { bucket: number }).bucket, 10);
    for (const arg of [' ', '1e1', '0x1', '-1', '65537']) assert.throws(() => p.handlerRead('lb', 'buckets', arg), /is not a number from 0 to 65536/, arg);

    p.handlerWrite('lb', 'add_backend', 'web4 198.18.1.14');
    const afterAdd = snapshot();
    const moved = table().moved_last_change;
    const gained = read().find((b) => b.name === 'web4').buckets;
    console.log(`  add a 4th backend (weights 1,1,2,1): ${moved} buckets moved (${(moved / 65537 * 100).toFixed(2)}%), ${moved - gained} of them between old backends`);
    assert.ok(gained <= moved && moved - gained < 0.01 * 65537, 'nearly every moved bucket went to the new backend');
    assert.ok(Math.abs(moved / 65537 - 0.2) < 0.01);
    const b = afterAdd.map((s) => JSON.parse(s)).find((x) => x.current === 'web4');
    assert.is(b.generation, 1);
    assert.ok(['web1', 'web2', 'web3'].includes(b.previous));

    for (const [handler, value, pattern] of [
      ['drain', 'nosuch', /no backend 'nosuch'; the backends are web1, web2, web3, web4/],
      ['remove_backend', 'web9', /no backend 'web9'/],
      ['set_weight', 'web1 x', /"x" is not a weight/],
      ['set_weight', 'web1 2 3', /"web1 2 3" is not 'NAME WEIGHT' \(2 words\)/],
      ['set_weight', 'web1', /"web1" is not 'NAME WEIGHT' \(2 words\)/],
      ['drain', 'web1 web2', /"web1 web2" is not 'NAME' \(one word\)/],
      ['remove_backend', 'web1 now', /"web1 now" is not 'NAME' \(one word\)/],
      ['add_backend', 'web5 198.18.1.15 1 2', /is not NAME ADDRESS \[WEIGHT\]/],
      ['add_backend', 'web1 198.18.1.20', /repeats the name of web1/],
      ['add_backend', 'web5 198.18.1.11', /repeats the address of web1/],
      ['add_backend', 'web5', /is not NAME ADDRESS/],
      ['add_backend', 'web5 198.18.1.300', /is not an IPv4 address/],
    ] as const) {
      assert.throws(() => p.handlerWrite('lb', handler, value), pattern);
    }
    assert.is(table().generation, 1, 'failed changes leave the generation');
    assert.equal(snapshot(), afterAdd, 'and every bucket');

    p.handlerWrite('lb', 'drain', 'web4');
    assert.is(read().find((x) => x.name === 'web4').weight, 0);
    assert.is(read().find((x) => x.name === 'web4').buckets, 0);
    const drained = snapshot().map((s) => JSON.parse(s));
    const wrong = drained.findIndex((x, i) => {
      const before = JSON.parse(afterAdd[i]);
      return before.current === x.current ? JSON.stringify(x) !== afterAdd[i] : x.previous !== before.current || x.generation !== 2;
    });
    assert.is(wrong, -1, 'buckets that kept their backend are unchanged; moved ones name their former backend, generation 2');
    assert.ok(drained.filter((x) => x.previous === 'web4').length >= 13107);

    p.handlerWrite('lb', 'set_weight', 'web1 3');
    assert.is(read().find((x) => x.name === 'web1').weight, 3);
    p.handlerWrite('lb', 'remove_backend', 'web4');
    assert.equal(read().map((x) => x.name), ['web1', 'web2', 'web3']);
    assert.is(table().moved_last_change, 0, 'removing a drained backend moves nothing');
    // A removed backend is still named as the previous backend of the buckets it had.
    assert.ok(snapshot().some((s) => JSON.parse(s).previous === 'web4'));
    p.handlerWrite('lb', 'drain', 'web1');
    p.handlerWrite('lb', 'drain', 'web2');
    p.handlerWrite('lb', 'drain', 'web3');
    const result = await p.run();
    assert.is((result.elements.lb as any).no_backend, 1, 'every weight 0: no backend');
  } finally {
    removeDir(dir);
  }
});

test('a backend removed and added again at its address takes back its slot, which buckets remember it by', async () => {
  const dir = tempDir();
  try {
    writePcap(join(dir, 'in.pcap'), [ipv4Frame(client({}))]);
    const p = await livePipeline(dir, muxConfig(false).replace(lb(), lb(', max_backends: 4')));
    p.handlerWrite('lb', 'add_backend', 'web4 198.18.1.14');
    p.handlerWrite('lb', 'remove_backend', 'web2');
    // Every slot is in use or remembered by buckets: before, web2 could not come back ("no free backend slot").
    p.handlerWrite('lb', 'add_backend', 'web2 198.18.1.12');
    assert.equal((p.handlerRead('lb', 'backends') as any[]).map((b) => b.name).sort(), ['web1', 'web2', 'web3', 'web4']);
    // The hint says what following it does: a reload with another max_backends keeps no run-time change.
    assert.throws(() => p.handlerWrite('lb', 'add_backend', 'web5 198.18.1.15'),
      /no free backend slot: all 4 are in use .* \(raise max_backends in the config and reload: the running backends go on in the larger table, whose buckets forget their previous backends\)/);
    // At another address it is another backend: the buckets that remember the old one must not name it.
    p.handlerWrite('lb', 'remove_backend', 'web4');
    assert.throws(() => p.handlerWrite('lb', 'add_backend', 'web4 198.18.1.24'), /no free backend slot/);
    await p.run();
  } finally {
    removeDir(dir);
  }
});

test('a backend added into a removed backend\'s slot starts its packets and bytes at 0', async () => {
  const dir = tempDir();
  try {
    writePcap(join(dir, 'in.pcap'), Array.from({ length: 30 }, (_, i) => ipv4Frame(client({ sport: 30000 + i }))));
    const p = await livePipeline(dir, muxConfig(false).replace(lb(), lb(', table_size: 7, max_backends: 3')));
    await p.run();
    const counts = () => Object.fromEntries((p.handlerRead('lb', 'backends') as any[]).map((b) => [b.name, [b.packets, b.bytes]]));
    assert.ok(counts().web2[0] > 0);
    // Once no bucket remembers web2, its slot is free for web4 (max_backends: 3).
    p.handlerWrite('lb', 'remove_backend', 'web2');
    for (const name of ['web1', 'web3']) p.handlerWrite('lb', 'drain', name);
    p.handlerWrite('lb', 'add_backend', 'web4 198.18.1.14');
    assert.equal(counts().web4, [0, 0]);
  } finally {
    removeDir(dir);
  }
});

// --- daisy chaining ------------------------------------------------------------------------------

/** Three BeamerBackends in a row (each passes what is not for it to the next), each with its own local output. */
const backendsConfig = (extra: string) => `
batch: 1
elements:
  src: { type: FromPcap, file: encapsulated.pcap }
${Object.entries(ADDRESS).map(([name, address]) => `  ${name}: { type: BeamerBackend, address: ${address}${extra} }\n  ${name}_local: { type: ToPcap, file: ${name}.pcap }`).join('\n')}
  fwd: { type: ToPcap, file: forwarded.pcap }
connections:
  - src -> web1 -> web1_local
  - web1[2] -> web2 -> web2_local
  - web2[2] -> web3 -> web3_local
  - web1[1] -> fwd
  - web2[1] -> fwd
  - web3[1] -> fwd
`;

/**
 * The mux on paced packets (1 per second of trace time, read at that pace): after the first
 * `before` packets, `change` runs on the live pipeline. Returns the encapsulated frames.
 */
async function muxWithChange(dir: string, frames: [seconds: number, spec: FrameSpec][], before: number, change: (p: Pipeline) => void) {
  writePcap(join(dir, 'in.pcap'), frames.map(([s, spec], i) => ({ data: ipv4Frame(spec), sec: T0 + s, usec: i })));
  const p = await livePipeline(dir, muxConfig(false).replace('file: in.pcap', 'file: in.pcap, timing: original'));
  const running = p.run();
  while (p.handlerRead('lb', 'encapsulated') as number < before) await new Promise((r) => setTimeout(r, 10));
  change(p);
  await running;
  return readPcap(join(dir, 'out.pcap')).records.map((r) => r.data);
}

test('daisy chaining: after a drain, packets of an old connection reach the new backend and are forwarded, once, to the old one', async () => {
  const dir = tempDir();
  try {
    const conn: FrameSpec = client({ sport: 40000 });
    const frames: [number, FrameSpec][] = [
      [0, { ...conn, tcpFlags: SYN }],          // 1 the connection starts on its bucket's backend
      [1, { ...conn, tcpFlags: ACK }],           // 2 (the bucket moves before this one)
      [2, { ...conn, tcpFlags: PSH_ACK }],       // 3
      [2, { ...conn, sport: 40000, dport: 80, tcpFlags: PSH_ACK, payload: 100 }], // 4
      [6, { ...conn, tcpFlags: PSH_ACK }],       // 5 after the 5 s daisy window
    ];
    let first = '';
    const out = await muxWithChange(dir, frames, 1, (p) => {
      first = (p.handlerRead('lb', 'backends') as any[]).find((b) => b.packets === 1).name;
      p.handlerWrite('lb', 'drain', first);
    });
    const oldAddress = ADDRESS[first];
    assert.is(outer(out[0]).dst, oldAddress);
    const moved = outer(out[1]);
    assert.is.not(moved.dst, oldAddress);
    assert.is(moved.option.previous, oldAddress);
    assert.is(moved.option.generation, 1);
    assert.ok(moved.option.ageMs >= 500 && moved.option.ageMs <= 1500, `age ${moved.option.ageMs} ms`);
    assert.ok(outer(out[4]).option.ageMs >= 5000, `age ${outer(out[4]).option.ageMs} ms`);
    writePcap(join(dir, 'encapsulated.pcap'), out);

    // Daisy chaining on: the new backend forwards packets 2-4 to the old one; packet 5 comes after the window.
    let r = await runConfig(dir, backendsConfig(', daisy_window: 5s'), { threads: 'inline' });
    const by = (name: string) => r.elements[name] as Record<string, any>;
    const newName = Object.keys(ADDRESS).find((n) => ADDRESS[n] === moved.dst)!;
    assert.is(by(first).learned, 1);
    assert.is(by(first).delivered, 1);
    assert.is(by(newName).forwarded, 3);
    assert.is(by(newName).unknown, 1, 'after the window: delivered (the server would reset it)');
    const forwarded = readPcap(join(dir, 'forwarded.pcap')).records.map((x) => x.data);
    assert.is(forwarded.length, 3);
    forwarded.forEach((f, i) => {
      assert.is(outer(f).dst, oldAddress);
      assert.is(outer(f).option.flags, 1, 'marked forwarded');
      assert.ok(outer(f).inner.equals(ipv4Frame(frames[i + 1][1]).subarray(14)));
    });
    const fields = tshark(join(dir, 'forwarded.pcap'), ['ip.checksum.status']);
    assert.ok(fields.every(([s]) => s.split(',')[0] === '1'), 'outer checksums still good');
    const local = readPcap(join(dir, `${first}.pcap`)).records.map((x) => x.data);
    assert.ok(local[0].equals(ipv4Frame(frames[0][1])), 'decapsulated: the original frame');

    // The old backend takes the forwarded packets and delivers them, and never forwards them again.
    writePcap(join(dir, 'encapsulated.pcap'), forwarded);
    r = await runConfig(dir, backendsConfig(', daisy_window: 5s'), { threads: 'inline' });
    assert.is(by(first).delivered, 3);
    assert.is(by(first).forwarded, 0);
    const delivered = readPcap(join(dir, `${first}.pcap`)).records.map((x) => x.data);
    delivered.forEach((f, i) => assert.ok(f.equals(ipv4Frame(frames[i + 1][1])), `packet ${i + 2}`));

    // An ICMP error about the old connection (a router's "fragmentation needed" for the server's packet), tunnelled with the
    // moved packets' outer header: forwarded to the old backend too (before: delivered to the new one's server, which knows
    // nothing of it).
    const error = icmpError(40000);
    const tunnelled = Buffer.concat([Buffer.from(out[2].subarray(0, 50)), error.subarray(14)]);
    tunnelled.writeUInt16BE(tunnelled.length - 14, 16);
    tunnelled.writeUInt16BE(0, 24);
    tunnelled.writeUInt16BE(internetChecksum(tunnelled.subarray(14, 50)), 24);
    writePcap(join(dir, 'encapsulated.pcap'), [tunnelled]);
    r = await runConfig(dir, backendsConfig(', daisy_window: 5s'), { threads: 'inline' });
    assert.is(by(newName).forwarded, 1);
    assert.is(outer(readPcap(join(dir, 'forwarded.pcap')).records[0].data).dst, oldAddress);

    // Daisy chaining off: the new backend delivers the old connection's packets to its own server.
    writePcap(join(dir, 'encapsulated.pcap'), out);
    r = await runConfig(dir, backendsConfig(', daisy_chain: false'), { threads: 'inline' });
    assert.is(by(newName).forwarded, 0);
    assert.is(by(newName).unknown, 4);
  } finally {
    removeDir(dir);
  }
});

test('a change made before the first packet counts as made at its time (its age was 2^32 - 1 ms: no daisy chaining)', async () => {
  const dir = tempDir();
  try {
    const seconds = [0, 2];
    writePcap(join(dir, 'in.pcap'), seconds.flatMap((s) => Array.from({ length: 30 }, (_, i) => ({ data: ipv4Frame(client({ sport: 40000 + i, tcpFlags: ACK })), sec: T0 + s, usec: i }))));
    const p = await livePipeline(dir, muxConfig(false));
    p.handlerWrite('lb', 'drain', 'web3');
    await p.run();
    const moved = readPcap(join(dir, 'out.pcap')).records.map((r) => outer(r.data).option).filter((o) => o.previous === ADDRESS.web3);
    assert.ok(moved.length > 0 && moved.length % 2 === 0);
    assert.equal(moved.map((o) => o.ageMs), [...Array(moved.length / 2).fill(0), ...Array(moved.length / 2).fill(2000)]);
    const table = new LiveTable(p.view('lb').data('table'));
    const bucket = Array.from({ length: table.size }, (_, i) => table.describe(i)).find((b) => b.previous === 'web3');
    assert.is(bucket?.changed_ns, BigInt(T0) * 1_000_000_000n + 999_999n, 'the buckets handler tells the first packet\'s clock (the end of its millisecond)');
  } finally {
    removeDir(dir);
  }
});

test('BeamerBackend: not for it, plain IP-in-IP without the option, truncated inner packets', async () => {
  const dir = tempDir();
  try {
    const inner = ipv4Frame(client({ tcpFlags: ACK })).subarray(14);
    const plain = Buffer.from(ipv4Frame({ src: '198.18.0.9', dst: ADDRESS.web1, proto: 4, payload: inner }));
    const truncated = Buffer.from(ipv4Frame({ src: '198.18.0.9', dst: ADDRESS.web1, proto: 4, payload: inner.subarray(0, 30) }));
    const frames = [plain, truncated, ipv4Frame(client({})), ipv4Frame({ src: '198.18.0.9', dst: '198.18.1.99', proto: 4, payload: inner })];
    writePcap(join(dir, 'encapsulated.pcap'), frames);
    const r = await runConfig(dir, backendsConfig(''), { threads: 'inline' });
    const web1 = r.elements.web1 as Record<string, any>;
    assert.is(web1.delivered, 1);
    assert.is(web1.unknown, 1, 'no option: delivered');
    assert.is(web1.malformed, 1);
    assert.is((r.elements.web3 as any).other, 2);
    assert.ok(readPcap(join(dir, 'web1.pcap')).records[0].data.equals(Buffer.concat([plain.subarray(0, 14), inner])));
  } finally {
    removeDir(dir);
  }
});

test('BeamerBackend: an inner TCP, UDP or ICMP packet without its whole transport header is malformed; a later fragment and other protocols are delivered', async () => {
  const dir = tempDir();
  try {
    /** IP-in-IP to web1 of an inner packet of `l4` bytes after its IPv4 header. */
    const cut = (spec: FrameSpec, l4: number, fragmentField = 0) =>
      ipv4Frame({ src: '198.18.0.9', dst: ADDRESS.web1, proto: 4, payload: cutAfterHeader(ipv4Frame(client(spec)), l4, fragmentField).subarray(14) });
    const malformed = [cut({ tcpFlags: ACK }, 10), cut({ tcpFlags: ACK }, 0), cut({ proto: 'udp' }, 4), cut({ proto: 'icmp' }, 6)];
    const delivered = [cut({ tcpFlags: ACK }, 8, 185), cut({ proto: 'udp' }, 8), cut({ proto: 47 }, 4)];
    writePcap(join(dir, 'encapsulated.pcap'), [...malformed, ...delivered]);
    const r = await runConfig(dir, backendsConfig(''), { threads: 'inline' });
    const web1 = r.elements.web1 as Record<string, any>;
    assert.is(web1.malformed, malformed.length);
    assert.is(web1.delivered, delivered.length);
    assert.is(readPcap(join(dir, 'web1.pcap')).records.length, delivered.length);
  } finally {
    removeDir(dir);
  }
});

/** The inner packet in IP-in-IP to `dst` with LoadBalancer's option naming `previous` (generation 1, changed 0 ms ago). */
function withOption(inner: Buffer, dst: string, previous: string): Buffer {
  const header = Buffer.alloc(36);
  header[0] = 0x49;
  header.writeUInt16BE(36 + inner.length, 2);
  header[8] = 64;
  header[9] = 4;
  Buffer.from('198.18.0.9'.split('.').map(Number)).copy(header, 12);
  Buffer.from(dst.split('.').map(Number)).copy(header, 16);
  Buffer.from([158, 16, 0, 0, ...previous.split('.').map(Number), 0, 0, 0, 1, 0, 0, 0, 0]).copy(header, 20);
  header.writeUInt16BE(internetChecksum(header), 10);
  return Buffer.concat([ipv4Frame(client({})).subarray(0, 14), header, inner]);
}

test('BeamerBackend: a previous backend that is no host (broadcast, multicast, 0.0.0.0) is no previous backend; an outer total length past the frame is malformed', async () => {
  const dir = tempDir();
  try {
    const inner = ipv4Frame(client({ tcpFlags: ACK })).subarray(14);
    const longer = Buffer.from(ipv4Frame({ src: '198.18.0.9', dst: ADDRESS.web1, proto: 4, payload: inner }));
    longer.writeUInt16BE(longer.length, 16);
    writePcap(join(dir, 'encapsulated.pcap'), [
      ...['255.255.255.255', '224.0.0.1', '0.0.0.0'].map((previous) => withOption(inner, ADDRESS.web1, previous)),
      withOption(inner, ADDRESS.web1, ADDRESS.web2),
      longer,
    ]);
    const r = await runConfig(dir, backendsConfig(''), { threads: 'inline' });
    const web1 = r.elements.web1 as Record<string, any>;
    assert.equal({ unknown: web1.unknown, delivered: web1.delivered, forwarded: web1.forwarded, malformed: web1.malformed, other: web1.other },
      { unknown: 3, delivered: 3, forwarded: 1, malformed: 1, other: 0 });
    assert.is(outer(readPcap(join(dir, 'forwarded.pcap')).records[0].data).dst, ADDRESS.web2, 'a host named as previous backend is forwarded to');
  } finally {
    removeDir(dir);
  }
});

test('BeamerBackend: after a FIN, a new connection on the same 5-tuple is not taken for the old one; its SYN is learned', async () => {
  const dir = tempDir();
  try {
    /** A client packet to the VIP with sequence number `seq`, in plain IP-in-IP to web1. */
    const tunnelled = (tcpFlags: number, seq: number) => {
      const inner = Buffer.from(ipv4Frame(client({ tcpFlags })).subarray(14));
      inner.writeUInt32BE(seq >>> 0, 24);
      return ipv4Frame({ src: '198.18.0.9', dst: ADDRESS.web1, proto: 4, payload: inner });
    };
    writePcap(join(dir, 'encapsulated.pcap'), [
      tunnelled(SYN, 999), tunnelled(PSH_ACK, 1000),
      tunnelled(0x11, 1006),           // FIN-ACK with 6 bytes of data: the sequence space ends at 1013
      tunnelled(ACK, 1013),            // the last ACK: still the old connection
      tunnelled(PSH_ACK, 0x80000000),  // the same 5-tuple, elsewhere in sequence space: not known here
    ]);
    const web1 = (await runConfig(dir, backendsConfig(''), { threads: 'inline' })).elements.web1 as Record<string, any>;
    assert.is(web1.learned, 1);
    assert.is(web1.delivered, 5);
    assert.is(web1.unknown, 1);
    // The client opens it again with a SYN: a second connection learned (the SYN found the closing entry: it was not counted).
    writePcap(join(dir, 'encapsulated.pcap'), [tunnelled(SYN, 999), tunnelled(ACK, 1000), tunnelled(0x11, 1000), tunnelled(ACK, 1001), tunnelled(SYN, 0x80000000)]);
    const again = (await runConfig(dir, backendsConfig(''), { threads: 'inline' })).elements.web1 as Record<string, any>;
    assert.is(again.learned, 2);
  } finally {
    removeDir(dir);
  }
});

test('a copy of an encapsulated packet keeps its layout: the largest frames a slot takes are copied whole, none written past its slot', async () => {
  // 1920 bytes fill a slot after its 128 of metadata and headroom; encapsulated, the frame starts 36 bytes earlier.
  // A copy made at the default offset ran 36 bytes into the next slot, over other packets.
  const frames = Array.from({ length: 300 }, (_, i) => ipv4Frame(client({ sport: 40000 + i, payload: 1920 - 54 - (i % 40) })));
  const dir = tempDir();
  try {
    writePcap(join(dir, 'in.pcap'), frames);
    const result = await runConfig(dir, `
elements:
  src: { type: FromPcap, file: in.pcap }
  lb:  ${lb()}
  tee: { type: Tee }
  a: { type: ToPcap, file: a.pcap }
  b: { type: ToPcap, file: b.pcap }
connections:
  - src -> lb -> tee -> a
  - tee[1] -> b
`, { threads: 'inline' });
    const a = readPcap(join(dir, 'a.pcap')).records.map((r) => r.data);
    const b = readPcap(join(dir, 'b.pcap')).records.map((r) => r.data);
    assert.is(a.length, frames.length);
    assert.is(b.length, frames.length);
    for (let i = 0; i < frames.length; i++) {
      assert.ok(a[i].equals(b[i]), `copy ${i} equals its original`);
      assert.ok(outer(a[i]).inner.equals(frames[i].subarray(14)), `packet ${i} is the frame it was`);
    }
    assert.is(result.elements.tee.in, frames.length);
  } finally {
    removeDir(dir);
  }
});

test.run();
