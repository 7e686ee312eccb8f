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

test.run();
