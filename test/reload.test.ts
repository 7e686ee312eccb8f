// `wirepath ctl reload` swaps the running config: an invalid one changes nothing; a valid one keeps
// the state of the elements whose name and type stay.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { spawn, spawnSync, execFile } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, readdirSync, readlinkSync, renameSync, writeFileSync } from 'node:fs';
import { tempDir, removeDir, readPcap, writePcap, ROOT } from './helpers.ts';
import { loadConfig } from '../engine/config.ts';
import { Pipeline, type FailedRun } from '../engine/pipeline.ts';
import { Supervisor } from '../engine/supervisor.ts';

const wirepath = (args: string[]) => new Promise<{ status: number; stdout: string; stderr: string }>((resolve) => {
  execFile(process.execPath, [join(ROOT, 'bin/wirepath.js'), ...args], { timeout: 60_000 }, (error, stdout, stderr) => {
    resolve({ status: error ? (typeof error.code === 'number' ? error.code : -1) : 0, stdout, stderr });
  });
});

const config = (extra: string) => `
elements:
  gen: { type: Generator, count: 0, flows: 50, timing: original, rate: 20000 }
  stats: { type: FlowStats }
${extra}
  drop: { type: Discard }
connections:
  - gen -> stats -> ${extra ? 'count -> ' : ''}drop
`;

test('reload: an invalid config changes nothing; a valid one keeps the state of kept elements', async () => {
  const dir = tempDir();
  const child = spawn(process.execPath, [join(ROOT, 'bin/wirepath.js'), 'run', join(dir, 'a.yaml'), '--control', '0', '--json', '--shards', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  child.stdout.on('data', (d) => { stdout += d; });
  let after = 0;
  try {
    writeFileSync(join(dir, 'a.yaml'), config(''));
    writeFileSync(join(dir, 'bad.yaml'), config('  count: { type: Countr }'));
    writeFileSync(join(dir, 'b.yaml'), config('  count: { type: Counter }'));
    let stderr = '';
    child.stderr.on('data', (d) => { stderr += d; });
    while (!/token (\w+)/.test(stderr)) await new Promise((r) => setTimeout(r, 50));
    const [, url, token] = /control API on (\S+), token (\w+)/.exec(stderr)!;
    const ctl = (...args: string[]) => wirepath(['ctl', ...args, '--control', url, '--token', token]);
    const packets = async () => Number(JSON.parse((await ctl('read', 'stats.total_packets')).stdout).value);
    while ((await packets()) < 500) await new Promise((r) => setTimeout(r, 50));

    const bad = await ctl('reload', join(dir, 'bad.yaml'));
    assert.is(bad.status, 1);
    assert.match(bad.stderr, /400 the new config is invalid; nothing changed/);
    assert.match(bad.stderr, /bad\.yaml:\d+:\d+: unknown element type 'Countr'/, 'the error names the new file');
    // Posted without its file: the error is the posted text's, not the running config's (a.yaml was named).
    const posted = await fetch(`${url}/reload`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: JSON.stringify({ config: config('  count: { type: Countr }') }) });
    assert.is(posted.status, 400);
    assert.match((await posted.json()).error, /\n<posted config>:\d+:\d+: unknown element type 'Countr'/);
    // A config elsewhere: its relative paths are its own. A capture that does not exist there changes nothing.
    mkdirSync(join(dir, 'sub'));
    writeFileSync(join(dir, 'sub', 'missing.yaml'), 'elements:\n  src: { type: FromPcap, file: ../nowhere.pcap }\n  drop: { type: Discard }\nconnections:\n  - src -> drop\n');
    const missing = await ctl('reload', join(dir, 'sub', 'missing.yaml'));
    assert.is(missing.status, 1);
    // Placed at the element in the new config, with the hint, as run says it.
    assert.ok(missing.stderr.includes(`400 ${join(dir, 'sub', 'missing.yaml')}:2:3: src: cannot open ${join(dir, 'nowhere.pcap')}: ENOENT\n  hint: check the file parameter`), missing.stderr);
    // A missing config is exit 2, as for run.
    const nope = await ctl('reload', join(dir, 'nope.yaml'));
    assert.is(nope.status, 2);
    assert.ok(nope.stderr.startsWith(`config file ${join(dir, 'nope.yaml')} does not exist\n  hint: give the path of a YAML config`), nope.stderr);
    // A device that is not there, as its opening would find, before the running config stops.
    writeFileSync(join(dir, 'device.yaml'), config('').replace('  drop: { type: Discard }', '  drop: { type: ToDevice, device: wpnosuch0 }'));
    const device = await ctl('reload', join(dir, 'device.yaml'));
    assert.is(device.status, 1);
    assert.match(device.stderr, /400 \S+device\.yaml:\d+:\d+: drop: wpnosuch0: no such device in this network namespace\n {2}hint: /);
    // A capture or a block log under a regular file (ENOTDIR): before, the reload was answered and the run then ended.
    writeFileSync(join(dir, 'capture.yaml'), config('').replace('  drop: { type: Discard }', '  drop: { type: ToPcap, file: a.yaml/sub/out.pcap }'));
    const capture = await ctl('reload', join(dir, 'capture.yaml'));
    assert.is(capture.status, 1);
    assert.ok(capture.stderr.includes(`400 ${join(dir, 'capture.yaml')}:6:3: drop: cannot write ${join(dir, 'a.yaml/sub/out.pcap')}: ENOTDIR\n  hint: check that the folder`), capture.stderr);
    // In the kernel's own filesystems no file can be made, though root passes access(W_OK) there: before, the reload was answered and the run then ended.
    writeFileSync(join(dir, 'sysfs.yaml'), config('').replace('  drop: { type: Discard }', '  drop: { type: ToPcap, file: /sys/wirepath-nope.pcap }'));
    const sysfs = await ctl('reload', join(dir, 'sysfs.yaml'));
    assert.is(sysfs.status, 1);
    assert.ok(sysfs.stderr.includes(`400 ${join(dir, 'sysfs.yaml')}:6:3: drop: cannot write /sys/wirepath-nope.pcap: EACCES`), sysfs.stderr);
    writeFileSync(join(dir, 'log.yaml'), `elements:
  gen: { type: Generator, count: 0, flows: 50, timing: original, rate: 20000 }
  back: { type: Generator, count: 0, flows: 5, timing: original, rate: 10 }
  nat: { type: NAT, pool: [203.0.113.0/24], log: a.yaml/blocks.log }
  drop: { type: Discard }
connections:
  - gen -> nat -> drop
  - back -> [1]nat
  - nat[1] -> drop
`);
    const log = await ctl('reload', join(dir, 'log.yaml'));
    assert.is(log.status, 1);
    assert.ok(log.stderr.includes(`nat: cannot write the block log ${join(dir, 'a.yaml/blocks.log')}: ENOTDIR`), log.stderr);
    const before = await packets();
    assert.ok(before >= 500, 'still running the old config');
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(await packets() > before, 'and still counting');

    const scaled = await ctl('scale', '2');
    assert.is(scaled.status, 0, scaled.stderr);
    const inBefore = JSON.parse((await ctl('stats')).stdout).elements.stats.in;
    const good = await ctl('reload', join(dir, 'b.yaml'));
    assert.is(good.status, 0, good.stderr);
    assert.equal(JSON.parse(good.stdout), { kept: ['stats', 'drop'], restarted: [], reopened: ['gen'], added: ['count'], removed: [] });
    after = await packets();
    assert.ok(after >= before, `FlowStats kept its count (${before} -> ${after})`);
    // Its packet counts go on with its state (they started from 0, behind its own total_packets, and /metrics went back).
    const { stats } = JSON.parse((await ctl('stats')).stdout).elements;
    // (Read a moment apart while shards run: a batch or two of slack.)
    assert.ok(stats.in >= inBefore && stats.in + 1024 >= stats.total_packets, `packets in kept on: ${inBefore} -> ${stats.in}, total_packets ${stats.total_packets}`);
    assert.equal(JSON.parse((await ctl('stats')).stdout).scale_events.map((r: { from: number; to: number }) => [r.from, r.to]), [[1, 2]],
      'the scale event before the reload is still reported');
    // A reset zeroes the packet counts with the counters, the configs' before the reload too (it left those standing).
    assert.is((await ctl('write', 'stats.reset', '')).status, 0);
    const reset = JSON.parse((await ctl('stats')).stdout).elements.stats;
    assert.ok(reset.in < inBefore && reset.in <= reset.total_packets + 1024, `packets in after the reset: ${reset.in} (before it ${stats.in}), total_packets ${reset.total_packets}`);
    const graph = JSON.parse((await ctl('graph')).stdout);
    assert.ok(graph.elements.some((e: { name: string }) => e.name === 'count'), 'the new element runs');
  } finally {
    child.kill('SIGINT');
    await new Promise((r) => child.on('exit', r));
    removeDir(dir);
  }
  // The run's totals are those of both configs, not of the last one alone.
  assert.ok(JSON.parse(stdout).packets_in >= after, `packets in over the whole run (${JSON.parse(stdout).packets_in}) >= ${after}`);
});

test('reload: a ToPcap goes on with the capture it wrote before; one the config before did not have starts its file anew', async () => {
  const dir = tempDir();
  try {
    const file = join(dir, 'cap.yaml');
    const text = (tee: string) => `elements:\n  gen: { type: Generator, count: 0, flows: 10, timing: original, rate: 20000 }\n  out: { type: ToPcap, file: cap.pcap }\n`
      + (tee ? '  tee: { type: Tee }\n  extra: { type: ToPcap, file: other.pcap }\n' : '') + `connections:\n  - gen -> ${tee ? 'tee -> ' : ''}out\n${tee}`;
    writeFileSync(file, text(''));
    // A capture from some earlier run where the added ToPcap writes.
    writePcap(join(dir, 'other.pcap'), [{ data: Buffer.alloc(60), sec: 1, usec: 0 }]);
    const options = { shards: 1 };
    const supervisor = new Supervisor(await Pipeline.create(await loadConfig(file), options), file, {}, options);
    const running = supervisor.run();
    const busy = async () => { const p = supervisor.pipeline(); while (p.packetsIn() < 1000) await new Promise((r) => setTimeout(r, 10)); };
    try {
      await busy();
      assert.equal(await supervisor.reload(text('  - tee[1] -> extra\n')), { kept: [], restarted: [], reopened: ['gen', 'out'], added: ['tee', 'extra'], removed: [] });
      await busy();
      // Rotated before the next reload: the file starts anew, with its header.
      renameSync(join(dir, 'cap.pcap'), join(dir, 'cap.1.pcap'));
      assert.equal(await supervisor.reload(text('  - tee[1] -> extra\n')), { kept: ['tee'], restarted: [], reopened: ['gen', 'out', 'extra'], added: [], removed: [] });
      await busy();
      // An element whose type changes is another element: the one of that name is gone, and a new one came.
      assert.equal(await supervisor.reload(text('  - tee[1] -> extra\n').replace('tee: { type: Tee }', 'tee: { type: Counter }').replace('  - tee[1] -> extra\n', '').replace('  extra: { type: ToPcap, file: other.pcap }\n', '')),
        { kept: [], restarted: [], reopened: ['gen', 'out'], added: ['tee'], removed: ['tee', 'extra'] });
      await busy();
    } finally {
      supervisor.stop();
    }
    const result = await running;
    const records = [...readPcap(join(dir, 'cap.1.pcap')).records, ...readPcap(join(dir, 'cap.pcap')).records];
    const extra = readPcap(join(dir, 'other.pcap')).records;
    assert.is(records.length + extra.length, result.packets_out, 'the packets of both configs');
    assert.ok(records.length >= 2000);
    assert.ok(extra.length > 0 && extra.every((r) => r.data.some((b) => b !== 0)), 'the added one started its file anew: the earlier run\'s record is gone');
  } finally {
    removeDir(dir);
  }
});

test('the run command\'s --set overrides apply to a reloaded config too, to the elements it still has', async () => {
  const dir = tempDir();
  try {
    const file = join(dir, 'gen.yaml');
    writeFileSync(file, config(''));
    const logs: string[] = [];
    const options = { shards: 1, log: (m: string) => logs.push(m) };
    const load = { overrides: ['gen.flows=7'] };
    const supervisor = new Supervisor(await Pipeline.create(await loadConfig(file, load), options), file, load, options);
    const running = supervisor.run();
    const flows = () => supervisor.pipeline().graph.byName.get('gen')?.instance.params.flows;
    try {
      assert.is(flows(), 7);
      await supervisor.reload(config('').replace('flows: 50', 'flows: 60'));
      assert.is(flows(), 7, 'the command line wins over the new file');
      assert.ok(logs.includes("reload: the run command's --set overrides apply to the new config too: gen.flows"), logs.join('\n'));
      // A config without the element, or with another type by its name: nothing to override, not an error.
      await supervisor.reload(config('').replaceAll('gen', 'other'));
      assert.is(flows(), undefined);
      assert.is(supervisor.pipeline().graph.byName.get('other')!.instance.params.flows, 50);
      writePcap(join(dir, 'in.pcap'), [{ data: Buffer.alloc(60), sec: 1, usec: 0 }]);
      await supervisor.reload('elements:\n  gen: { type: FromPcap, file: in.pcap, loop: true }\n  drop: { type: Discard }\nconnections:\n  - gen -> drop\n');
      assert.is(supervisor.pipeline().graph.byName.get('gen')!.type.type, 'FromPcap');
    } finally {
      supervisor.stop();
      await running;
    }
  } finally {
    removeDir(dir);
  }
});

test('reload: a new config whose run fails as it starts (a FIFO nothing reads) ends the run with its error, not marked interrupted', async () => {
  const dir = tempDir();
  try {
    const file = join(dir, 'a.yaml');
    writeFileSync(file, config(''));
    spawnSync('mkfifo', [join(dir, 'fifo')]);
    const options = { shards: 1 };
    const supervisor = new Supervisor(await Pipeline.create(await loadConfig(file), options), file, {}, options);
    const running = supervisor.run().then(() => undefined, (e: FailedRun) => e);
    while (supervisor.pipeline().packetsIn() < 1000) await new Promise((r) => setTimeout(r, 10));
    await supervisor.reload(config('').replace('  drop: { type: Discard }', '  drop: { type: ToPcap, file: fifo }'));
    const failed = await running;
    assert.match(String(failed), /cannot write .*fifo: a FIFO that nothing reads/);
    assert.ok(failed!.result!.packets_in >= 1000, 'the first config\'s packets counted');
    assert.is(failed!.result!.interrupted, false, 'nobody stopped it: the reload handed over');
  } finally {
    removeDir(dir);
  }
});

test('reload: an element whose handover throws ends the run with its error, not marked interrupted', async () => {
  const dir = tempDir();
  try {
    const fc = join(dir, 'elements', 'flow-count');
    cpSync(join(ROOT, 'test/fixtures/user-elements/flow-count'), fc, { recursive: true });
    const source = readFileSync(join(fc, 'element.ts'), 'utf8');
    writeFileSync(join(fc, 'element.ts'), source.replace('  example:', "  periodic: { everyMs: 1000, run: (view, call) => { if (call === 'handover') throw new Error('no handover'); } },\n  example:"));
    const file = join(dir, 'a.yaml');
    const text = `element_dirs: [elements]\n${config('  count: { type: FlowCount }')}`;
    writeFileSync(file, text);
    const options = { shards: 1 };
    const supervisor = new Supervisor(await Pipeline.create(await loadConfig(file), options), file, {}, options);
    const running = supervisor.run().then(() => undefined, (e: FailedRun) => e);
    while (supervisor.pipeline().packetsIn() < 1000) await new Promise((r) => setTimeout(r, 10));
    await supervisor.reload(text).catch(() => undefined);
    const failed = await running;
    assert.match(String(failed), /no handover/);
    assert.is(failed!.result!.interrupted, false, 'nobody stopped it: the reload did');
  } finally {
    removeDir(dir);
  }
});

test('on a trace\'s time, a reload or a restored snapshot goes on from the clock of the state it carries (it went back to the trace\'s start)', async () => {
  const dir = tempDir();
  try {
    const file = join(dir, 'gen.yaml');
    writeFileSync(file, config(''));
    const options = { shards: 1 };
    const supervisor = new Supervisor(await Pipeline.create(await loadConfig(file), options), file, {}, options);
    const running = supervisor.run();
    const clock = () => supervisor.pipeline().clockNow();
    const packets = () => supervisor.pipeline().packetsIn();
    let snapshot;
    try {
      while (packets() < 4000) await new Promise((r) => setTimeout(r, 10)); // 0.2 s of the Generator's time
      const before = clock();
      await supervisor.reload(config(''));
      while (packets() < 100) await new Promise((r) => setTimeout(r, 10));
      const after = clock();
      assert.ok(after > before, `the clock went on: ${before} -> ${after}`);
      assert.ok(after - before < 200_000_000n, 'from where it was, by the time of the packets since');
      snapshot = await supervisor.pipeline().snapshot();
    } finally {
      supervisor.stop();
      await running;
    }
    const restored = await Pipeline.create(await loadConfig(file), { ...options, clock: 'trace' });
    restored.restore(snapshot);
    const run = restored.run();
    while (restored.packetsIn() < 100) await new Promise((r) => setTimeout(r, 10));
    assert.ok(restored.clockNow() > BigInt(snapshot.clock_ns!), 'a restored snapshot goes on from its clock too');
    restored.stop();
    await run;
  } finally {
    removeDir(dir);
  }
});

test('a restored clock shifts each source by its own first packet: not one that goes on after it, nor one file by another\'s years', async () => {
  const dir = tempDir();
  try {
    const T = 1_767_225_600; // 2026-01-01
    const frames = (sec: number, usecs: number[]) => usecs.map((usec) => ({ data: Buffer.alloc(60, 1), sec, usec }));
    writePcap(join(dir, 'part1.pcap'), frames(T, [100, 200, 500]));
    writePcap(join(dir, 'part2.pcap'), frames(T, [600, 900])); // the same millisecond as part 1's end: it goes on
    writePcap(join(dir, 'old.pcap'), frames(1_262_304_000, [0, 10])); // 2010
    const config = (sources: string[]) => `elements:\n${sources.map((f, i) => `  s${i}: { type: FromPcap, file: ${f}.pcap }\n  o${i}: { type: ToPcap, file: out-${f}.pcap, resolution: ns }\n`).join('')}`
      + `connections:\n${sources.map((_, i) => `  - s${i} -> o${i}\n`).join('')}`;
    const pipeline = async (sources: string[]) => {
      writeFileSync(join(dir, 'c.yaml'), config(sources));
      return Pipeline.create(await loadConfig(join(dir, 'c.yaml')), { threads: 'inline', shards: 1 });
    };
    const first = await pipeline(['part1']);
    await first.run();
    const snapshot = await first.snapshot();
    assert.is(snapshot.clock_ns, String(BigInt(T) * 1_000_000_000n + 999_999n), 'the end of the last packet\'s millisecond');
    const restored = await pipeline(['part2', 'old']);
    restored.restore(snapshot);
    assert.is((await restored.snapshot()).clock_ns, snapshot.clock_ns, 'a snapshot before its first packet carries the carried clock on');
    await restored.run();
    const ns = (f: string) => readPcap(join(dir, `out-${f}.pcap`)).records.map((r) => BigInt(r.sec) * 1_000_000_000n + BigInt(r.frac));
    assert.equal(ns('part2'), [600_000n, 900_000n].map((n) => BigInt(T) * 1_000_000_000n + n), 'a capture that goes on keeps its times');
    const floor = BigInt(snapshot.clock_ns!);
    assert.equal(ns('old'), [floor + 1n, floor + 1n + 10_000n], 'a file of 2010 goes on from the carried clock, its packets as far apart as they were');
  } finally {
    removeDir(dir);
  }
});

test('a reload refused (another in progress, or the pipeline stopping) leaves none of its files open', async () => {
  const dir = tempDir();
  try {
    const file = join(dir, 'gen.yaml');
    writeFileSync(file, config(''));
    const capture = join(dir, 'in.pcap');
    writePcap(capture, [{ data: Buffer.alloc(60), sec: 1, usec: 0 }]);
    const openOnCapture = () => readdirSync('/proc/self/fd').filter((fd) => { try { return readlinkSync(`/proc/self/fd/${fd}`) === capture; } catch { return false; } }).length;
    const options = { shards: 1 };
    const supervisor = new Supervisor(await Pipeline.create(await loadConfig(file), options), file, {}, options);
    const running = supervisor.run();
    while (supervisor.pipeline().packetsIn() < 100) await new Promise((r) => setTimeout(r, 10));
    // Two reloads at once: the second is refused, and leaves no file open either.
    const withCapture = (name: string) => `elements:\n  gen: { type: Generator, count: 0, flows: 50, timing: original, rate: 20000 }\n  src: { type: FromPcap, file: ${name}, loop: true }\n`
      + '  drop: { type: Discard }\nconnections:\n  - gen -> drop\n  - src -> drop\n';
    writePcap(join(dir, 'other.pcap'), [{ data: Buffer.alloc(60), sec: 1, usec: 0 }]);
    const outcome = (p: Promise<unknown>) => p.then(() => 'taken over', (e: Error) => e.message);
    const both = await Promise.all([outcome(supervisor.reload(withCapture('other.pcap'))), outcome(supervisor.reload(withCapture('in.pcap')))]);
    // On a busy machine the first may be over before the second's config is built: then both take over, one after the other.
    assert.ok(both.includes('taken over') && both.every((o) => o === 'taken over' || o === 'a reload is already in progress'), both.join());
    // A scale event asked for while a reload makes its config is refused: the new pipeline would undo it unsaid.
    while (supervisor.pipeline().packetsIn() < 100) await new Promise((r) => setTimeout(r, 10));
    const making = outcome(supervisor.reload(withCapture('other.pcap')));
    const scaled = await supervisor.pipeline().scale(2).then(() => 'scaled', (e: Error) => e.message);
    assert.match(scaled, /^a reload is putting a new config in place, which runs on its own shard count/, scaled);
    assert.is(await making, 'taken over');
    const open = (file: string) => readdirSync('/proc/self/fd').filter((fd) => { try { return readlinkSync(`/proc/self/fd/${fd}`) === join(dir, file); } catch { return false; } }).length;
    assert.is(open('in.pcap') + open('other.pcap'), 1, 'descriptors open on the captures: the running config\'s only');
    // The new config reads the capture; the stop comes while it is built.
    const reload = supervisor.reload(`elements:\n  src: { type: FromPcap, file: in.pcap, loop: true }\n  drop: { type: Discard }\nconnections:\n  - src -> drop\n`)
      .then(() => 'taken over', (e: Error) => e.message);
    supervisor.stop();
    await running;
    assert.match(await reload, /is stopping|has ended/);
    assert.is(openOnCapture(), 0, 'descriptors open on the capture');
  } finally {
    removeDir(dir);
  }
});

test.run();
