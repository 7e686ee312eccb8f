import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { tempDir, removeDir, runConfig, readPcap, writePcap, ipv4Frame } from './helpers.ts';

test('a trace passes FromPcap -> Counter -> ToPcap unchanged', async () => {
  const dir = tempDir();
  try {
    const frames = [ipv4Frame(), ipv4Frame({ proto: 'udp' }), ipv4Frame({ proto: 'icmp' })];
    writePcap(join(dir, 'in.pcap'), frames);
    const result = await runConfig(dir, `
elements:
  src: { type: FromPcap, file: in.pcap }
  count: { type: Counter }
  out: { type: ToPcap, file: out.pcap }
connections:
  - src -> count -> out
`);
    assert.is(result.packets_in, 3);
    assert.is(result.packets_out, 3);
    assert.is(result.elements.count.packets, 3);
    const out = readPcap(join(dir, 'out.pcap'));
    assert.equal(out.records.map((r) => r.data.toString('hex')), frames.map((f) => f.toString('hex')));
  } finally {
    removeDir(dir);
  }
});

test('inline mode (one thread, shard frees into the pool directly) gives what a worker gives', async () => {
  const dir = tempDir();
  try {
    writePcap(join(dir, 'in.pcap'), Array.from({ length: 3000 }, (_, i) => ipv4Frame({ sport: 1000 + (i % 50), ttl: i % 7 })));
    const yaml = (out: string) => `
elements:
  src: { type: FromPcap, file: in.pcap }
  rw: { type: Rewrite, ip_src: 203.0.113.7, dec_ttl: true }
  tee: { type: Tee, outputs: 3 }
  a: { type: ToPcap, file: ${out}-a.pcap }
  b: { type: ToPcap, file: ${out}-b.pcap }
  drop: { type: Discard }
connections:
  - src -> rw -> tee -> a
  - tee[1] -> b
  - tee[2] -> drop
  - rw[1] -> drop
`;
    const inline = await runConfig(dir, yaml('inline'), { threads: 'inline', shards: 1 });
    const worker = await runConfig(dir, yaml('worker'), { threads: 'worker', shards: 1 });
    assert.equal(inline.elements, worker.elements);
    for (const sink of ['a', 'b']) {
      assert.equal(readPcap(join(dir, `inline-${sink}.pcap`)).records.map((r) => r.data.toString('hex')), readPcap(join(dir, `worker-${sink}.pcap`)).records.map((r) => r.data.toString('hex')));
    }
    assert.is(inline.elements.tee.no_buffer, 0);
  } finally {
    removeDir(dir);
  }
});

test('ToPcap creates the folder of its file (npm start on a fresh clone writes into out/)', async () => {
  const dir = tempDir();
  try {
    writePcap(join(dir, 'in.pcap'), [ipv4Frame()]);
    const result = await runConfig(dir, `
elements:
  src: { type: FromPcap, file: in.pcap }
  out: { type: ToPcap, file: not/yet/there/out.pcap }
connections:
  - src -> out
`);
    assert.is(result.packets_out, 1);
    assert.is(readPcap(join(dir, 'not/yet/there/out.pcap')).records.length, 1);
  } finally {
    removeDir(dir);
  }
});

test('two outputs of one element into one input keep their own counts', async () => {
  const dir = tempDir();
  try {
    writePcap(join(dir, 'in.pcap'), [ipv4Frame(), ipv4Frame(), ipv4Frame({ ttl: 1 })]);
    const result = await runConfig(dir, `
elements:
  src: { type: FromPcap, file: in.pcap }
  rw: { type: Rewrite, dec_ttl: true }
  drop: { type: Discard }
connections:
  - src -> rw -> drop
  - rw[1] -> drop
`);
    assert.equal(result.elements.rw.out, [2, 1]);
    assert.is(result.elements.drop.in, 3);
  } finally {
    removeDir(dir);
  }
});

test.run();
