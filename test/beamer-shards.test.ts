// BeamerBackend on several shards: the dispatcher steers by the inner connection (the element's `steer`),
// so every packet finds the entry its SYN made, also while the pipeline scales 1 -> 2 -> 1.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { tempDir, removeDir, writePcap, ipv4Frame } from './helpers.ts';
import { loadConfig } from '../engine/config.ts';
import { Pipeline } from '../engine/pipeline.ts';
import { verify } from '../engine/verify.ts';

const CONNECTIONS = 3000;
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
    // The mux encapsulates them once; the backend's pipeline then reads what arrives from the network.
    writeFileSync(join(dir, 'mux.yaml'), `
elements:
  src: { type: FromPcap, file: in.pcap }
  lb:  { type: LoadBalancer, vips: ['198.18.100.1 tcp 80'], source: 198.18.3.0/24, backends: ['web1 198.18.1.11'] }
  out: { type: ToPcap, file: encapsulated.pcap }
connections:
  - src -> lb -> out
`);
    await (await Pipeline.create(await loadConfig(join(dir, 'mux.yaml')), { shards: 1, threads: 'inline' })).run();
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
    // Steered by the outer header instead, entries keyed by the inner connection still move with the packets that
    // made them (they moved by their key, and the packets went elsewhere: connections were lost).
    const outer = await scaled(backend('flow'));
    assert.is(outer.bb.unknown, 0, 'steering by the outer header loses no connection either');
    assert.is(outer.bb.delivered, 4 * CONNECTIONS);
  } finally {
    removeDir(dir);
  }
});

test.run();
