// The NAT's handlers through the control API and `wirepath ctl` while traffic flows on two shards:
// a subscriber's mappings (wherever its shard), blocks per external address, drops by reason.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { tempDir, removeDir, cliAsync } from './helpers.ts';
import { loadConfig } from '../engine/config.ts';
import { Pipeline } from '../engine/pipeline.ts';
import { startControl, type ControlServer } from '../engine/control.ts';
import { formatIPv4 } from '../engine/params.ts';

const dir = tempDir();
let pipeline: Pipeline;
let control: ControlServer;
let running: Promise<unknown>;

test.before(async () => {
  const file = join(dir, 'nat.yaml');
  writeFileSync(file, `
elements:
  gen: { type: Generator, count: 0, flows: 500, protocol: udp, timing: original, rate: 50000, steer: nat }
  side: { type: Classifier, patterns: ['src net 100.64.0.0/10', '-'] }
  nat: { type: NAT, pool: [203.0.113.0/28] }
  drop: { type: Discard }
connections:
  - gen -> side
  - side[0] -> [0]nat
  - side[1] -> [1]nat
  - nat[0] -> drop
  - nat[1] -> drop
`);
  pipeline = await Pipeline.create(await loadConfig(file), { shards: 2 });
  running = pipeline.run();
  control = await startControl({ pipeline: () => pipeline }, { port: 0, token: 'secret-token' });
  // The shard workers start after the first packets are queued: wait for the subscribers themselves.
  while (Number(pipeline.view('nat').read('subscribers')) < 400) await new Promise((r) => setTimeout(r, 20));
});

test.after(async () => {
  pipeline.stop();
  await running;
  await control.close();
  removeDir(dir);
});


test('ctl read nat.subscriber ADDRESS lists its mappings, from the shard that owns it; it shows destinations, so it needs the token', async () => {
  const entries = pipeline.view('nat').entries('subscribers');
  assert.ok(entries.length > 100, `subscribers on the shards: ${entries.length} of ${pipeline.view('nat').read('subscribers')}`);
  assert.equal(new Set(entries.map((e) => e.shard)), new Set([0, 1]), 'both shards hold subscribers');
  const address = formatIPv4(entries[0].key[0]);
  const open = await fetch(`${control.url}/elements/nat/subscriber?arg=${address}`);
  assert.is(open.status, 401);
  assert.match((await open.json()).error, /nat\.subscriber shows what users do: send the token/);
  const wrong = await fetch(`${control.url}/elements/nat/subscriber?arg=${address}`, { headers: { authorization: 'Bearer not-it' } });
  assert.is(wrong.status, 401);
  assert.match((await wrong.json()).error, /nat\.subscriber shows what users do: the token sent is not the pipeline's/);
  // A second argument was ignored: the answer was for the first alone.
  const two = await fetch(`${control.url}/elements/nat/subscriber?arg=${address}&arg=100.64.0.1`, { headers: { authorization: 'Bearer secret-token' } });
  assert.is(two.status, 400);
  assert.match((await two.json()).error, /nat\.subscriber takes one argument, not 2/);
  const r = await cliAsync(['ctl', 'read', 'nat.subscriber', address, '--control', control.url, '--token', 'secret-token']);
  assert.is(r.status, 0, r.stderr);
  const value = JSON.parse(r.stdout).value;
  assert.is(value.subscriber, address);
  assert.match(value.external, /^203\.0\.113\.\d+$/);
  assert.ok(value.mappings.length >= 1, 'its mappings');
  for (const m of value.mappings) {
    assert.is(m.protocol, 'udp');
    assert.is(m.shard, entries[0].shard, 'every mapping lives on the subscriber\'s shard');
    assert.ok(m.external.startsWith(`${value.external}:`), 'on its one external address');
  }
  assert.is(value.blocks.length, 1);
});

test('blocks per external address and drops by reason; a bad subscriber argument is a 400', async () => {
  const blocks = await (await fetch(`${control.url}/elements/nat/blocks`)).json();
  const total = Object.values(blocks.value as Record<string, { udp?: number }>).reduce((n, row) => n + (row.udp ?? 0), 0);
  assert.is(total, Number(pipeline.view('nat').read('subscribers')), 'one UDP block per subscriber');
  const drops = await (await fetch(`${control.url}/elements/nat/drops`)).json();
  assert.is(drops.value.not_inside, 0);
  const bad = await cliAsync(['ctl', 'read', 'nat.subscriber', 'not-an-address', '--control', control.url, '--token', 'secret-token']);
  assert.is(bad.status, 1);
  assert.match(bad.stderr, /400 nat.subscriber: 'not-an-address' is not an IPv4 address/);
});

test('a parameter written while running: refused when a config would refuse it, or when it changes the room the outputs were sized for', async () => {
  const write = (handler: string, value: unknown) => fetch(`${control.url}/elements/nat/${handler}`, {
    method: 'PUT', headers: { authorization: 'Bearer secret-token', 'content-type': 'application/json' }, body: JSON.stringify({ value }),
  });
  const tiny = await write('mtu', 20);
  assert.is(tiny.status, 400);
  assert.match((await tiny.json()).error, /mtu 20 is below IPv4's least MTU, 68/);
  const sizing = await write('mtu', 576);
  assert.is(sizing.status, 400);
  assert.match((await sizing.json()).error, /changes how much room nat's outputs need; change it in the config and reload/);
  const read = async (handler: string) => (await (await fetch(`${control.url}/elements/nat/${handler}`)).json()).value;
  assert.is(await read('mtu'), '0', 'unchanged');
  const fine = await write('icmp_errors', true);
  assert.is(fine.status, 200, 'a parameter that sizes nothing is written');
  assert.is(await read('icmp_errors'), 'true');
});

test.run();
