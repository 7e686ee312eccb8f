// BeamerBackend on several shards: the dispatcher steers by the inner connection (the element's `steer`),
// so every packet finds the entry its SYN made, also while the pipeline scales 1 -> 2 -> 1; sources that
// steer otherwise are refused.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { tempDir, removeDir, writePcap, ipv4Frame, internetChecksum, cli, ROOT } from './helpers.ts';
import { loadConfig } from '../engine/config.ts';
import { Pipeline } from '../engine/pipeline.ts';
import { verify } from '../engine/verify.ts';

const CONNECTIONS = 3000;

/** The mux of one backend (web1) encapsulates in.pcap into encapsulated.pcap once; a backend's pipeline then reads what arrives from the network. */
async function encapsulate(dir: string) {
  writeFileSync(join(dir, 'mux.yaml'), `
elements:
  src: { type: FromPcap, file: in.pcap }
  lb:  { type: LoadBalancer, vips: ['198.18.100.1 tcp 80'], source: 198.18.3.0/24, backends: ['web1 198.18.1.11'] }
  out: { type: ToPcap, file: encapsulated.pcap }
connections:
  - src -> lb -> out
`);
  return (await Pipeline.create(await loadConfig(join(dir, 'mux.yaml')), { shards: 1, threads: 'inline' })).run();
}
const SYN = 0x02, PSH_ACK = 0x18;

test('connections keep their backend entries through 1 -> 2 -> 1 shards; output equals one shard', async () => {
  const dir = tempDir();
  try {
    // Every connection: a SYN in the first round, then a data segment in each of three more rounds.
    const frames = [];
    for (let round = 0; round < 4; round++) {
      for (let i = 0; i < CONNECTIONS; i++) {
        const client = `100.64.${i >> 8}.${i & 255}`;
        frames.push({ data: ipv4Frame({ proto: 'tcp', src: client, dst: '198.18.100.1', sport: 20000 + (i % 40000), dport: 80, tcpFlags: round ? PSH_ACK : SYN }), sec: 1_700_000_000 + round, usec: i });
      }
    }
    writePcap(join(dir, 'in.pcap'), frames);
    await encapsulate(dir);
    const backend = (steer: string) => {
      const file = join(dir, `backend-${steer}.yaml`);
      writeFileSync(file, `
elements:
  src: { type: FromPcap, file: encapsulated.pcap, steer: ${steer} }
  bb:  { type: BeamerBackend, address: 198.18.1.11 }
  out: { type: ToPcap, file: out-${steer}.pcap }
connections:
  - src -> bb -> out
`);
      return file;
    };
    const scaled = async (file: string) => {
      const pipeline = await Pipeline.create(await loadConfig(file), { shards: 1, scaleAt: [{ packets: 4000, shards: 2 }, { packets: 8000, shards: 1 }] });
      const bb = (await pipeline.run()).elements.bb as Record<string, number>;
      assert.is(pipeline.scaleReports.length, 2);
      for (const r of pipeline.scaleReports) assert.is(r.packets_lost, 0);
      return { bb, moved: pipeline.scaleReports.map((r) => r.flows_moved) };
    };
    const { bb, moved } = await scaled(backend('bb'));
    assert.ok(moved.every((n) => n > 0), 'connection entries moved');
    assert.is(bb.learned, CONNECTIONS);
    assert.is(bb.unknown, 0, 'every data segment found its connection, wherever it lived');
    assert.is(bb.delivered, 4 * CONNECTIONS);
    const equivalence = await verify(backend('bb'), { shards: [1, 2, 1], scaleEvery: 4000 });
    assert.ok(equivalence.equivalent, equivalence.difference);
  } finally {
    removeDir(dir);
  }
});

test('an ICMP error about a connection (tunnelled by the mux) reaches the shard of the connection\'s entry', async () => {
  const dir = tempDir();
  try {
    // 200 connections' SYNs, then a router's "fragmentation needed" about each one's packet from the server.
    const clientOf = (i: number) => `100.64.1.${i}`;
    const syns = Array.from({ length: 200 }, (_, i) => ipv4Frame({ proto: 'tcp', src: clientOf(i), dst: '198.18.100.1', sport: 20000 + i, dport: 80, tcpFlags: SYN }));
    const errors = Array.from({ length: 200 }, (_, i) => {
      const quoted = ipv4Frame({ proto: 'tcp', src: '198.18.100.1', dst: clientOf(i), sport: 80, dport: 20000 + i, payload: 0 }).subarray(14, 14 + 28);
      const icmp = Buffer.concat([Buffer.from([3, 4, 0, 0, 0, 0, 0x05, 0xdc]), quoted]);
      icmp.writeUInt16BE(internetChecksum(icmp), 2);
      const header = Buffer.from(ipv4Frame({ proto: 'icmp', src: '198.18.200.1', dst: '198.18.100.1', payload: 0 }).subarray(0, 34));
      header.writeUInt16BE(20 + icmp.length, 16);
      header.writeUInt16BE(0, 24);
      header.writeUInt16BE(internetChecksum(header.subarray(14, 34)), 24);
      return Buffer.concat([header, icmp]);
    });
    writePcap(join(dir, 'in.pcap'), [...syns, ...errors].map((data, i) => ({ data, sec: 1_700_000_000, usec: i })));
    const mux = await encapsulate(dir);
    assert.is((mux.elements.lb as Record<string, number>).icmp_errors, 200);
    writeFileSync(join(dir, 'backend.yaml'), 'elements:\n  src: { type: FromPcap, file: encapsulated.pcap, steer: bb }\n  bb: { type: BeamerBackend, address: 198.18.1.11 }\n'
      + '  out: { type: Discard }\nconnections:\n  - src -> bb -> out\n');
    const bb = (await (await Pipeline.create(await loadConfig(join(dir, 'backend.yaml')), { shards: 2 })).run()).elements.bb as Record<string, number>;
    assert.is(bb.learned, 200);
    assert.is(bb.unknown, 0, 'each error found its connection (steered by the outer header, about half found none)');
    assert.is(bb.delivered, 400);
  } finally {
    removeDir(dir);
  }
});

test('sources that do not steer by the backend are refused for more than one shard: by check, at start and on scale', async () => {
  // Steered by the outer header, one connection's packets from two muxes (or daisy-chained) reach two shards:
  // the second mux's ACKs found no entry and were forwarded away (91 of 200 connections on 2 shards).
  const dir = tempDir();
  try {
    const file = join(dir, 'backend.yaml');
    writeFileSync(file, 'elements:\n  src: { type: FromPcap, file: in.pcap }\n  bb: { type: BeamerBackend, address: 198.18.1.11 }\n  out: { type: Discard }\nconnections:\n  - src -> bb -> out\n');
    writePcap(join(dir, 'in.pcap'), [{ data: ipv4Frame({ proto: 'tcp', src: '100.64.0.1', dst: '198.18.100.1', sport: 20000, dport: 80 }), sec: 1_700_000_000, usec: 0 }]);
    const refused = /src feeds bb \(BeamerBackend\), whose table is keyed by what only its steering finds, but steers by flow/;
    const check = cli(['check', file, '--shards', '2']);
    assert.is(check.status, 2, check.stdout);
    assert.match(check.stderr, refused);
    assert.match(check.stderr, /add steer: bb to src/);
    assert.is(cli(['check', file, '--shards', '1']).status, 0);
    const config = await loadConfig(file);
    await Pipeline.create(config, { shards: 2 }).then(() => assert.unreachable('two shards started'), (e) => assert.match((e as Error).message, refused));
    await Pipeline.create(config, { shards: 1, scaleAt: [{ packets: 1, shards: 2 }] }).then((p) => p.run()).then(() => assert.unreachable('scaled'), (e) => assert.match((e as Error).message, refused));
    // The example backend config steers by it.
    assert.is(cli(['check', join(ROOT, 'configs/lb-backend.yaml'), '--shards', '2']).status, 0);
  } finally {
    removeDir(dir);
  }
});

test.run();
