// The Beamer load balancer with real Linux TCP endpoints, in network namespaces: the topology drawn
// at the top of configs/lb-mux.yaml, built from veths and one bridge, with wirepath as the mux
// (configs/lb-mux.yaml) and as each backend's BeamerBackend (configs/lb-backend.yaml) in front of a
// Python HTTP server that owns the VIP on its lo. A client runs ~100 slow downloads at all times
// (each ~6 s, read at a limited rate, checked by sha256) and a steady stream of short requests, while
// the test removes, re-adds, drains and re-weights backends through `wirepath ctl`. With daisy
// chaining no connection breaks; without it, the connections whose bucket moved are reset.
// Needs root; skipped (with a note) without it.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, tempDir, removeDir, cli } from './helpers.ts';
import { withNamespaces, vethPair, startEngine, exited, available, type NamespaceTools, type Engine } from './topology.ts';

const VIP = '198.18.100.1';
const ROUTER = { client: ['100.64.0.1', '02:00:64:00:00:01'], mux: ['198.18.0.1', '02:00:c6:12:00:01'], backends: ['198.18.1.1', '02:00:c6:12:01:01'] } as const;
const CLIENT = ['100.64.0.2', '02:00:64:00:00:02'] as const;
const MUX = ['198.18.0.2', '02:00:c6:12:00:02'] as const;
const WEBS = [1, 2, 3].map((i) => ({
  name: `web${i}`,
  address: `198.18.1.1${i}`,
  /** The BeamerBackend's side toward the router, and toward its server; the server's end. */
  net: `02:00:c6:12:01:1${i}`, engine: `02:00:c6:12:02:0${i}`, server: `02:00:c6:12:02:1${i}`,
  serverAddress: `198.18.2.1${i}`,
}));
const TOKEN = 'lb-test-token';
const CONTROL = '7000';

/** An HTTP server on port 80 with a deep accept queue and no request log. */
const SERVER = `
import functools, http.server, sys
class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 512
    daemon_threads = True
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass
Server(('0.0.0.0', 80), functools.partial(Quiet, directory=sys.argv[1])).serve_forever()
`;

/**
 * The client: \`workers\` threads each download /blob again and again, reading at \`rate\` B/s through a
 * small receive buffer (so the connection lives the whole time), until a line arrives on its stdin; four more
 * threads each ask /who (the server's name) every 0.1 s on a new connection. Prints one JSON object of results.
 */
const CLIENT_DRIVER = `
import hashlib, http.client, json, socket, sys, threading, time
cfg = json.loads(sys.argv[1])
lock = threading.Lock()
stop = threading.Event()
res = {'long_ok': 0, 'long_broken': [], 'short': [], 'short_broken': []}
def connect():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    s.settimeout(15)
    s.connect((cfg['vip'], 80))
    c = http.client.HTTPConnection(cfg['vip'], 80, timeout=15)
    c.sock = s
    return c
def long_worker(k):
    time.sleep(k * cfg['download_s'] / cfg['workers'])
    while not stop.is_set():
        began = time.time() - start
        try:
            c = connect()
            c.request('GET', '/blob')
            r = c.getresponse()
            h, got, t0 = hashlib.sha256(), 0, time.time()
            while True:
                chunk = r.read(2048)
                if not chunk: break
                h.update(chunk); got += len(chunk)
                wait = t0 + got / cfg['rate'] - time.time()
                if wait > 0: time.sleep(wait)
            c.close()
            if h.hexdigest() != cfg['sha256']: raise Exception('checksum mismatch after %d bytes' % got)
            with lock: res['long_ok'] += 1
        except Exception as e:
            with lock: res['long_broken'].append('started at %.1f s, broke at %.1f s: %r' % (began, time.time() - start, e))
def short_worker():
    while not stop.is_set():
        at = time.time() - start
        try:
            c = connect(); c.request('GET', '/who'); who = c.getresponse().read().decode(); c.close()
            with lock: res['short'].append([round(at, 2), who])
        except Exception as e:
            with lock: res['short_broken'].append('%.1f s: %r' % (at, e))
        time.sleep(0.1)
threads = [threading.Thread(target=long_worker, args=(k,)) for k in range(cfg['workers'])] + [threading.Thread(target=short_worker) for _ in range(4)]
# Times are from the moment the test learns the client started.
start = time.time()
print('started', flush=True)
for t in threads: t.start()
sys.stdin.readline()
stop.set()
for t in threads: t.join()
print(json.dumps(res), flush=True)
`;

interface Lb {
  tools: NamespaceTools;
  ns: Record<'client' | 'router' | 'mux' | 'bk1' | 'bk2' | 'bk3' | 'web1' | 'web2' | 'web3', string>;
  ctl(...args: string[]): { status: number; stdout: string; stderr: string };
}

/** Builds the namespaces, links, routes, servers and engines; runs `body`; deletes everything. */
async function withLoadBalancer(daisyChain: boolean, content: string, body: (lb: Lb) => Promise<void>): Promise<void> {
  const names = ['client', 'router', 'mux', 'bk1', 'bk2', 'bk3', 'web1', 'web2', 'web3'] as const;
  await withNamespaces(names, async (ns, _prefix, tools) => {
    const ip = (name: string, ...args: string[]) => tools.run(name, ['ip', ...args]);
    const sysctl = (name: string, ...settings: string[]) => tools.run(name, ['sysctl', '-qw', ...settings]);
    // Client: its MTU leaves room for the outer header behind the router.
    vethPair([ns.client, 'c0', CLIENT[1]], [ns.router, 'rc', ROUTER.client[1]], 1400);
    vethPair([ns.mux, 'm0', MUX[1]], [ns.router, 'rm', ROUTER.mux[1]]);
    ip(ns.client, 'addr', 'add', `${CLIENT[0]}/24`, 'dev', 'c0');
    ip(ns.client, 'neigh', 'replace', ROUTER.client[0], 'lladdr', ROUTER.client[1], 'dev', 'c0', 'nud', 'permanent');
    ip(ns.client, 'route', 'add', '198.18.0.0/15', 'via', ROUTER.client[0]);
    // Router: forwards, without source checks (replies from the VIP come from the backends' side) or redirects
    // (daisy-chained packets leave by the bridge they came in on).
    sysctl(ns.router, 'net.ipv4.ip_forward=1', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0',
      'net.ipv4.conf.all.send_redirects=0', 'net.ipv4.conf.default.send_redirects=0');
    ip(ns.router, 'link', 'add', 'br0', 'address', ROUTER.backends[1], 'type', 'bridge');
    ip(ns.router, 'link', 'set', 'br0', 'up');
    ip(ns.router, 'addr', 'add', `${ROUTER.client[0]}/24`, 'dev', 'rc');
    ip(ns.router, 'addr', 'add', `${ROUTER.mux[0]}/24`, 'dev', 'rm');
    ip(ns.router, 'addr', 'add', `${ROUTER.backends[0]}/24`, 'dev', 'br0');
    ip(ns.router, 'neigh', 'replace', CLIENT[0], 'lladdr', CLIENT[1], 'dev', 'rc', 'nud', 'permanent');
    ip(ns.router, 'neigh', 'replace', MUX[0], 'lladdr', MUX[1], 'dev', 'rm', 'nud', 'permanent');
    ip(ns.router, 'route', 'add', `${VIP}/32`, 'via', MUX[0]);
    for (const [i, web] of WEBS.entries()) {
      const bk = ns[`bk${i + 1}` as 'bk1'], server = ns[web.name as 'web1'];
      vethPair([ns.router, `rb${i + 1}`, `02:00:c6:12:01:0${i + 2}`], [bk, 'f0', web.net]);
      ip(ns.router, 'link', 'set', `rb${i + 1}`, 'master', 'br0');
      ip(ns.router, 'neigh', 'replace', web.address, 'lladdr', web.net, 'dev', 'br0', 'nud', 'permanent');
      vethPair([bk, 's0', web.engine], [server, 'v0', web.server]);
      ip(server, 'addr', 'add', `${web.serverAddress}/24`, 'dev', 'v0');
      ip(server, 'addr', 'add', `${VIP}/32`, 'dev', 'lo');
      ip(server, 'neigh', 'replace', '198.18.2.1', 'lladdr', web.engine, 'dev', 'v0', 'nud', 'permanent');
      ip(server, 'route', 'add', '100.64.0.0/10', 'via', '198.18.2.1');
      const dir = join(content, web.name);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'who'), web.name);
      copyFileSync(join(content, 'blob'), join(dir, 'blob'));
      tools.start(server, ['python3', '-c', SERVER, dir], { stdio: 'ignore' });
    }
    const engines: Engine[] = [];
    engines.push(await startEngine({ ...tools, ns: { engine: ns.mux } }, ['configs/lb-mux.yaml', '--inline', '--control', CONTROL, '--token', TOKEN], 2, ROOT));
    for (const [i, web] of WEBS.entries()) {
      engines.push(await startEngine({ ...tools, ns: { engine: ns[`bk${i + 1}` as 'bk1'] } }, ['configs/lb-backend.yaml', '--inline',
        '--set', `bb.address=${web.address}`, '--set', `bb.daisy_chain=${daisyChain}`, '--set', `to_net_eth.eth_src=${web.net}`,
        '--set', `to_server_eth.eth_src=${web.engine}`, '--set', `to_server_eth.eth_dst=${web.server}`], 4, ROOT));
    }
    for (const e of engines) assert.is(e.child.exitCode, null, e.stderr());
    const lb: Lb = {
      tools, ns,
      ctl: (...args) => {
        const r = tools.run(ns.mux, [process.execPath, join(ROOT, 'bin/wirepath.js'), 'ctl', '--control', CONTROL, '--token', TOKEN, ...args], { check: false });
        return { status: r.status ?? -1, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
      },
    };
    try {
      await body(lb);
    } finally {
      for (const e of engines) await e.stop();
    }
  });
}

interface Results {
  long_ok: number;
  long_broken: string[];
  short: [number, string][];
  short_broken: string[];
}

/**
 * Runs the client; each event (a ctl write) comes `after` seconds after the previous one was made (ctl
 * takes a moment on a busy machine, and no connection must live through two changes of its bucket), and
 * the client stops 8 s after the last. Returns what the client saw, when each ctl write was started and
 * when it had returned, and when the client was told to stop (seconds from its start).
 */
async function traffic(lb: Lb, sha256: string, events: [after: number, handler: string, value: string][]) {
  const client = lb.tools.start(lb.ns.client, ['python3', '-c', CLIENT_DRIVER, JSON.stringify({ vip: VIP, workers: 100, rate: 16384, download_s: 6, sha256 })]);
  let out = '', err = '';
  client.stdout!.on('data', (d) => (out += d));
  client.stderr!.on('data', (d) => (err += d));
  while (!out.includes('started') && client.exitCode === null) await new Promise((r) => setTimeout(r, 50));
  const started = Date.now();
  const sleep = (seconds: number) => new Promise((r) => setTimeout(r, seconds * 1000));
  const requested: number[] = [], applied: number[] = [];
  for (const [after, handler, value] of events) {
    await sleep(after);
    requested.push((Date.now() - started) / 1000);
    const r = lb.ctl('write', `lb.${handler}`, value);
    assert.is(r.status, 0, `ctl write lb.${handler} ${value}: ${r.stderr}`);
    applied.push((Date.now() - started) / 1000);
    console.log(`  ${applied.at(-1)!.toFixed(1)} s: ${handler} ${value}: ${JSON.stringify(JSON.parse(lb.ctl('read', 'lb.buckets').stdout).value)}`);
  }
  await sleep(8);
  const stopped = (Date.now() - started) / 1000;
  client.stdin!.end('stop\n');
  assert.is(await exited(client), 0, err);
  return { ...(JSON.parse(out.trim().split('\n').pop()!) as Results), requested, applied, stopped };
}

const skip = available();
if (skip) {
  console.log(`load balancer traffic tests skipped: ${skip}`);
} else {
  const dir = tempDir();
  const blob = randomBytes(96 << 10);
  writeFileSync(join(dir, 'blob'), blob);
  const sha256 = createHash('sha256').update(blob).digest('hex');
  // Compile both graphs once, before four engines start at the same time.
  for (const config of ['configs/lb-mux.yaml', 'configs/lb-backend.yaml']) assert.is(cli(['build', config]).status, 0);

  test('daisy chaining: ~100 live slow downloads and new connections while backends are removed, added, drained, re-weighted: none breaks', async () => {
    await withLoadBalancer(true, dir, async (lb) => {
      const events: [number, string, string][] = [
        [5, 'remove_backend', 'web2'], [8, 'add_backend', 'web2 198.18.1.12'], [8, 'drain', 'web3'], [8, 'set_weight', 'web3 2'],
      ];
      const r = await traffic(lb, sha256, events);
      const backends = JSON.parse(lb.ctl('read', 'lb.backends').stdout).value;
      // New connections by backend between two changes: from half a second after one had been made to when the next was asked for.
      const phases = [0, ...r.applied].map((from, i) => {
        const to = r.requested[i] ?? r.stopped;
        const counts: Record<string, number> = {};
        for (const [at, who] of r.short) if (at >= from + (i ? 0.5 : 0) && at < to) counts[who] = (counts[who] ?? 0) + 1;
        return counts;
      });
      console.log(`  long downloads: ${r.long_ok} complete with the right sha256, ${r.long_broken.length} broken; short requests: ${r.short.length}, ${r.short_broken.length} failed`);
      console.log(`  new connections by backend, between changes: ${phases.map((p) => JSON.stringify(p)).join(' ')}`);
      console.log(`  mux counters per backend: ${JSON.stringify(backends.map((b: any) => [b.name, b.packets]))}`);
      assert.equal(r.long_broken, []);
      assert.equal(r.short_broken, []);
      assert.ok(r.long_ok > 500, `${r.long_ok} downloads`);
      assert.equal(phases.map((p) => Object.keys(p).sort().join(' ')), ['web1 web2 web3', 'web1 web3', 'web1 web2 web3', 'web1 web2', 'web1 web2 web3']);
      // Weights 1, 1, 2 after the last change: web3 takes about half of the new connections.
      const last = phases[4];
      const share = last.web3 / (last.web1 + last.web2 + last.web3);
      assert.ok(share > 0.35 && share < 0.65, JSON.stringify(last));
    });
  });

  test('daisy chaining off: the same changes reset the connections whose bucket moved', async () => {
    await withLoadBalancer(false, dir, async (lb) => {
      const r = await traffic(lb, sha256, [[5, 'remove_backend', 'web2'], [8, 'add_backend', 'web2 198.18.1.12']]);
      console.log(`  without daisy chaining: ${r.long_ok} downloads complete, ${r.long_broken.length} broken, e.g. ${r.long_broken[0]}`);
      assert.ok(r.long_broken.length > 10, `${r.long_broken.length} broken`);
      // A change naming an unknown backend: ctl fails with the API's 400 and its message; the table stays.
      const bad = lb.ctl('write', 'lb.drain', 'web9');
      assert.is(bad.status, 1);
      assert.match(bad.stderr, /wirepath ctl: 400 lb\.drain: no backend 'web9'; the backends are web1, web2, web3/);
      assert.is(JSON.parse(lb.ctl('read', 'lb.buckets').stdout).value.generation, 2);
    });
  });

  test.after(() => removeDir(dir));
}

test.run();
