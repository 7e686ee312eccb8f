// ARPResponder: each expected reply is written here from RFC 826 byte for byte; tshark reads the replies back.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { readPcap, writePcap, ipv4Frame, tshark } from './helpers.ts';
import { inTempDir, runInOrder, assertRecords, recordsOf, withOuterTag } from './golden.ts';

const MAC = '02:00:64:00:00:01';
const ASKER = '02:00:64:00:00:02';

const config = (addresses: string) => `
elements:
  src: { type: FromPcap, file: in.pcap }
  arp: { type: ARPResponder, addresses: ${addresses}, mac: '${MAC}' }
  replies: { type: ToPcap, file: replies.pcap }
  other: { type: ToPcap, file: other.pcap }
connections:
  - src -> arp -> replies
  - arp[1] -> other
`;

const hex = (mac: string) => mac.replace(/:/g, '');
const ip = (a: string) => Buffer.from(a.split('.').map(Number)).toString('hex');

/** An Ethernet ARP frame (RFC 826) of `operation` from `senderMac`/`senderIp` about `targetIp`, padded to 60 bytes as on the wire. */
function arp(operation: number, senderMac: string, senderIp: string, targetMac: string, targetIp: string, ethernetDst = 'ff:ff:ff:ff:ff:ff'): Buffer {
  const frame = Buffer.from(hex(ethernetDst) + hex(senderMac) + '0806' + '000108000604' + operation.toString(16).padStart(4, '0')
    + hex(senderMac) + ip(senderIp) + hex(targetMac) + ip(targetIp), 'hex');
  return Buffer.concat([frame, Buffer.alloc(60 - frame.length)]);
}

const request = (senderIp: string, targetIp: string) => arp(1, ASKER, senderIp, '00:00:00:00:00:00', targetIp);
/** The reply RFC 826 asks for: `MAC` has `targetIp`, to the asker, the padding kept. */
const replyTo = (senderIp: string, targetIp: string) => arp(2, MAC, targetIp, ASKER, senderIp, ASKER);

const records = (dir: string, name: string) => readPcap(join(dir, `${name}.pcap`)).records;

test('ARPResponder answers requests for its addresses (a prefix: each in it) and passes every other frame on output 1 unchanged', () => inTempDir(async (dir) => {
  const frames = [
    request('100.64.0.2', '100.64.0.1'),            // 1: for its address
    request('100.64.0.2', '100.64.0.9'),            // 2: for another
    request('100.64.0.2', '203.0.113.7'),           // 3: in its prefix (proxy ARP)
    request('0.0.0.0', '100.64.0.1'),               // 4: a probe (RFC 5227): answered
    request('100.64.0.1', '100.64.0.1'),            // 5: an announcement: not
    arp(2, ASKER, '100.64.0.2', MAC, '100.64.0.1'), // 6: a reply: not
    ipv4Frame(),                                    // 7: IPv4
    withOuterTag(request('100.64.0.2', '100.64.0.1'), 7), // 8: tagged: answered, the tag kept
  ];
  writePcap(join(dir, 'in.pcap'), frames);
  const result = await runInOrder(dir, config('[100.64.0.1, 203.0.113.0/24]'));
  const tagged = withOuterTag(replyTo('100.64.0.2', '100.64.0.1'), 7);
  assertRecords(records(dir, 'replies'), recordsOf([replyTo('100.64.0.2', '100.64.0.1'), replyTo('100.64.0.2', '203.0.113.7'), replyTo('0.0.0.0', '100.64.0.1'), tagged])
    .map((r, i) => ({ ...r, frac: [0, 2, 3, 7][i] })), 'replies');
  assertRecords(records(dir, 'other'), recordsOf(frames).filter((_, i) => [1, 4, 5, 6].includes(i)), 'other frames, unchanged');
  assert.equal([result.elements.arp.answered, result.elements.arp.other, result.elements.arp.malformed], [4, 4, 0]);
  // tshark reads them as replies: MAC is at the address asked for, told to the asker.
  const rows = tshark(join(dir, 'replies.pcap'), ['arp.opcode', 'arp.src.hw_mac', 'arp.src.proto_ipv4', 'arp.dst.hw_mac', 'eth.dst']);
  assert.equal(rows.map((r) => r.slice(0, 2)), Array(4).fill(['2', MAC]));
  assert.equal(rows.map((r) => r[2]), ['100.64.0.1', '203.0.113.7', '100.64.0.1', '100.64.0.1']);
  rows.forEach((r) => assert.equal([r[3], r[4]], [ASKER, ASKER]));
}));

test('ARPResponder takes IEEE 802 hardware as Ethernet, answers unpadded and QinQ requests, and leaves what Linux would not answer on output 1', () => inTempDir(async (dir) => {
  const ieee802 = Buffer.from(request('100.64.0.2', '100.64.0.1'));
  ieee802[15] = 6; // hardware type 6
  const otherProtocol = Buffer.from(request('100.64.0.2', '100.64.0.1'));
  otherProtocol.writeUInt16BE(0x86dd, 16);
  const unpadded = request('100.64.0.2', '100.64.0.1').subarray(0, 42);
  const qinq = withOuterTag(withOuterTag(request('100.64.0.2', '100.64.0.1'), 7), 100);
  const toAnotherHost = Buffer.from(request('100.64.0.2', '100.64.0.1'));
  Buffer.from('020000000099', 'hex').copy(toAnotherHost, 0);          // unicast to another host's MAC
  const toUs = Buffer.from(request('100.64.0.2', '100.64.0.1'));
  Buffer.from(hex(MAC), 'hex').copy(toUs, 0);                         // unicast to ours: answered
  const fromGroup = arp(1, '01:00:5e:00:00:01', '100.64.0.2', '00:00:00:00:00:00', '100.64.0.1', 'ff:ff:ff:ff:ff:ff');
  const forMulticast = request('100.64.0.2', '224.0.0.1');
  const frames = [ieee802, otherProtocol, unpadded, qinq, toAnotherHost, toUs, fromGroup, forMulticast];
  writePcap(join(dir, 'in.pcap'), frames);
  const result = await runInOrder(dir, config('[100.64.0.1, 224.0.0.0/4]'));
  const ieee802Reply = Buffer.from(replyTo('100.64.0.2', '100.64.0.1'));
  ieee802Reply[15] = 6;
  assertRecords(records(dir, 'replies'), recordsOf([ieee802Reply, replyTo('100.64.0.2', '100.64.0.1').subarray(0, 42),
    withOuterTag(withOuterTag(replyTo('100.64.0.2', '100.64.0.1'), 7), 100), replyTo('100.64.0.2', '100.64.0.1')])
    .map((r, i) => ({ ...r, frac: [0, 2, 3, 5][i] })), 'replies');
  assertRecords(records(dir, 'other'), recordsOf(frames).filter((_, i) => [1, 4, 6, 7].includes(i)), 'not answered, unchanged');
  assert.equal([result.elements.arp.answered, result.elements.arp.other, result.elements.arp.malformed], [4, 4, 0]);
}));

test('ARPResponder drops and counts an ARP frame too short for the addresses of Ethernet and IPv4 ARP', () => inTempDir(async (dir) => {
  const good = request('100.64.0.2', '100.64.0.1');
  writePcap(join(dir, 'in.pcap'), [good.subarray(0, 14 + 27), withOuterTag(good, 7).subarray(0, 18 + 27), good]);
  const result = await runInOrder(dir, config('[100.64.0.1]'));
  assert.equal([result.elements.arp.answered, result.elements.arp.malformed, result.elements.arp.other], [1, 2, 0]);
  assert.is(records(dir, 'other').length, 0);
}));

test.run();
