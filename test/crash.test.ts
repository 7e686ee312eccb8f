// A shard whose fast path traps is reported with the element and the packet, restarted from the last
// snapshot, and the other shards keep running.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tempDir, removeDir, cli, ROOT } from './helpers.ts';
import { loadConfig } from '../engine/config.ts';
import { Pipeline } from '../engine/pipeline.ts';
import { Supervisor } from '../engine/supervisor.ts';
import { IoContext } from '../engine/layout.ts';
import { Shard } from '../engine/shard.ts';
import { MemoryArena } from '../engine/memory.ts';
import { StallError } from '../engine/errors.ts';
import { metrics } from '../engine/control.ts';

const PACKETS = 20000;

/**
 * Writes trace.pcap in `dir` (gen-pcap.py `args`) with packet number `poisoned` (from 0; or each of a list) given the
 * TTL FaultOn acts on, and c.yaml: `head` (top-level settings), FromPcap (`source` adds its options) -> FaultOn `fault`
 * -> `rest`; returns the (first) poisoned packet's first 64 bytes in hex.
 */
function writeFaultyConfig(dir: string, args: string[], poisoned: number | number[], fault: 'crash' | 'spin' | 'twice' | 'overlong' | 'underflow', source = '', rest = 'drop: { type: Discard }', head = ''): string {
  const trace = join(dir, 'trace.pcap');
  execFileSync('python3', [join(ROOT, 'bench/gen-pcap.py'), ...args, '-o', trace]);
  const bytes = readFileSync(trace);
  const packets = [poisoned].flat();
  // The TTL; the IP checksum no longer matters to anyone here.
  for (const n of packets) bytes[24 + n * 80 + 16 + 22] = 13;
  writeFileSync(trace, bytes);
  const at = 24 + packets[0] * 80;
  const names = [...rest.matchAll(/^(\w+):/gm)].map((m) => m[1]);
  writeFileSync(join(dir, 'c.yaml'), `${head}
element_dirs: [${join(ROOT, 'test/fixtures/crash-elements')}]
elements:
  src: { type: FromPcap, file: trace.pcap${source} }
  fault: { type: FaultOn, ttl: 13, fault: ${fault} }
${rest.replace(/^/gm, '  ')}
connections:
  - ${['src', 'fault', ...names].join(' -> ')}
`);
  return bytes.subarray(at + 16, at + 16 + 64).toString('hex');
}
// The poisoned packet's flow lives on shard 0, which also held the whole of a restored snapshot's added-up tables.
const POISON = 19002;

test('a trap in a file outside the element folders is placed at its line as it is now: recompiled under the same hash, the module\'s source map is read again', async () => {
  const dir = tempDir();
  try {
    writeFaultyConfig(dir, ['-n', '1000', '-f', '10', '--seed', '3'], 500, 'crash');
    const folder = join(dir, 'elements', 'fault-on');
    mkdirSync(folder, { recursive: true });
    mkdirSync(join(dir, 'lib'));
    const fixture = join(ROOT, 'test/fixtures/crash-elements/fault-on');
    writeFileSync(join(folder, 'element.ts'), readFileSync(join(fixture, 'element.ts')));
    writeFileSync(join(folder, 'process.ts'), `import { trap } from "../../lib/trap";\n${readFileSync(join(fixture, 'process.ts'), 'utf8').replace('unreachable()', 'trap()')}`);
    writeFileSync(join(dir, 'c.yaml'), readFileSync(join(dir, 'c.yaml'), 'utf8').replace(/element_dirs: \[.*\]/, 'element_dirs: [./elements]'));
    const trapAfter = async (comments: number) => {
      writeFileSync(join(dir, 'lib', 'trap.ts'), `${'// a line\n'.repeat(comments)}export function trap(): void { unreachable(); }\n`);
      const pipeline = await Pipeline.create(await loadConfig(join(dir, 'c.yaml')), { threads: 'inline', log: () => {} });
      return (await pipeline.run()).crashes[0].source;
    };
    // A line count no earlier run compiled: the first compiles, whatever the cache holds.
    const lines = 1 + Math.floor(Math.random() * 1000);
    assert.is(await trapAfter(lines), `${join(dir, 'lib', 'trap.ts')}:${lines + 1}:32`);
    assert.is(await trapAfter(lines + 3), `${join(dir, 'lib', 'trap.ts')}:${lines + 4}:32`, 'the new module\'s map, not the one read before');
  } finally {
    removeDir(dir);
  }
});

test('a crashing shard is reported, restarted from the snapshot, and the others run on', async () => {
  const dir = tempDir();
  try {
    // 20k packets 100 us apart (2 s at timing: original); packet POISON gets the TTL that crashes.
    const poisonHex = writeFaultyConfig(dir, ['-n', String(PACKETS), '-f', '300', '--gap-us', '100', '--seed', '9'], POISON, 'crash', ', timing: original',
      'stats: { type: FlowStats }\ndrop: { type: Discard }');
    const logs: string[] = [];
    const pipeline = await Pipeline.create(await loadConfig(join(dir, 'c.yaml')), { shards: 2, log: (m) => logs.push(m) });
    const running = pipeline.run();
    while (pipeline.packetsIn() < PACKETS / 2) await new Promise((r) => setTimeout(r, 20));
    const snapshot = await pipeline.snapshot();
    const result = await running;

    assert.is(pipeline.crashReports.length, 1);
    const report = pipeline.crashReports[0];
    assert.is(report.element, 'fault');
    assert.is(report.type, 'FaultOn');
    assert.match(report.error, /unreachable/);
    assert.ok(report.packets_lost >= 1 && report.packets_lost <= 256, `lost ${report.packets_lost}: the crashing batch only`);
    assert.ok(report.from_snapshot === snapshot.date && report.restored_entries > 0, 'restarted from the snapshot');
    // The poisoned packet is the one the report shows when it heads its batch; it is always in the lost batch.
    assert.ok(report.first_packet.length > 0);
    if (report.packets_lost === 1) assert.is(report.first_packet, poisonHex);
    assert.match(logs.join('\n'), /shard \d crashed in fault \(FaultOn\)/);
    assert.is(result.elements.drop.in, PACKETS - report.packets_lost, 'every other packet went through');
    assert.equal(result.crashes, [report], 'the run result tells of the crash');
    assert.is(report.shard, 0);
    // Per-source counts add up over shards: the restarted shard takes back its own part of the snapshot, not
    // everyone's (that counted the others' packets twice).
    const sources = (await pipeline.snapshot()).elements.stats.tables.sources;
    const records = Buffer.from(sources.records, 'base64');
    let counted = 0n;
    for (let at = 0; at < records.length; at += sources.record_size) counted += records.readBigUInt64LE(at + 32);
    const total = result.elements.stats.total_packets as number;
    assert.ok(Number(counted) <= total, `${counted} per-source packets, ${total} in all`);
  } finally {
    removeDir(dir);
  }
});

test('inline (the I/O thread runs the shard): a crash is reported with its element and the run goes on', async () => {
  const dir = tempDir();
  try {
    writeFaultyConfig(dir, ['-n', '5000', '-f', '50', '--seed', '3'], 2500, 'crash');
    const logs: string[] = [];
    const pipeline = await Pipeline.create(await loadConfig(join(dir, 'c.yaml')), { threads: 'inline', log: (m) => logs.push(m) });
    const result = await pipeline.run();
    assert.is(result.crashes.length, 1);
    assert.is(result.crashes[0].element, 'fault');
    // Where in process.ts: the compiler's source map, looked up at the trap's offset in the module.
    const process = join(ROOT, 'test/fixtures/crash-elements/fault-on/process.ts');
    const lines = readFileSync(process, 'utf8').split('\n');
    const line = lines.findIndex((l) => l.includes('unreachable()'));
    const where = `${process}:${line + 1}:${lines[line].indexOf('unreachable()') + 1}`;
    assert.is(result.crashes[0].source, where);
    assert.ok(logs.join('\n').includes(`shard 0 crashed in fault (FaultOn): unreachable at ${where}; first packet`), logs.join('\n'));
    assert.is(result.elements.drop.in, 5000 - result.crashes[0].packets_lost, 'the packets after the crash went through');
    // On the command line: the table says so, and the run exits 1.
    const run = cli(['run', join(dir, 'c.yaml'), '--inline']);
    assert.is(run.status, 1, run.stderr);
    assert.ok(run.stdout.includes(`\nshard 0 crashed in fault (FaultOn): unreachable at ${where}; `), run.stdout);
  } finally {
    removeDir(dir);
  }
});

test('a crashed batch\'s slots come back to the pool: a run with more crashes than its pool has batches goes to its end', async () => {
  const dir = tempDir();
  try {
    // 1024 slots, and 40 crashes of up to 256 packets each.
    const poisoned = Array.from({ length: 40 }, (_, i) => 100 + 300 * i);
    writeFaultyConfig(dir, ['-n', '12200', '-f', '50', '--seed', '3'], poisoned, 'crash', '', 'drop: { type: Discard }', 'pool_slots: 1024');
    for (const threads of ['inline', 'worker'] as const) {
      const pipeline = await Pipeline.create(await loadConfig(join(dir, 'c.yaml')), { shards: 1, threads, stallMs: 3000, log: () => {} });
      const result = await pipeline.run();
      assert.is(result.crashes.length, poisoned.length, threads);
      const lost = result.crashes.reduce((n, c) => n + c.packets_lost, 0);
      assert.is(result.elements.drop.in, 12200 - lost, `${threads}: every packet went through or was counted lost`);
      assert.ok(metrics(pipeline).includes(`\nwirepath_crashes_total{} 40\n`), 'the crashes in /metrics');
      assert.ok(metrics(pipeline).includes(`\nwirepath_crash_packets_lost_total{} ${lost}\n`), 'and the packets they lost');
      const v = pipeline.arena.view;
      const stashed = threads === 'worker' ? v.getUint32((pipeline as any).shards[0].memory.stash, true) : 0;
      assert.is(v.getUint32((pipeline as any).freeStack, true) + stashed, 1024, `${threads}: every slot is free at the end`);
    }
  } finally {
    removeDir(dir);
  }
});

test('packets a crashed batch had sent to a sink before the trap are written, not lost', async () => {
  const dir = tempDir();
  try {
    // The Tee's packets reach the capture before FaultOn runs on its copies.
    writeFaultyConfig(dir, ['-n', '3000', '-f', '50', '--seed', '3'], [500, 1500, 2500], 'crash', '', 'drop: { type: Discard }');
    const yaml = readFileSync(join(dir, 'c.yaml'), 'utf8').replace('  src: { type: FromPcap, file: trace.pcap }', `  src: { type: FromPcap, file: trace.pcap }
  tee: { type: Tee }
  capture: { type: ToPcap, file: copies.pcap }`).replace('- src -> fault -> drop', '- src -> tee -> capture\n  - tee[1] -> fault -> drop');
    writeFileSync(join(dir, 'c.yaml'), yaml);
    for (const threads of ['inline', 'worker'] as const) {
      const result = await (await Pipeline.create(await loadConfig(join(dir, 'c.yaml')), { shards: 1, threads, log: () => {} })).run();
      assert.is(result.crashes.length, 3, threads);
      assert.ok(result.crashes.every((c) => c.packets_lost > 0), threads);
      assert.is(result.elements.capture.in, 3000, threads);
      const records = Number(execFileSync('tcpdump', ['-r', join(dir, 'copies.pcap'), '-nq'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim().split('\n').length);
      assert.is(records, 3000, `${threads}: every copy written`);
    }
  } finally {
    removeDir(dir);
  }
});

test('a shard whose element never returns fails the run after the stall time, naming the element', async () => {
  const dir = tempDir();
  try {
    writeFaultyConfig(dir, ['-n', '5000', '-f', '50', '--seed', '3'], 3000, 'spin');
    // One shard, and one of two (the other one idle or busy, the stuck one is named).
    for (const shards of [1, 2]) {
      const pipeline = await Pipeline.create(await loadConfig(join(dir, 'c.yaml')), { shards, threads: 'worker', stallMs: 1000 });
      const started = performance.now();
      const error = await pipeline.run().then(() => undefined, (e: Error) => e);
      assert.ok(error, 'the run fails instead of hanging');
      assert.match(error!.message, /^shard \d has taken no packet for \d+ s, \d+ packets waiting; the last element it ran is 'fault' \(FaultOn\)/);
      // At most the packets after the one it spins on (the count took in the free slots sent to refill its stash).
      assert.ok(Number(/(\d+) packets waiting/.exec(error!.message)![1]) <= 2000, error!.message);
      assert.ok(performance.now() - started < 15_000, 'within the stall time and the stop of the worker');
    }
    // A snapshot asked for while the run is stuck (it waits for the shards to go idle) is answered once the run has failed.
    const stalled = await Pipeline.create(await loadConfig(join(dir, 'c.yaml')), { shards: 1, threads: 'worker', stallMs: 1000 });
    const failing = stalled.run().then(() => undefined, (e: Error) => e);
    while (stalled.packetsIn() < 3000) await new Promise((r) => setTimeout(r, 20));
    const snapshot = stalled.snapshot();
    assert.match((await failing)!.message, /^shard 0 has taken no packet/);
    assert.ok((await snapshot).elements, 'the snapshot of the failed run');
    // A reload asked for while the run is stuck waits for its end, and is told why nothing took over.
    const stuck = await Pipeline.create(await loadConfig(join(dir, 'c.yaml')), { shards: 1, threads: 'worker', stallMs: 1000 });
    const supervisor = new Supervisor(stuck, join(dir, 'c.yaml'), {}, { shards: 1, threads: 'worker', stallMs: 1000 });
    const running = supervisor.run().then(() => undefined, (e: Error) => e);
    while (stuck.packetsIn() < 3000) await new Promise((r) => setTimeout(r, 20));
    const reload = supervisor.reload(readFileSync(join(dir, 'c.yaml'), 'utf8')).then(() => undefined, (e: Error) => e);
    const error = await running;
    assert.match(error!.message, /^shard 0 has taken no packet/);
    assert.is((await reload)?.message, error!.message);
  } finally {
    removeDir(dir);
  }
});

/**
 * Runs `yaml` over a generated trace of `packets` on one shard worker with a stall time of 1 s (`prepare` may
 * change the pipeline first); returns the error the run fails with.
 */
async function stalledRun(packets: number, yaml: string, prepare: (p: Pipeline) => void = () => {}): Promise<Error | undefined> {
  const dir = tempDir();
  try {
    execFileSync('python3', [join(ROOT, 'bench/gen-pcap.py'), '-n', String(packets), '-f', '20', '-o', join(dir, 'trace.pcap'), '--seed', '5']);
    writeFileSync(join(dir, 'c.yaml'), yaml);
    const pipeline = await Pipeline.create(await loadConfig(join(dir, 'c.yaml')), { shards: 1, threads: 'worker', stallMs: 1000 });
    prepare(pipeline);
    return await pipeline.run().then(() => undefined, (e: Error) => e);
  } finally {
    removeDir(dir);
  }
}

test('a run whose packet slots went missing fails after the stall time and says so', async () => {
  const error = await stalledRun(2000, `
elements:
  src: { type: FromPcap, file: trace.pcap }
  drop: { type: Discard }
connections:
  - src -> drop
`, (pipeline) => {
    // Every free slot taken away (as a leak would): the source can read nothing, no shard holds a packet.
    const freeStack = pipeline.arena.view.getUint32((pipeline as any).ioContext + IoContext.freeStack, true);
    pipeline.arena.view.setUint32(freeStack, 0, true);
  });
  assert.ok(error, 'the run fails instead of hanging');
  assert.match(error!.message, /^no packet has moved for \d+ s while a source waits for packet slots: 0 of 16384 slots are free/);
});

test('an element that loses packets is named when the slots run out', async () => {
  const error = await stalledRun(3000, `
element_dirs: [${join(ROOT, 'test/fixtures/crash-elements')}]
pool_slots: 1024
elements:
  src: { type: FromPcap, file: trace.pcap }
  check: { type: CheckIPHeader }
  lose: { type: FaultOn, ttl: 64, fault: lose }
  drop: { type: Discard }
connections:
  - src -> check -> lose -> drop
  - check[1] -> drop
`);
  assert.instance(error, StallError);
  assert.match(error!.message, /0 of 1024 slots are free/);
  assert.match(error!.message, /passed on fewer packets than they took: 'lose' \(FaultOn\) \d+ in, 0 out$/, 'CheckIPHeader passed all it took: not named');
});

test('an element that hands a packet on twice (drops it and pushes it too) is told of at the end of the run', async () => {
  const dir = tempDir();
  try {
    writeFaultyConfig(dir, ['-n', '2000', '-f', '20', '--seed', '3'], [100, 900, 1700], 'twice');
    for (const threads of ['inline', 'worker'] as const) {
      const logs: string[] = [];
      await (await Pipeline.create(await loadConfig(join(dir, 'c.yaml')), { shards: 1, threads, log: (m) => logs.push(m) })).run();
      assert.match(logs.join('\n'), /\d+ packet slots? came back more than once: an element handed a packet on twice \(pushed it to two outputs, or dropped it and pushed it too\)/, threads);
    }
  } finally {
    removeDir(dir);
  }
});

test('a packet whose length an element made run past its slot is not written by a sink, but counted and said', async () => {
  const dir = tempDir();
  try {
    // Too long, or taken below 0 (it wraps round: the sum of offset and length came round under the slot's size).
    for (const [fault, threads] of [['overlong', 'inline'], ['overlong', 'worker'], ['underflow', 'worker']] as const) {
      writeFaultyConfig(dir, ['-n', '2000', '-f', '20', '--seed', '3'], [100, 900, 1700], fault, '', 'out: { type: ToPcap, file: out.pcap }');
      const logs: string[] = [];
      const pipeline = await Pipeline.create(await loadConfig(join(dir, 'c.yaml')), { shards: 1, threads, log: (m) => logs.push(m) });
      const result = await pipeline.run();
      assert.is(pipeline.runtimeStats().overlong, 3, `${fault} ${threads}`);
      assert.is(result.elements.out.packets, 1997, `${threads}: the others written`);
      assert.is(readFileSync(join(dir, 'out.pcap')).length, 24 + 1997 * 80, `${threads}: no bytes past a slot`);
      assert.ok(logs.includes("3 packets not given to a sink: an element made its length run past its slot (the bytes there are other packets'); check packetRoom(p) before growing a frame"), logs.join('\n'));
    }
  } finally {
    removeDir(dir);
  }
});

test('a shard worker that fails before it is ready ends its start with the error, not a hang', async () => {
  // A module importing a function the worker does not provide: instantiating it throws in the worker.
  const module = new WebAssembly.Module(new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x04, 0x01, 0x60, 0x00, 0x00,
    0x02, 0x0f, 0x01, 0x03, ...Buffer.from('env'), 0x07, ...Buffer.from('missing'), 0x00, 0x00,
  ]));
  const arena = new MemoryArena();
  const shard = new Shard(0, { context: 0, descriptor: 0, rxRing: arena.alloc(4096, 64), outRing: 0, stash: 0, blocks: [] }, arena);
  let timer!: NodeJS.Timeout;
  const hang = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error('the start still waits after 20 s')), 20_000); });
  await Promise.race([shard.startWorker(module, 256, 'trace', false), hang]).finally(() => clearTimeout(timer));
  assert.ok(shard.failed, 'the failure is the shard\'s');
  assert.match(shard.failed!.message, /missing/);
  await shard.stop();
});

test('an operation asked of a shard whose worker has stopped ends with an error (a scale event waited on it for good)', async () => {
  const arena = new MemoryArena();
  const shard = new Shard(3, { context: 0, descriptor: 0, rxRing: arena.alloc(4096, 64), outRing: 0, stash: 0, blocks: [] }, arena);
  await shard.stop();
  const answer = await Promise.race([shard.run(0, [0]).then(() => 'answered', (e: Error) => e.message), new Promise((r) => setTimeout(() => r('still waiting'), 5000).unref())]);
  assert.is(answer, 'shard 3 stopped before it answered');
});

test('a run stopped by a signal after a shard crashed exits 1, not 130: the lost packets are what its status must not hide', async () => {
  const dir = tempDir();
  try {
    // 20k packets 100 us apart: 2 s at timing: original, the crash at the 100th.
    writeFaultyConfig(dir, ['-n', '20000', '-f', '50', '--gap-us', '100', '--seed', '3'], 100, 'crash', ', timing: original');
    const child = spawn(process.execPath, [join(ROOT, 'bin/wirepath.js'), 'run', join(dir, 'c.yaml'), '--inline'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    const crashed = new Promise<void>((resolve) => child.stderr.on('data', (d) => { stderr += d; if (stderr.includes('crashed')) resolve(); }));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await Promise.race([crashed, exited]);
    child.kill('SIGINT');
    assert.is(await exited, 1, stderr);
  } finally {
    removeDir(dir);
  }
});

test.run();
