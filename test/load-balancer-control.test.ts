// LoadBalancer's control plane on a running pipeline: what a reload keeps of the table and refuses, and
// health checks against HTTP servers of this test on 127.0.0.x (no namespaces needed).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tempDir, removeDir } from './helpers.ts';
import { loadConfig } from '../engine/config.ts';
import { Pipeline } from '../engine/pipeline.ts';
import { Supervisor } from '../engine/supervisor.ts';

/** A pipeline with an lb that runs until stopped; `lb` is the rest of its parameters. */
const config = (lb: string) => `
elements:
  gen: { type: Generator, count: 0, timing: original, rate: 1000 }
  lb: { type: LoadBalancer, vips: ['198.18.100.1 tcp 80'], source: 198.18.0.0/24, ${lb} }
  drop: { type: Discard }
connections:
  - gen -> lb -> drop
`;

/** Runs `yaml` under a supervisor (so it can be reloaded) while `body` runs; `logs` collects the pipeline's log lines. */
async function running(yaml: string, body: (supervisor: Supervisor, logs: string[]) => Promise<void>): Promise<void> {
  const dir = tempDir();
  try {
    const file = join(dir, 'lb.yaml');
    writeFileSync(file, yaml);
    const logs: string[] = [];
    const options = { shards: 1, log: (m: string) => logs.push(m) };
    const supervisor = new Supervisor(await Pipeline.create(await loadConfig(file), options), file, {}, options);
    const run = supervisor.run();
    try {
      await body(supervisor, logs);
    } finally {
      supervisor.stop();
      await run;
    }
  } finally {
    removeDir(dir);
  }
}

/** An HTTP server on `host` that answers every request with `status` (0: never answers); port 0 picks a free one. */
function httpServer(host: string, port = 0, status = 200): Promise<Server & { port: number }> {
  const server = createServer((_, response) => { if (status) response.writeHead(status).end(); });
  return new Promise((resolve) => server.listen(port, host, () => resolve(Object.assign(server, { port: (server.address() as AddressInfo).port }))));
}

const close = (server: Server) => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); });

async function waitFor(what: string, done: () => boolean, ms = 10_000): Promise<void> {
  for (const until = Date.now() + ms; !done();) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Health checks of this test's servers: quick, and drained after two failures. */
const checks = (port: number) => `health_check: http, health_port: ${port}, health_interval: 100ms, health_timeout: 300ms, health_failures: 2`;

const health = (supervisor: Supervisor) => supervisor.pipeline().handlerRead('lb', 'health') as Record<string, { streak: number; drained_by_checks: boolean; failure?: string }>;

const weights = (supervisor: Supervisor) => Object.fromEntries((supervisor.pipeline().handlerRead('lb', 'backends') as { name: string; weight: number }[]).map((b) => [b.name, b.weight]));

test('a reload with more backends than max_backends is refused by that check, and the running table stays', async () => {
  await running(config("backends: ['web1 198.18.1.11', 'web2 198.18.1.12'], max_backends: 2"), async (supervisor) => {
    const refused = await supervisor.reload(config("backends: ['web1 198.18.1.11', 'web2 198.18.1.12'], max_backends: 1")).then(() => undefined, (e) => e);
    assert.equal(refused?.errors?.map((e: { message: string }) => e.message), ['lb.backends: 2 backends do not fit max_backends: 1 (web2 is the first without a slot)']);
    assert.equal(weights(supervisor), { web1: 1, web2: 1 });
  });
});

test('a reload that changes only source keeps the table, run-time changes included', async () => {
  await running(config("backends: ['web1 198.18.1.11', 'web2 198.18.1.12']"), async (supervisor) => {
    supervisor.pipeline().handlerWrite('lb', 'add_backend', 'web3 198.18.1.13 2');
    const report = await supervisor.reload(config("backends: ['web1 198.18.1.11', 'web2 198.18.1.12']").replace('198.18.0.0/24', '198.18.5.0/24'));
    assert.equal({ kept: report.kept.includes('lb'), restarted: report.restarted }, { kept: true, restarted: [] });
    assert.equal(weights(supervisor), { web1: 1, web2: 1, web3: 2 });
    assert.is(supervisor.pipeline().handlerRead('lb', 'source'), '198.18.5.0/24');
    // Not while it runs: its address and mask are two fields, which a batch could read half changed.
    assert.throws(() => supervisor.pipeline().handlerWrite('lb', 'source', '198.18.6.0/24'), /source is read when lb is set up/);
  });
});

test('a reload that raises max_backends builds the new table from the running backends, run-time changes and drains included', async () => {
  // Before, following the hint of a full table gave the config's backends back: removed ones returned, added ones were gone.
  await running(config("backends: ['web1 198.18.1.11', 'web2 198.18.1.12', 'web3 198.18.1.13'], max_backends: 3"), async (supervisor, logs) => {
    const p = supervisor.pipeline();
    p.handlerWrite('lb', 'remove_backend', 'web2');
    p.handlerWrite('lb', 'drain', 'web3');
    assert.throws(() => p.handlerWrite('lb', 'add_backend', 'web4 198.18.1.14 2'), /raise max_backends in the config and reload: the running backends go on in the larger table/);
    const report = await supervisor.reload(config("backends: ['web1 198.18.1.11', 'web2 198.18.1.12', 'web3 198.18.1.13'], max_backends: 4"));
    assert.equal(report.restarted, ['lb']);
    assert.equal(weights(supervisor), { web1: 1, web3: 0 });
    assert.ok(logs.includes('lb: the running backends (web1 198.18.1.11 1, web3 198.18.1.13 0) go on in the new table, its buckets remembering no previous backend'), logs.join('\n'));
    supervisor.pipeline().handlerWrite('lb', 'add_backend', 'web4 198.18.1.14 2');
    supervisor.pipeline().handlerWrite('lb', 'set_weight', 'web3 1');
    assert.equal(weights(supervisor), { web1: 1, web3: 1, web4: 2 });
    const buckets = supervisor.pipeline().handlerRead('lb', 'buckets') as { generation: number };
    assert.is(buckets.generation, 2, 'the new table starts at generation 0; two changes since');
  });
});

test('a reload whose new table cannot hold the running backends keeps the config\'s, and says why', async () => {
  await running(config("backends: ['web1 198.18.1.11', 'web2 198.18.1.12'], max_backends: 3"), async (supervisor, logs) => {
    supervisor.pipeline().handlerWrite('lb', 'add_backend', 'web3 198.18.1.13');
    await supervisor.reload(config("backends: ['web1 198.18.1.11', 'web2 198.18.1.12'], max_backends: 2"));
    assert.equal(weights(supervisor), { web1: 1, web2: 1 });
    assert.ok(logs.includes('lb: the running backends (web1 198.18.1.11 1, web2 198.18.1.12 1, web3 198.18.1.13 1) do not fit the new table (3 backends, max_backends 2): it has the config\'s'), logs.join('\n'));
  });
});

test('a reload whose config lists other backends keeps the running table\'s, and says so once', async () => {
  const yaml = config("backends: ['web1 198.18.1.11', 'web2 198.18.1.12']");
  await running(yaml, async (supervisor, logs) => {
    await supervisor.reload(yaml.replace('rate: 1000', 'rate: 2000'));
    assert.not.ok(logs.some((l) => l.includes('other backends')), 'the same list: nothing to say');
    await supervisor.reload(yaml.replace('web2 198.18.1.12', 'web3 198.18.1.13'));
    assert.equal(weights(supervisor), { web1: 1, web2: 1 });
    assert.equal(logs.filter((l) => l.includes('other backends')), [
      'lb: the reloaded config lists other backends (web1 198.18.1.11 1, web3 198.18.1.13 1) than the running table, whose backends are kept '
        + '(web1 198.18.1.11 1, web2 198.18.1.12 1); change them with wirepath ctl write lb.add_backend, lb.remove_backend or lb.set_weight',
    ]);
  });
});

test('a backend the checks drained gets its weight back once it passes, also after a reload (and a snapshot keeps the drain)', async () => {
  const web1 = await httpServer('127.0.0.1');
  let web2: Server | undefined;
  try {
    const yaml = config(`backends: ['web1 127.0.0.1', 'web2 127.0.0.2 2'], ${checks(web1.port)}`);
    await running(yaml, async (supervisor, logs) => {
      await waitFor('web2 drained', () => weights(supervisor).web2 === 0);
      const report = await supervisor.reload(yaml.replace('rate: 1000', 'rate: 2000'));
      assert.ok(report.kept.includes('lb'), JSON.stringify(report));
      assert.equal(weights(supervisor), { web1: 1, web2: 0 });
      assert.is(health(supervisor).web2.drained_by_checks, true, 'the reloaded pipeline knows the checks drained web2');
      const restored = await Pipeline.create(await loadConfig('lb.yaml', { text: yaml }), { threads: 'inline' });
      restored.restore(await supervisor.pipeline().snapshot());
      assert.is((restored.handlerRead('lb', 'health') as ReturnType<typeof health>).web2.drained_by_checks, true, 'and so does one restored from a snapshot');
      web2 = await httpServer('127.0.0.2', web1.port);
      await waitFor('web2 weighted again', () => weights(supervisor).web2 === 2);
      assert.ok(logs.includes('lb: backend web2 (127.0.0.2) passed 2 checks in a row: weight 2 again'), logs.join('\n'));
    });
  } finally {
    await close(web1);
    if (web2) await close(web2);
  }
});

test('a backend drained by hand while the checks had drained it stays drained when it passes again', async () => {
  const web1 = await httpServer('127.0.0.1');
  let web2: Server | undefined;
  try {
    await running(config(`backends: ['web1 127.0.0.1', 'web2 127.0.0.2'], ${checks(web1.port)}`), async (supervisor) => {
      await waitFor('web2 drained by the checks', () => health(supervisor).web2?.drained_by_checks === true);
      supervisor.pipeline().handlerWrite('lb', 'drain', 'web2');
      assert.is(health(supervisor).web2.drained_by_checks, false, 'the hand took it over');
      web2 = await httpServer('127.0.0.2', web1.port);
      await waitFor('web2 to pass 3 checks in a row', () => health(supervisor).web2.streak >= 3);
      assert.equal(weights(supervisor), { web1: 1, web2: 0 });
    });
  } finally {
    await close(web1);
    if (web2) await close(web2);
  }
});

test('a failed check is logged with its reason, once per backend while the reason stays: refused, an HTTP status, no answer', async () => {
  const web1 = await httpServer('127.0.0.1');
  const web3 = await httpServer('127.0.0.3', web1.port, 503);
  const web4 = await httpServer('127.0.0.4', web1.port, 0);
  try {
    const backends = "['web1 127.0.0.1', 'web2 127.0.0.2', 'web3 127.0.0.3', 'web4 127.0.0.4']";
    await running(config(`backends: ${backends}, ${checks(web1.port)}`), async (supervisor, logs) => {
      await waitFor('three failures in a row each', () => ['web2', 'web3', 'web4'].every((name) => health(supervisor)[name]?.streak <= -3));
      const url = (host: string) => `http://${host}:${web1.port}/`;
      for (const line of [
        `lb: backend web2: http check failed: ${url('127.0.0.2')}: connection refused (ECONNREFUSED)`,
        `lb: backend web3: http check failed: ${url('127.0.0.3')}: HTTP status 503`,
        `lb: backend web4: http check failed: ${url('127.0.0.4')}: no answer within 300 ms`,
      ]) assert.is(logs.filter((l) => l === line).length, 1, `${line}\n${logs.join('\n')}`);
      assert.is(health(supervisor).web3.failure, `${url('127.0.0.3')}: HTTP status 503`);
      assert.is(logs.filter((l) => l.includes('check failed')).length, 3, 'web1 passes');
    });
  } finally {
    await Promise.all([web1, web3, web4].map(close));
  }
});

test.run();
