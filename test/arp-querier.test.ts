// ARPQuerier: the next hop's MAC found by ARP, on the pipeline clock. Expected frames are written here from RFC 826.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { readPcap, writePcap, ipv4Frame, tshark, cli, runConfig, type FrameSpec } from './helpers.ts';
import { inTempDir, runInOrder, ipv6Frame } from './golden.ts';

const MAC = '02:00:64:00:00:01';
const HOST = '02:00:64:00:00:02';
const hex = (mac: string) => mac.replace(/:/g, '');
const ip = (a: string) => Buffer.from(a.split('.').map(Number)).toString('hex');

/** One packet a batch, so that each sees the clock at its own time; ARP to input 1, the rest to input 0. */
const config = (params = '') => `
batch: 1
elements:
  src: { type: FromPcap, file: in.pcap }
  cls: { type: Classifier, patterns: ['arp', '-'] }
  q: { type: ARPQuerier, address: 100.64.0.1, mac: '${MAC}', timeout: 10s${params ? `, ${params}` : ''} }
  out: { type: ToPcap, file: out.pcap }
connections:
  - src -> cls
  - cls[0] -> [1]q
  - cls[1] -> [0]q
  - q -> out
`;

/** An Ethernet ARP frame (RFC 826), padded to 60 bytes. */
function arp(operation: number, senderMac: string, senderIp: string, targetMac: string, targetIp: string, dst: string): Buffer {
  const frame = Buffer.from(hex(dst) + hex(senderMac) + '0806' + '000108000604' + operation.toString(16).padStart(4, '0')
    + hex(senderMac) + ip(senderIp) + hex(targetMac) + ip(targetIp), 'hex');
  return Buffer.concat([frame, Buffer.alloc(60 - frame.length)]);
}

/** The request the querier sends for `address`. */
const request = (address: string) => arp(1, MAC, '100.64.0.1', '00:00:00:00:00:00', address, 'ff:ff:ff:ff:ff:ff');
const reply = (mac: string, address: string) => arp(2, mac, address, MAC, '100.64.0.1', MAC);
const to = (dst: string, spec: FrameSpec = {}) => ipv4Frame({ src: '198.18.0.2', dst, proto: 'udp', ...spec });
/** `frame` with an 802.1Q tag of VLAN `vlan` after its addresses. */
const withTag = (frame: Buffer, vlan: number) => Buffer.concat([frame.subarray(0, 12), Buffer.from([0x81, 0, 0, vlan]), frame.subarray(12, 60 - 4)]);
/** `frame` as the querier sends it: from MAC to `mac`. */
const sentTo = (frame: Buffer, mac: string) => Buffer.concat([Buffer.from(hex(mac) + hex(MAC), 'hex'), frame.subarray(12)]);

test('ARPQuerier asks for an unknown next hop and holds one packet for it until the answer, sends at once once known, asks again after timeout', () => inTempDir(async (dir) => {
  const at = (sec: number, data: Buffer) => ({ data, sec: Math.floor(sec), usec: Math.round((sec % 1) * 1e6) });
  const first = to('100.64.0.2', { sport: 1 });
  const second = to('100.64.0.2', { sport: 2 });
  const third = to('100.64.0.2', { sport: 3 });
  const late = to('100.64.0.2', { sport: 4 });
  writePcap(join(dir, 'in.pcap'), [
    at(1.0, first),                                        // unknown: a request, and the packet waits
    at(1.001, second),                                     // one waits already: dropped
    at(1.002, reply(HOST, '100.64.0.2')),                  // the answer: the first goes
    at(1.003, third),                                      // sent to the host
    at(1.004, to('100.64.0.3')),                           // another unknown: a request, held
    at(1.5, to('100.64.0.3')),                             // dropped
    at(2.5, to('100.64.0.3')),                             // a second later: asked again (and dropped)
    at(3.0, arp(1, '02:00:64:00:00:09', '100.64.0.9', '00:00:00:00:00:00', '100.64.0.1', 'ff:ff:ff:ff:ff:ff')), // asks for us: learned
    at(3.1, arp(1, '02:00:64:00:00:0a', '100.64.0.10', '00:00:00:00:00:00', '100.64.0.77', 'ff:ff:ff:ff:ff:ff')), // asks for another: not
    at(3.2, to('100.64.0.9')),                             // sent at once
    at(3.3, to('100.64.0.10')),                            // unknown: a request, held
    at(12.0, late),                                        // learned 11 s ago: a request asks again, the packet goes on;
                                                           // the packets for .3 and .10 waited over 3 s: dropped
    at(12.1, ipv6Frame()),                                 // not IPv4: dropped
  ]);
  const result = await runInOrder(dir, config());
  const sent = readPcap(join(dir, 'out.pcap')).records.map((r) => r.data.toString('hex'));
  assert.equal(sent, [
    request('100.64.0.2'), sentTo(first, HOST), sentTo(third, HOST), request('100.64.0.3'), request('100.64.0.3'),
    sentTo(to('100.64.0.9'), '02:00:64:00:00:09'), request('100.64.0.10'), request('100.64.0.2'), sentTo(late, HOST),
  ].map((b) => b.toString('hex')));
  const q = result.elements.q;
  assert.equal([q.resolved, q.held, q.released, q.unresolved, q.queries, q.learned, q.not_ipv4], [3, 3, 1, 5, 5, 2, 1]);
  // tshark reads the requests as who-has from the querier.
  const rows = tshark(join(dir, 'out.pcap'), ['arp.opcode', 'arp.src.proto_ipv4', 'arp.dst.proto_ipv4'], ['-Y', 'arp']);
  assert.equal(rows, [['1', '100.64.0.1', '100.64.0.2'], ['1', '100.64.0.1', '100.64.0.3'], ['1', '100.64.0.1', '100.64.0.3'], ['1', '100.64.0.1', '100.64.0.10'], ['1', '100.64.0.1', '100.64.0.2']]);
}));

test('ARPQuerier sends destinations outside network to the gateway, keeps VLAN tags, and drops ARP frames that make no sense', () => inTempDir(async (dir) => {
  const tagged = to('198.18.0.7', { vlan: 7 });
  const shortArp = reply(HOST, '100.64.0.254').subarray(0, 14 + 27);
  writePcap(join(dir, 'in.pcap'), [
    { data: to('198.18.0.7'), sec: 1, usec: 0 },          // outside the network: ask for the gateway
    { data: shortArp, sec: 1, usec: 1 },                   // too short: not learned
    { data: reply(HOST, '100.64.0.254'), sec: 1, usec: 2 },
    { data: tagged, sec: 1, usec: 3 },                     // to the gateway's MAC, the tag kept
    { data: to('100.64.0.2', { vlan: 7 }), sec: 1, usec: 4 }, // on the link: its own request, with the tag
  ]);
  const result = await runInOrder(dir, config('network: 100.64.0.0/24, gateway: 100.64.0.254'));
  const sent = readPcap(join(dir, 'out.pcap')).records.map((r) => r.data.toString('hex'));
  assert.equal(sent, [request('100.64.0.254'), sentTo(to('198.18.0.7'), HOST), sentTo(tagged, HOST), withTag(request('100.64.0.2'), 7)].map((b) => b.toString('hex')));
  assert.equal([result.elements.q.not_arp, result.elements.q.learned], [1, 1]);
}));

test('ARPQuerier drops a packet to 0.0.0.0, counted in unresolved, without asking who has it', () => inTempDir(async (dir) => {
  writePcap(join(dir, 'in.pcap'), [{ data: to('0.0.0.0'), sec: 1, usec: 0 }, { data: to('100.64.0.2'), sec: 1, usec: 1 }]);
  const result = await runInOrder(dir, config());
  // Before, a broadcast who-has 0.0.0.0 went out, and the packet waited 3 s for an answer that never comes.
  assert.equal(readPcap(join(dir, 'out.pcap')).records.map((r) => r.data.toString('hex')), [request('100.64.0.2').toString('hex')]);
  assert.equal([result.elements.q.unresolved, result.elements.q.queries, result.elements.q.held], [1, 1, 1]);
}));

test('ARPQuerier sends broadcasts and multicasts to their group MACs, learns from answers but not from group MACs or hosts outside the network, and forgets a neighbour that stopped answering', () => inTempDir(async (dir) => {
  const at = (sec: number, data: Buffer) => ({ data, sec: Math.floor(sec), usec: Math.round((sec % 1) * 1e6) });
  const unsolicited = reply('02:00:64:00:00:05', '100.64.0.5');
  const fromGroup = reply('01:00:5e:00:00:05', '100.64.0.6');
  const fromOutside = arp(1, '02:00:64:00:00:07', '10.0.0.7', '00:00:00:00:00:00', '100.64.0.1', 'ff:ff:ff:ff:ff:ff');
  const first = to('100.64.0.2', { sport: 1 });
  const silent = to('100.64.0.2', { sport: 2 });
  writePcap(join(dir, 'in.pcap'), [
    at(1.0, to('255.255.255.255')), at(1.0, to('100.64.0.255')), at(1.0, to('224.1.2.3')),
    at(1.1, unsolicited), at(1.1, fromGroup), at(1.1, fromOutside),       // an answer teaches; the others nothing
    at(1.2, to('100.64.0.5')),                                            // known from the answer: sent
    at(1.2, to('100.64.0.6')),                                            // unknown: asked for
    at(1.3, first), at(1.4, reply(HOST, '100.64.0.2')),                   // asked for, answered, sent
    at(14.5, silent),                                                     // answered 13.1 s ago (timeout 10 s, 3 s to answer): unknown again
  ]);
  const result = await runInOrder(dir, config('network: 100.64.0.0/24, gateway: 100.64.0.254'));
  const sent = readPcap(join(dir, 'out.pcap')).records.map((r) => r.data.toString('hex'));
  assert.equal(sent, [
    sentTo(to('255.255.255.255'), 'ff:ff:ff:ff:ff:ff'), sentTo(to('100.64.0.255'), 'ff:ff:ff:ff:ff:ff'), sentTo(to('224.1.2.3'), '01:00:5e:01:02:03'),
    sentTo(to('100.64.0.5'), '02:00:64:00:00:05'), request('100.64.0.6'), request('100.64.0.2'), sentTo(first, HOST), request('100.64.0.2'),
  ].map((b) => b.toString('hex')));
  assert.equal([result.elements.q.ignored, result.elements.q.learned, result.elements.q.held, result.elements.q.released], [2, 2, 3, 1]);
}));

/** `count` packets to as many hosts nobody knows yet, each answered `answerAfter` s later. */
function manyNeighbours(count: number, answerAfter: number) {
  const hostMac = (i: number) => `02:00:64:00:01:${i.toString(16).padStart(2, '0')}`;
  const packets = Array.from({ length: count }, (_, i) => ({ data: to(`100.64.1.${i + 1}`, { sport: 1000 + i, src: `198.18.${i}.2` }), sec: 1, usec: i * 1000 }));
  const answers = Array.from({ length: count }, (_, i) => ({ data: reply(hostMac(i + 1), `100.64.1.${i + 1}`), sec: 1, usec: answerAfter * 1e6 + i * 1000 }));
  return { frames: [...packets, ...answers], hostMac };
}

test('ARPQuerier on two shards: every packet goes to its host\'s MAC once the host answers, on whichever shard the answer comes', () => inTempDir(async (dir) => {
  const { frames, hostMac } = manyNeighbours(60, 0.5);
  writePcap(join(dir, 'in.pcap'), frames);
  for (const threads of ['inline', 'worker'] as const) {
    const result = await runConfig(dir, `shards: 2\n${config()}`, { threads });
    // On a trace the shards keep no order between them: an answer may come to one before the other has asked. Either
    // way each packet goes, at once or once answered, and none is left waiting.
    const q = result.elements.q as Record<string, number>;
    assert.equal([q.resolved + q.released, q.held - q.released, q.unresolved], [60, 0, 0], `${threads}: ${JSON.stringify(q)}`);
    const ipv4 = readPcap(join(dir, 'out.pcap')).records.filter((r) => r.data.readUInt16BE(12) === 0x0800);
    assert.is(ipv4.length, 60);
    for (const r of ipv4) assert.is(r.data.subarray(0, 6).toString('hex'), hex(hostMac(r.data[33])), `${threads}: the packet to 100.64.1.${r.data[33]}`);
  }
}));

test('ARPQuerier with a full table drops the packets of neighbours it cannot take, counted in table_full; each packet is counted once', () => inTempDir(async (dir) => {
  // 40 new hosts at once for 16 slots, none of which may make room (each was asked for less than timeout ago).
  writePcap(join(dir, 'in.pcap'), Array.from({ length: 40 }, (_, i) => ({ data: to(`100.64.2.${i + 1}`), sec: 1, usec: i })));
  const result = await runInOrder(dir, config('capacity: 16'));
  const q = result.elements.q as Record<string, number>;
  assert.ok(q.table_full >= 40 - 16, JSON.stringify(q));
  assert.is(q.held + q.unresolved + q.table_full, 40, JSON.stringify(q));
  assert.is(q.queries, 40 - q.table_full, 'a request for each neighbour it took');
}));

test('ARPQuerier: a gateway without its network, or one outside it, is a config error at its place', () => inTempDir(async (dir) => {
  const check = (params: string) => {
    writeFileSync(join(dir, 'bad.yaml'), config(params));
    return cli(['check', join(dir, 'bad.yaml')]);
  };
  const alone = check('gateway: 100.64.0.254');
  assert.is(alone.status, 2);
  assert.match(alone.stderr, /bad\.yaml:6:\d+: q\.gateway: network and gateway go together/);
  const outside = check('network: 100.64.0.0/24, gateway: 198.18.0.1');
  assert.match(outside.stderr, /q\.gateway: the gateway is outside the network/);
  assert.is(check('network: 100.64.0.0/24, gateway: 100.64.0.254').status, 0);
}));

test.run();
