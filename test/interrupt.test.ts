// Ctrl-C stops a run cleanly: sources stop, packets in flight are finished, the pcap is complete.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { existsSync, writeFileSync } from 'node:fs';
import { tempDir, removeDir, readPcap, tshark, ROOT } from './helpers.ts';

test('SIGINT during a run writes a complete pcap and exits 130 with the counters', async () => {
  const dir = tempDir();
  try {
    const config = join(dir, 'endless.yaml');
    writeFileSync(config, `
elements:
  gen: { type: Generator, count: 0, flows: 100, timing: original, rate: 20000 }
  count: { type: Counter }
  out: { type: ToPcap, file: out.pcap }
connections:
  - gen -> count -> out
`);
    const child = spawn(process.execPath, [join(ROOT, 'bin/wirepath.js'), 'run', config, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout.on('data', (d) => { stdout += d; });
    // Wait until packets flow (the first run may compile the graph), then interrupt.
    await new Promise((r) => setTimeout(r, 1500));
    let waited = 0;
    while (waited < 20_000) {
      try { if (readPcap(join(dir, 'out.pcap')).records.length > 0) break; } catch { /* not yet created */ }
      await new Promise((r) => setTimeout(r, 200));
      waited += 200;
    }
    child.kill('SIGINT');
    const code = await new Promise<number | null>((r) => child.on('exit', r));
    assert.is(code, 130);
    const result = JSON.parse(stdout);
    assert.ok(result.interrupted);
    const written = result.elements.out.packets;
    assert.ok(written > 0, 'some packets were written before the interrupt');
    assert.is(result.packets_in, written, 'every packet read was finished and written');
    const pcap = readPcap(join(dir, 'out.pcap'));
    assert.is(pcap.records.length, written);
    assert.ok(pcap.records.every((r) => r.caplen === 64));
    assert.is(tshark(join(dir, 'out.pcap'), ['frame.number']).length, written, 'tshark reads every record');
  } finally {
    removeDir(dir);
  }
});

test('SIGINT while the fast path compiles ends the command at once and says so (it exited 130 without a word)', async () => {
  const dir = tempDir();
  try {
    // An empty compile cache: the compile takes seconds.
    const child = spawn(process.execPath, [join(ROOT, 'bin/wirepath.js'), 'run', join(ROOT, 'configs/nat-trace.yaml'), '--set', `nat.log=${join(dir, 'log.jsonl')}`, '--set', `out.file=${join(dir, 'out.pcap')}`],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, WIREPATH_CACHE: join(dir, 'cache') } });
    let stderr = '';
    child.stderr.on('data', (d) => { stderr += d; });
    await new Promise((r) => setTimeout(r, 2000));
    child.kill('SIGINT');
    const code = await new Promise<number | null>((r) => child.on('exit', r));
    assert.is(code, 130);
    assert.is(stderr, 'wirepath: stopped (SIGINT) before the pipeline started: no packet was read and no output written\n');
    assert.not.ok(existsSync(join(dir, 'cache')), 'stopped while compiling');
  } finally {
    removeDir(dir);
  }
});

test.run();
