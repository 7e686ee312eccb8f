// LoadBalancer health checks against real HTTP servers in a network namespace: a backend with no
// server is drained, a server that stops is drained unless it is the last with a weight, one that comes
// back gets its weight back, a weight set by hand is the one given back, and turning the checks off gives
// weights back.
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
  test('health checks drain failing backends but never the last with a weight, give weights back (one set by hand too) and end when turned off', async () => {
    const dir = tempDir();
    try {
      await withNamespaces(['lb', 'web'], async (ns, prefix, tools) => {
        vethPair([ns.lb, `${prefix}l0`, '02:00:c6:12:09:01'], [ns.web, `${prefix}w0`, '02:00:c6:12:09:02']);
        tools.run(ns.lb, ['ip', 'addr', 'add', '198.18.9.1/24', 'dev', `${prefix}l0`]);
        tools.run(ns.web, ['ip', 'addr', 'add', '198.18.9.2/24', 'dev', `${prefix}w0`]);
        tools.run(ns.web, ['ip', 'addr', 'add', '198.18.9.4/24', 'dev', `${prefix}w0`]);
        const server = (address: string) => tools.start(ns.web, ['python3', '-m', 'http.server', '8080', '--bind', address, '--directory', dir]);
        let web1 = server('198.18.9.2');
        const web3 = server('198.18.9.4');
        const config = join(dir, 'lb.yaml');
        const port = 20000 + Math.floor(Math.random() * 20000);
        writeFileSync(config, `
elements:
  gen: { type: Generator, count: 0, timing: original, rate: 1000 }
  lb: { type: LoadBalancer, vips: ['198.18.100.1 tcp 80'], source: 198.18.8.0/24,
        backends: ['web1 198.18.9.2', 'web2 198.18.9.3 2', 'web3 198.18.9.4'],
        health_check: http, health_port: 8080, health_interval: 200ms, health_timeout: 300ms, health_failures: 2 }
  drop: { type: Discard }
connections:
  - gen -> lb -> drop
`);
        const engine = tools.start(ns.lb, [process.execPath, join(ROOT, 'bin/wirepath.js'), 'run', config, '--control', String(port), '--token', 'tok'], { cwd: ROOT });
        let log = '';
        engine.stdout!.on('data', (d) => (log += d));
        engine.stderr!.on('data', (d) => (log += d));
        const ctl = (...args: string[]) => tools.run(ns.lb, [process.execPath, join(ROOT, 'bin/wirepath.js'), 'ctl', ...args, '--control', String(port), '--token', 'tok'], { check: false });
        const weights = () => {
          const r = ctl('read', 'lb.backends');
          if (r.status !== 0) return {};
          return Object.fromEntries((JSON.parse(r.stdout.toString()).value as { name: string; weight: number }[]).map((b) => [b.name, b.weight]));
        };
        // web2 has no host at all: its checks time out, and it is drained; web1 and web3 answer and keep their weights.
        await waitFor(() => weights().web2 === 0, 30_000, 'web2 to be drained');
        assert.equal(weights(), { web1: 1, web2: 0, web3: 1 });
        web1.kill('SIGKILL');
        await waitFor(() => weights().web1 === 0, 15_000, 'web1 to be drained once its server stops');
        web3.kill('SIGKILL');
        await waitFor(() => log.includes('backend web3 (198.18.9.4) failed 2 http checks in a row, but it is the last with a weight: kept'), 15_000, 'web3 kept');
        assert.equal(weights(), { web1: 0, web2: 0, web3: 1 }, 'failing open');
        web1 = server('198.18.9.2');
        await waitFor(() => weights().web1 === 1, 15_000, 'web1 to get its weight back');
        await waitFor(() => weights().web3 === 0, 15_000, 'web3 drained now that another has a weight');
        // A weight set by hand is the one the checks give back; web2 still fails, so they drain it again.
        assert.is(ctl('write', 'lb.set_weight', 'web2', '3').status, 0);
        await waitFor(() => weights().web2 === 0, 15_000, 'web2 drained again');
        assert.equal(JSON.parse(ctl('read', 'lb.health').stdout.toString()).value.web2.drained_by_checks, true);
        // Turned off, the checks give back what they took.
        assert.is(ctl('write', 'lb.health_check', 'none').status, 0);
        await waitFor(() => weights().web3 === 1, 15_000, 'web3 to get its weight back when the checks end');
        assert.equal(weights(), { web1: 1, web2: 3, web3: 1 }, log);
        engine.kill('SIGINT');
        await new Promise((r) => engine.once('exit', r));
        assert.match(log, /lb: backend web2 \(198\.18\.9\.3\) failed 2 http checks in a row: drained/);
        assert.match(log, /lb: backend web1 \(198\.18\.9\.2\) passed 2 checks in a row: weight 1 again/);
        assert.match(log, /lb: health checks off: backend web3 has its weight 1 again/);
      });
    } finally {
      removeDir(dir);
    }
  });
}

test.run();
