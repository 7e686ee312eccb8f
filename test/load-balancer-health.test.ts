// LoadBalancer health checks against a real HTTP server in a network namespace: a backend with no
// server is drained, a server that stops is drained, and one that comes back gets its weight back.
// Needs root; skipped (with a note) without it. Addresses: 198.18.9.0/24 only, inside the namespaces.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { ROOT, tempDir, removeDir } from './helpers.ts';
import { withNamespaces, vethPair, waitFor, available } from './topology.ts';

const skip = available();
if (skip) {
  console.log(`load balancer health tests skipped: ${skip}`);
} else {
  test('health checks drain a backend that fails them and give its weight back when it passes again', async () => {
    const dir = tempDir();
    try {
      await withNamespaces(['lb', 'web'], async (ns, prefix, tools) => {
        vethPair([ns.lb, `${prefix}l0`, '02:00:c6:12:09:01'], [ns.web, `${prefix}w0`, '02:00:c6:12:09:02']);
        tools.run(ns.lb, ['ip', 'addr', 'add', '198.18.9.1/24', 'dev', `${prefix}l0`]);
        tools.run(ns.web, ['ip', 'addr', 'add', '198.18.9.2/24', 'dev', `${prefix}w0`]);
        const server = () => tools.start(ns.web, ['python3', '-m', 'http.server', '8080', '--bind', '198.18.9.2', '--directory', dir]);
        let web = server();
        const config = join(dir, 'lb.yaml');
        const port = 20000 + Math.floor(Math.random() * 20000);
        writeFileSync(config, `
elements:
  gen: { type: Generator, count: 0, timing: original, rate: 1000 }
  lb: { type: LoadBalancer, vips: ['198.18.100.1 tcp 80'], source: 198.18.9.0/24,
        backends: ['web1 198.18.9.2', 'web2 198.18.9.3 2'],
        health_check: http, health_port: 8080, health_interval: 200ms, health_timeout: 300ms, health_failures: 2 }
  drop: { type: Discard }
connections:
  - gen -> lb -> drop
`);
        const engine = tools.start(ns.lb, [process.execPath, join(ROOT, 'bin/wirepath.js'), 'run', config, '--control', String(port)], { cwd: ROOT });
        let log = '';
        engine.stdout!.on('data', (d) => (log += d));
        engine.stderr!.on('data', (d) => (log += d));
        const weights = () => {
          const r = tools.run(ns.lb, [process.execPath, join(ROOT, 'bin/wirepath.js'), 'ctl', 'read', 'lb.backends', '--control', String(port)], { check: false });
          if (r.status !== 0) return {};
          return Object.fromEntries((JSON.parse(r.stdout.toString()).value as { name: string; weight: number }[]).map((b) => [b.name, b.weight]));
        };
        // web2 has no host at all: its checks time out, and it is drained; web1 answers and keeps its weight.
        await waitFor(() => weights().web2 === 0, 30_000, 'web2 to be drained');
        assert.is(weights().web1, 1);
        web.kill('SIGKILL');
        await waitFor(() => weights().web1 === 0, 15_000, 'web1 to be drained once its server stops');
        web = server();
        await waitFor(() => weights().web1 === 1, 15_000, 'web1 to get its weight back');
        assert.is(weights().web2, 0, 'web2 still failing');
        engine.kill('SIGINT');
        await new Promise((r) => engine.once('exit', r));
        assert.match(log, /lb: backend web2 \(198\.18\.9\.3\) failed 2 http checks in a row: drained/);
        assert.match(log, /lb: backend web1 \(198\.18\.9\.2\) passed 2 checks in a row: weight 1 again/);
      });
    } finally {
      removeDir(dir);
    }
  });
}

test.run();
