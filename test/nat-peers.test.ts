// The NAT element with real Linux peers (configs/nat.yaml): subscribers in a client namespace
// (100.64.0.2 and 100.64.0.3) behind wirepath reach servers in a server namespace (198.18.0.2 and
// 198.18.0.3) through the pool 203.0.113.0/28. test/topology.ts builds the namespaces (router mode:
// the peers send to the engine's MACs); here the servers get NO route to 100.64.0.0/10, only one to
// the pool, so anything they answer must have been translated. Checked: a TCP download (curl,
// sha256), endpoint-independent mapping seen by the servers, hairpinning between two subscribers,
// ICMP echo. Needs root; skipped (with a note) without it.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, tempDir, removeDir } from './helpers.ts';
import { withTopology, startEngine, waitFor, exited, available, ADDRESSES, MACS, type Topology, type Engine } from './topology.ts';

/** The second subscriber (client namespace) and the second server address (server namespace). */
const CLIENT_B = '100.64.0.3';
const SERVER_B = '198.18.0.3';
const POOL = /^203\.0\.113\.([0-9]|1[0-5])$/;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/**
 * Router mode, then: the second addresses, the pool routed via the engine on both sides (the clients
 * need it for hairpinning), and the servers' route to the subscribers removed.
 */
function natRoutes(t: Topology): void {
  t.route('router');
  t.run(t.ns.server, ['ip', 'route', 'del', '100.64.0.0/24']);
  t.run(t.ns.server, ['ip', 'neigh', 'del', ADDRESSES.client, 'dev', t.dev.server], { check: false });
  t.run(t.ns.server, ['ip', 'addr', 'add', `${SERVER_B}/24`, 'dev', t.dev.server]);
  t.run(t.ns.server, ['ip', 'route', 'replace', '203.0.113.0/24', 'via', ADDRESSES.serverGateway, 'dev', t.dev.server]);
  t.run(t.ns.client, ['ip', 'addr', 'add', `${CLIENT_B}/24`, 'dev', t.dev.client]);
  t.run(t.ns.client, ['ip', 'route', 'replace', '203.0.113.0/24', 'via', ADDRESSES.clientGateway, 'dev', t.dev.client]);
}

async function startNat(t: Topology, shards: number, ...extra: string[]): Promise<Engine> {
  const engine = await startEngine(t, ['configs/nat.yaml', '--shards', String(shards), ...extra,
    '--set', `from_inside.device=${t.dev.engineClient}`, '--set', `to_inside.device=${t.dev.engineClient}`,
    '--set', `from_outside.device=${t.dev.engineServer}`, '--set', `to_outside.device=${t.dev.engineServer}`], 4, ROOT);
  assert.is(engine.child.exitCode, null, `wirepath exited: ${engine.stderr()}`);
  return engine;
}

/** Stops the engine (exit 130 as for Ctrl-C) and returns its stdout: the block log lines and the counters table. */
async function stopNat(engine: Engine): Promise<string> {
  assert.is(await engine.stop(), 130, engine.stderr());
  return engine.stdout();
}

/** The block records wirepath logged (log: - in configs/nat.yaml). */
function blockRecords(stdout: string): { event: string; subscriber: string; external: string; ports: string; protocol: string }[] {
  return stdout.split('\n').filter((l) => l.startsWith('{"time"')).map((l) => JSON.parse(l));
}

/**
 * A UDP echo server on the given address:port pairs: answers each datagram with the source it saw
 * ("ADDRESS:PORT"), and prints "LOCAL PEER" per datagram; prints "ready" once bound.
 */
const ECHO_SERVER = `
import socket, select, sys
socks = []
for spec in sys.argv[1:]:
    host, port = spec.rsplit(':', 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, int(port)))
    socks.append(s)
print('ready', flush=True)
while True:
    for s in select.select(socks, [], [])[0]:
        data, peer = s.recvfrom(2048)
        local = s.getsockname()
        print('%s:%d %s:%d' % (local[0], local[1], peer[0], peer[1]), flush=True)
        s.sendto(('%s:%d' % peer).encode(), peer)
`;

async function echoServer(t: Topology, endpoints: string[]): Promise<() => string[]> {
  const child = t.start(t.ns.server, ['python3', '-u', '-c', ECHO_SERVER, ...endpoints]);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  await waitFor(() => out.includes('ready') || child.exitCode !== null, 10_000, 'the UDP echo server');
  assert.is(child.exitCode, null, `echo server: ${err}`);
  return () => out.split('\n').filter((l) => l && l !== 'ready');
}

/** Python for the clients: `ask(sock, dest)` sends and returns the reply, retrying a lost datagram. */
const CLIENT_LIB = `
import socket, json, sys
def udp(addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    s.settimeout(1.0)
    return s
def ask(s, dest, payload=b'who'):
    for attempt in range(5):
        s.sendto(payload, dest)
        try:
            data, peer = s.recvfrom(2048)
            return data.decode(), '%s:%d' % peer
        except socket.timeout:
            pass
    raise SystemExit('no answer from %s:%d to %s:%d' % (dest + s.getsockname()))
def endpoint(text):
    host, port = text.rsplit(':', 1)
    return host, int(port)
`;

function python(t: Topology, script: string, args: string[] = []): any {
  const r = t.run(t.ns.client, ['python3', '-c', CLIENT_LIB + script, ...args], { check: false, timeout: 60_000 });
  assert.is(r.status, 0, `client script: ${r.stderr.toString()}`);
  return JSON.parse(r.stdout.toString());
}

/**
 * Subscriber A (socket a) learns its external endpoint and B's from the echo server, sends to B's
 * external endpoint; B answers whoever it saw. Returns what each saw.
 */
function hairpin(t: Topology, a: string, aPort: number, b: string, bPort: number): Record<string, string> {
  return python(t, `
echo = ('${ADDRESSES.server}', 9000)
a = udp('${a}', ${aPort})
b = udp('${b}', ${bPort})
ea = ask(a, echo)[0]
eb = ask(b, echo)[0]
a.sendto(b'hello', endpoint(eb))
try:
    data, seen_by_b = b.recvfrom(2048)
    seen_by_b = '%s:%d' % seen_by_b
except socket.timeout:
    print(json.dumps({'ea': ea, 'eb': eb, 'b_got': None})); sys.exit(0)
b.sendto(b'back', endpoint(seen_by_b))
try:
    data2, seen_by_a = a.recvfrom(2048)
    seen_by_a = '%s:%d' % seen_by_a
except socket.timeout:
    data2, seen_by_a = b'', None
print(json.dumps({'ea': ea, 'eb': eb, 'b_got': data.decode(), 'seen_by_b': seen_by_b, 'a_got': data2.decode(), 'seen_by_a': seen_by_a}))
`);
}

function checkHairpin(r: Record<string, string>): void {
  const context = JSON.stringify(r);
  assert.match(r.ea.split(':')[0], POOL, context);
  assert.match(r.eb.split(':')[0], POOL, context);
  assert.is(r.b_got, 'hello', `B got nothing from A: ${context}`);
  assert.is(r.seen_by_b, r.ea, `B saw A as ${r.seen_by_b}, A's external endpoint is ${r.ea}`);
  assert.is(r.a_got, 'back', `A got no answer from B: ${context}`);
  assert.is(r.seen_by_a, r.eb, `A saw B's answer from ${r.seen_by_a}, B's external endpoint is ${r.eb}`);
}

const skip = available();
if (skip) {
  console.log(`NAT peer tests skipped: ${skip}`);
} else {
  // On a shard worker; the other tests run where threads: auto puts the graph (the I/O thread on two cores).
  test('TCP: a 6 MB HTTP download through the NAT (on a shard worker) arrives intact, and the server sees a pool address', async () => {
    const dir = tempDir();
    try {
      const blob = randomBytes(6 << 20);
      writeFileSync(join(dir, 'blob'), blob);
      await withTopology(async (t) => {
        natRoutes(t);
        const engine = await startNat(t, 1, '--threads', 'worker');
        const server = t.start(t.ns.server, ['python3', '-u', '-m', 'http.server', '8080', '--bind', ADDRESSES.server, '--directory', dir]);
        let log = '';
        server.stderr!.on('data', (d) => (log += d));
        const r = t.run(t.ns.client, ['curl', '-sS', '--retry', '20', '--retry-connrefused', '--retry-delay', '1', '-m', '60',
          '-o', join(dir, 'got'), `http://${ADDRESSES.server}:8080/blob`], { check: false, timeout: 90_000 });
        assert.is(r.status, 0, `curl: ${r.stderr}\n${engine.stdout()}`);
        assert.is(sha256(readFileSync(join(dir, 'got'))), sha256(blob));
        await waitFor(() => log.includes('GET /blob'), 5_000, 'the server to log the request');
        const seen = /^(\S+) - - .*"GET \/blob HTTP\/1\.1" 200/m.exec(log);
        assert.ok(seen, log);
        assert.match(seen![1], POOL, `the server saw ${seen![1]}`);
        // The block log names the same external address for the subscriber's TCP block.
        const stdout = await stopNat(engine);
        const tcp = blockRecords(stdout).filter((b) => b.event === 'allocate' && b.protocol === 'tcp');
        assert.is(tcp.length, 1, stdout);
        assert.is(tcp[0].subscriber, ADDRESSES.client);
        assert.is(tcp[0].external, seen![1]);
        // The download went through the NAT: several thousand segments translated each way.
        const nat = /^nat\s+NAT\s.*$/m.exec(stdout)?.[0] ?? '';
        assert.ok(Number(/translated_in=(\d+)/.exec(nat)?.[1] ?? 0) > 4000, nat);
        assert.ok(Number(/translated_out=(\d+)/.exec(nat)?.[1] ?? 0) > 500, nat);
      });
    } finally {
      removeDir(dir);
    }
  });

  test('UDP: endpoint-independent mapping: one socket is seen from the same external address and port by three servers', async () => {
    await withTopology(async (t) => {
      natRoutes(t);
      const engine = await startNat(t, 1);
      const served = await echoServer(t, [`${ADDRESSES.server}:9000`, `${SERVER_B}:9000`, `${ADDRESSES.server}:9001`]);
      const answers: string[] = python(t, `
s = udp('${ADDRESSES.client}', 40000)
print(json.dumps([ask(s, endpoint(d))[0] for d in sys.argv[1:]]))
`, [`${ADDRESSES.server}:9000`, `${SERVER_B}:9000`, `${ADDRESSES.server}:9001`]);
      await stopNat(engine);
      // The servers' own log: one line per datagram, each from the same external endpoint.
      const lines = served();
      const sources = new Map(lines.map((l) => l.split(' ') as [string, string]));
      assert.equal([...sources.keys()].sort(), [`${ADDRESSES.server}:9000`, `${ADDRESSES.server}:9001`, `${SERVER_B}:9000`], lines.join('\n'));
      const external = new Set(sources.values());
      assert.is(external.size, 1, `the servers saw ${[...sources.entries()].join(', ')}`);
      const [address] = [...external][0].split(':');
      assert.match(address, POOL);
      // What the client was told matches what the servers logged.
      assert.equal(new Set(answers), external);
    });
  });

  test('UDP hairpinning: a subscriber reaches another through its external address and is seen from its own', async () => {
    await withTopology(async (t) => {
      natRoutes(t);
      const engine = await startNat(t, 1);
      await echoServer(t, [`${ADDRESSES.server}:9000`]);
      const r = hairpin(t, ADDRESSES.client, 40002, CLIENT_B, 40003);
      const stdout = await stopNat(engine);
      checkHairpin(r);
      assert.match(stdout, /\bhairpinned=2\b/, stdout);
    });
  });

  test('ICMP echo: pings through the NAT are answered, and the server sees a pool address', async () => {
    await withTopology(async (t) => {
      natRoutes(t);
      const engine = await startNat(t, 1);
      const dump = t.start(t.ns.server, ['tcpdump', '-i', t.dev.server, '-n', '-l', '--immediate-mode', 'icmp']);
      let seen = '';
      let err = '';
      dump.stdout!.on('data', (d) => (seen += d));
      dump.stderr!.on('data', (d) => (err += d));
      await waitFor(() => err.includes('listening on') || dump.exitCode !== null, 10_000, 'tcpdump to start');
      // A raw-socket ping (no ping binary needed): 3 echo requests with identifier 0x4242, each answered.
      const r = python(t, `
import os, struct, time
def csum(b):
    b += b'\\0' * (len(b) & 1)
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.bind(('${ADDRESSES.client}', 0))
s.settimeout(0.5)
ident, answered = 0x4242, []
for seq in range(1, 4):
    payload = b'wirepath-nat-%d' % seq
    msg = struct.pack('!BBHHH', 8, 0, 0, ident, seq) + payload
    msg = msg[:2] + struct.pack('!H', csum(msg)) + msg[4:]
    deadline = time.time() + 3
    got = False
    while not got and time.time() < deadline:
        s.sendto(msg, ('${ADDRESSES.server}', 0))
        end = time.time() + 0.5
        while time.time() < end:
            try:
                data, peer = s.recvfrom(2048)
            except socket.timeout:
                break
            icmp = data[(data[0] & 15) * 4:]
            typ, code, _, rid, rseq = struct.unpack('!BBHHH', icmp[:8])
            if typ == 0 and rid == ident and rseq == seq and icmp[8:] == payload and csum(icmp) == 0:
                answered.append([seq, peer[0]]); got = True; break
print(json.dumps(answered))
`);
      await new Promise((res) => setTimeout(res, 300));
      process.kill(-dump.pid!, 'SIGINT');
      await exited(dump);
      const stdout = await stopNat(engine);
      assert.equal(r, [[1, ADDRESSES.server], [2, ADDRESSES.server], [3, ADDRESSES.server]], stdout);
      const requests = seen.split('\n').filter((l) => l.includes('ICMP echo request'));
      assert.ok(requests.length >= 3, seen);
      for (const line of requests) {
        const m = /IP (\S+) > 198\.18\.0\.2: ICMP echo request, id (\d+)/.exec(line);
        assert.ok(m, line);
        assert.match(m![1], POOL, line);
      }
      assert.ok(seen.includes('ICMP echo reply'), seen);
    });
  });

  test('traceroute through the NAT: the engine is hop 1 (time exceeded from the gateway, no mapping made), the server hop 2; a server\'s ping with TTL 1 is answered from the outside gateway; both sides find their gateway by ARP and the engine finds them; a request to the gateway itself with TTL 1 is answered', async () => {
    await withTopology(async (t) => {
      natRoutes(t);
      // No static neighbour for the gateways: the peers ask for them by ARP, and the engine answers. And a client MAC
      // no config names: the engine asks for it.
      t.run(t.ns.client, ['ip', 'neigh', 'del', ADDRESSES.clientGateway, 'dev', t.dev.client]);
      t.run(t.ns.server, ['ip', 'neigh', 'del', ADDRESSES.serverGateway, 'dev', t.dev.server]);
      t.run(t.ns.client, ['ip', 'link', 'set', 'dev', t.dev.client, 'address', '02:00:64:00:00:77']);
      const engine = await startNat(t, 1);
      // UDP probes, one per hop, one at a time: the first expires at the engine, the second reaches the server, whose port
      // unreachable comes back through the NAT (an ICMP error about a translated datagram).
      const trace = t.run(t.ns.client, ['traceroute', '-n', '-N', '1', '-q', '1', '-w', '2', '-m', '3', ADDRESSES.server], { check: false, timeout: 30_000 });
      const ping = t.run(t.ns.server, ['ping', '-n', '-c', '1', '-W', '2', '-t', '1', '203.0.113.1'], { check: false, timeout: 10_000 });
      // To the gateway itself: nothing expired (RFC 1812 §4.2.2.9), and the engine answers no ping.
      const pingGateway = t.run(t.ns.server, ['ping', '-n', '-c', '1', '-W', '1', '-t', '1', ADDRESSES.serverGateway], { check: false, timeout: 10_000 });
      assert.not.match(pingGateway.stdout.toString(), /Time to live exceeded/, pingGateway.stdout.toString());
      // A NAT-PMP request to the gateway itself with TTL 1: for the router, so answered (RFC 1812 §4.2.2.9), not expired.
      const natPmp = python(t, `
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 1)
s.settimeout(2)
s.sendto(b'\\x00\\x00', ('${ADDRESSES.clientGateway}', 5351))
print(json.dumps(list(s.recv(100)[:4])))
`);
      assert.equal(natPmp, [0, 128, 0, 0], 'an external address response, result 0');
      const neighbours = [t.run(t.ns.client, ['ip', 'neigh', 'show', ADDRESSES.clientGateway, 'dev', t.dev.client]), t.run(t.ns.server, ['ip', 'neigh', 'show', ADDRESSES.serverGateway, 'dev', t.dev.server])]
        .map((r) => r.stdout.toString());
      const stdout = await stopNat(engine);
      const counter = (element: string, name: string) => Number(new RegExp(`^${element}\\s.*\\b${name}=(\\d+)`, 'm').exec(stdout)?.[1] ?? 0);
      assert.match(neighbours[0], new RegExp(`lladdr ${MACS.engineClient}`), neighbours[0]);
      assert.match(neighbours[1], new RegExp(`lladdr ${MACS.engineServer}`), neighbours[1]);
      // The server may learn its gateway from the engine's own request (for its address) and never ask.
      assert.ok(counter('arp_in', 'answered') >= 1, stdout);
      assert.ok(counter('to_client', 'learned') >= 1 && counter('to_server', 'learned') >= 1, stdout);
      const hops = trace.stdout.toString().split('\n').slice(1).map((l) => l.trim().split(/\s+/)[1]).filter(Boolean);
      assert.equal(hops, [ADDRESSES.clientGateway, ADDRESSES.server], trace.stdout.toString() + trace.stderr.toString());
      assert.match(ping.stdout.toString(), new RegExp(`From ${ADDRESSES.serverGateway.replace(/\./g, '\\.')} icmp_seq=1 Time to live exceeded`), ping.stdout.toString());
      assert.ok(counter('expired_in', 'sent') >= 1 && counter('expired_out', 'sent') >= 1, stdout);
      // One probe at a time: the one that expired never reached the NAT, so only the second was translated.
      assert.is(counter('nat', 'translated_out'), 1, stdout);
    });
  });

  test('PCP and NAT-PMP: subscribers map ports at their gateway (a PCP request from a socket, natpmpc); servers they never sent to reach them', async () => {
    await withTopology(async (t) => {
      natRoutes(t);
      const engine = await startNat(t, 1);
      // A MAP request (RFC 6887 §7.1, §11.1) for UDP port 7000, lifetime 600 s, from a real socket.
      const mapped = python(t, `
import struct
s = udp('${ADDRESSES.client}', 5350)
request = struct.pack('!BBHI', 2, 1, 0, 600) + bytes(10) + b'\\xff\\xff' + socket.inet_aton('${ADDRESSES.client}')
request += bytes(range(1, 13)) + struct.pack('!B3xHH', 17, 7000, 0) + bytes(16)
for attempt in range(5):
    s.sendto(request, ('${ADDRESSES.clientGateway}', 5351))
    try:
        answer, peer = s.recvfrom(2048)
        break
    except socket.timeout:
        pass
else:
    raise SystemExit('no PCP answer')
print(json.dumps({'from': '%s:%d' % peer, 'length': len(answer), 'response': answer[1] >> 7, 'result': answer[3],
    'lifetime': struct.unpack('!I', answer[4:8])[0], 'nonce': answer[24:36].hex(),
    'port': struct.unpack('!H', answer[42:44])[0], 'address': socket.inet_ntoa(answer[56:60])}))
`);
      assert.equal([mapped.from, mapped.length, mapped.response, mapped.result, mapped.lifetime, mapped.nonce],
        [`${ADDRESSES.clientGateway}:5351`, 60, 1, 0, 600, '0102030405060708090a0b0c'], JSON.stringify(mapped));
      assert.match(mapped.address, POOL);
      // The subscriber listens on its port; a server sends to the external endpoint, unsolicited.
      const listener = t.start(t.ns.client, ['python3', '-u', '-c', `
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('${ADDRESSES.client}', 7000))
print('ready', flush=True)
data, peer = s.recvfrom(2048)
print('%s %s:%d' % (data.decode(), peer[0], peer[1]), flush=True)
`]);
      let heard = '';
      listener.stdout!.on('data', (d) => (heard += d));
      await waitFor(() => heard.includes('ready') || listener.exitCode !== null, 10_000, 'the subscriber to listen');
      const send = `import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('${ADDRESSES.server}', 9999))
for i in range(20):
    s.sendto(b'unsolicited', ('${mapped.address}', ${mapped.port}))
    time.sleep(0.1)
`;
      const sender = t.start(t.ns.server, ['python3', '-c', send]);
      await waitFor(() => heard.includes('unsolicited') || listener.exitCode !== null, 10_000, 'the datagram to reach the subscriber');
      sender.kill();
      assert.match(heard, new RegExp(`unsolicited ${ADDRESSES.server.replace(/\./g, '\\.')}:9999`), heard);
      // natpmpc (libnatpmp), a NAT-PMP client (RFC 6886, PCP's version 0): the public address, then a TCP port
      // with the public port it suggests.
      const address = t.run(t.ns.client, ['natpmpc', '-g', ADDRESSES.clientGateway], { check: false, timeout: 30_000 }).stdout.toString();
      assert.match(address, new RegExp(`Public IP address : ${mapped.address.replace(/\./g, '\\.')}\\b`), address);
      const tcp = t.run(t.ns.client, ['natpmpc', '-g', ADDRESSES.clientGateway, '-a', '17100', '7100', 'tcp', '300'], { check: false, timeout: 30_000 }).stdout.toString();
      const granted = /Mapped public port (\d+) protocol TCP to local port 7100 li[f]?e?time (\d+)/.exec(tcp);
      assert.ok(granted, tcp);
      assert.equal([granted![1], granted![2]], ['17100', '300'], tcp);
      // A connection from the server to the port natpmpc was given reaches the subscriber's listener.
      const server = t.start(t.ns.client, ['python3', '-u', '-c', `
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('${ADDRESSES.client}', 7100)); s.listen(1)
print('ready', flush=True)
c, peer = s.accept()
print('%s %s' % (c.recv(100).decode(), peer[0]), flush=True)
`]);
      let accepted = '';
      server.stdout!.on('data', (d) => (accepted += d));
      await waitFor(() => accepted.includes('ready') || server.exitCode !== null, 10_000, 'the subscriber to listen on TCP');
      const connect = t.run(t.ns.server, ['python3', '-c', `
import socket
s = socket.create_connection(('${mapped.address}', ${granted![1]}), timeout=10)
s.sendall(b'inbound-tcp')
`], { check: false, timeout: 30_000 });
      assert.is(connect.status, 0, connect.stderr.toString());
      await waitFor(() => accepted.includes('inbound-tcp') || server.exitCode !== null, 10_000, 'the connection to reach the subscriber');
      assert.match(accepted, new RegExp(`inbound-tcp ${ADDRESSES.server.replace(/\./g, '\\.')}`), accepted);
      const stdout = await stopNat(engine);
      // Clients retry a request whose answer is late: at least the three asked, and the two mappings.
      const counter = (name: string) => Number(new RegExp(`\\b${name}=(\\d+)`).exec(stdout)?.[1] ?? 0);
      assert.ok(counter('pcp_requests') >= 3 && counter('pcp_mappings') >= 2 && counter('pcp_errors') === 0, stdout);
    });
  });

  test('two shards: the download and endpoint-independent mapping hold', async () => {
    const dir = tempDir();
    try {
      const blob = randomBytes(4 << 20);
      writeFileSync(join(dir, 'blob'), blob);
      await withTopology(async (t) => {
        natRoutes(t);
        const engine = await startNat(t, 2);
        t.start(t.ns.server, ['python3', '-u', '-m', 'http.server', '8080', '--bind', ADDRESSES.server, '--directory', dir]);
        const served = await echoServer(t, [`${ADDRESSES.server}:9000`, `${SERVER_B}:9000`]);
        const r = t.run(t.ns.client, ['curl', '-sS', '--retry', '20', '--retry-connrefused', '--retry-delay', '1', '-m', '60',
          '-o', join(dir, 'got'), `http://${ADDRESSES.server}:8080/blob`], { check: false, timeout: 90_000 });
        assert.is(r.status, 0, `curl: ${r.stderr}`);
        assert.is(sha256(readFileSync(join(dir, 'got'))), sha256(blob));
        for (const [client, port] of [[ADDRESSES.client, 40010], [CLIENT_B, 40011]] as const) {
          python(t, `
s = udp('${client}', ${port})
print(json.dumps([ask(s, endpoint(d))[0] for d in sys.argv[1:]]))
`, [`${ADDRESSES.server}:9000`, `${SERVER_B}:9000`]);
        }
        await stopNat(engine);
        const lines = served();
        assert.is(lines.length, 4, lines.join('\n'));
        const a = lines.map((l) => l.split(' ')[1]);
        assert.is(a[0], a[1], lines.join('\n'));
        assert.is(a[2], a[3], lines.join('\n'));
        assert.is.not(a[0], a[2]);
        for (const e of a) assert.match(e.split(':')[0], POOL);
      });
    } finally {
      removeDir(dir);
    }
  });

  /** Sends one SYN from the server namespace (a raw socket: no retransmissions) and waits up to 10 s for an ICMP answer to it. */
  const UNSOLICITED_SYN = `
import socket, struct, time, json, sys
src, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
def checksum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
tcp = struct.pack('!HHIIBBHHH', 40404, port, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack('!BBH', 0, 6, len(tcp))
tcp = tcp[:16] + struct.pack('!H', checksum(pseudo + tcp)) + tcp[18:]
icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
icmp.settimeout(10)
out = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
out.sendto(tcp, (dst, 0))
sent = time.time()
try:
    while True:
        data, peer = icmp.recvfrom(2048)
        ihl = (data[0] & 15) * 4
        quoted = data[ihl + 8:]
        if socket.inet_ntoa(quoted[16:20]) == dst and struct.unpack('!H', quoted[22:24])[0] == port:
            print(json.dumps({'after': time.time() - sent, 'type': data[ihl], 'code': data[ihl + 1], 'from': peer[0]})); break
except socket.timeout:
    print(json.dumps({'after': None}))
`;

  for (const threads of ['inline', 'worker']) {
    test(`a quiet NAT does its timed work without packets (${threads}): a reset connection's block is released, an unsolicited SYN answered after 6 s`, async () => {
      await withTopology(async (t) => {
        natRoutes(t);
        const engine = await startNat(t, 1, '--threads', threads, '--set', 'nat.tcp_rst=1s', '--set', 'nat.syn_icmp=true');
        const listener = t.start(t.ns.server, ['python3', '-c', `
import socket, time
s = socket.socket(); s.bind(('${ADDRESSES.server}', 9100)); s.listen()
c, _ = s.accept(); time.sleep(60)`]);
        try {
          // A connection the client resets: its session lives tcp_rst more, and its mapping and block end with it.
          const reset = t.run(t.ns.client, ['python3', '-c', `
import socket, struct, time
for attempt in range(50):
    try:
        c = socket.create_connection(('${ADDRESSES.server}', 9100), timeout=1); break
    except OSError: time.sleep(0.2)
c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0)); c.close()`], { check: false, timeout: 30_000 });
          assert.is(reset.status, 0, reset.stderr.toString());
          const released = () => blockRecords(engine.stdout()).filter((b) => b.event === 'release' && b.protocol === 'tcp');
          // After the mapping's end, a sweep of the mappings table (a round in 5 s) finds it, then the search for idle
          // blocks (a round of the subscribers in 10 s) the block.
          await waitFor(() => released().length > 0, 30_000, 'the TCP block released, with no packet after the reset').catch((e) => {
            throw new Error(`${e.message}\n${engine.stdout()}\n${engine.stderr()}`);
          });
          assert.is(released()[0].subscriber, ADDRESSES.client);
          // Nothing else reaches the NAT after the SYN: its answer is due on the clock alone.
          const syn = JSON.parse(t.run(t.ns.server, ['python3', '-c', UNSOLICITED_SYN, ADDRESSES.server, '203.0.113.9', '8888'], { timeout: 30_000 }).stdout.toString());
          assert.ok(syn.after !== null, 'no ICMP answer to the unsolicited SYN within 10 s');
          assert.ok(syn.after > 5.9 && syn.after < 7, `answered after ${syn.after} s`);
          assert.equal([syn.type, syn.code], [3, 3], 'ICMP port unreachable');
          assert.match(syn.from, POOL);
        } finally {
          listener.kill();
        }
        const stdout = await stopNat(engine);
        assert.match(/^nat\s+NAT\s.*$/m.exec(stdout)?.[0] ?? '', /syn_icmp_sent=1\b/);
      });
    });
  }

  // Five pairs of subscribers. Each subscriber's mappings live on the shard its address steers to
  // (addressHash -> bucket -> shard): with two shards 100.64.0.2, .3, .4 and .6 are on one shard and
  // .5 and .7 on the other, so a hairpinned packet to .5 or .7 is handed to the other shard.
  test('two shards: hairpinning between subscribers (some on different shards)', async () => {
    await withTopology(async (t) => {
      natRoutes(t);
      const others = ['100.64.0.4', '100.64.0.5', '100.64.0.6', '100.64.0.7'];
      for (const o of others) t.run(t.ns.client, ['ip', 'addr', 'add', `${o}/24`, 'dev', t.dev.client]);
      const engine = await startNat(t, 2);
      await echoServer(t, [`${ADDRESSES.server}:9000`]);
      const results = [CLIENT_B, ...others].map((b, i) => [b, hairpin(t, ADDRESSES.client, 40020 + i, b, 40030 + i)] as const);
      const stdout = await stopNat(engine);
      const failed = results.filter(([, r]) => r.b_got !== 'hello' || r.a_got !== 'back');
      assert.is(failed.length, 0, `hairpinning failed from ${ADDRESSES.client} to ${failed.map(([b, r]) => `${b} (${JSON.stringify(r)})`).join(', ')}\n${stdout}`);
      for (const [, r] of results) checkHairpin(r);
    });
  });
}

test.run();
