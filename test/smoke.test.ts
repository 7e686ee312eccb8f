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
