// FromDevice and ToDevice with real Linux peers: a client and a server in their own network
// namespaces, wirepath in the namespace between them (test/topology.ts). TCP and UDP pass through
// intact, the engine's own capture matches tcpdump on the far side, and a missing interface or a
// missing capability is reported clearly. Needs root; skipped (with a note) without it.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { ROOT, tempDir, removeDir, readPcap, ipv4Frame, readFifo } from './helpers.ts';
import { withTopology, startEngine, waitFor, exited, available, ADDRESSES, MACS, type Topology } from './topology.ts';

/** --set arguments naming the topology's engine interfaces in configs/bridge.yaml. */
const bridgeDevices = (t: Topology) => [
  '--set', `a_in.device=${t.dev.engineClient}`, '--set', `b_out.device=${t.dev.engineClient}`,
  '--set', `b_in.device=${t.dev.engineServer}`, '--set', `a_out.device=${t.dev.engineServer}`,
];

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A client -> server UDP frame to port 9000 (IPv4, UDP), in a capture's Ethernet frames. */
const isProbe = (frame: Buffer) => frame.length >= 42 && frame.readUInt16BE(12) === 0x0800 && frame[23] === 17 && frame.readUInt16BE(36) === 9000;

/** Starts tcpdump in a namespace and waits until it captures. */
async function tcpdump(t: Topology, ns: string, dev: string, file: string, filter: string) {
  const child = t.start(ns, ['tcpdump', '-i', dev, '-n', '--immediate-mode', '-U', '-w', file, filter]);
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  await waitFor(() => err.includes('listening on') || child.exitCode !== null, 10_000, 'tcpdump to start');
  return {
    async stop() {
      process.kill(-child.pid!, 'SIGINT');
      await exited(child);
      return readPcap(file).records.map((r) => r.data);
    },
  };
}

const skip = available();
if (skip) {
  console.log(`device tests skipped: ${skip}`);
} else {
  // Both rings, and both places the graph runs: a shard worker, and the default, which on two cores
  // or fewer is the I/O thread (said on standard error).
  for (const [ring, threads] of [['v3', 'worker'], ['v2', 'auto']]) test(`TCP: an 8 MB HTTP download through the bridge arrives intact (sha256), ring: ${ring}, threads: ${threads}`, async () => {
    const dir = tempDir();
    try {
      const blob = randomBytes(8 << 20);
      writeFileSync(join(dir, 'blob'), blob);
      await withTopology(async (t) => {
        const offloads = () => t.run(t.ns.engine, ['ethtool', '-k', t.dev.engineClient]).stdout.toString().match(/^\s*(tx-tcp-segmentation|generic-segmentation-offload|tx-checksumming): \w+/gm)!.map((l) => l.trim());
        // The topology leaves them off; on, they show what the engine gives back.
        t.run(t.ns.engine, ['ethtool', '-K', t.dev.engineClient, 'tso', 'on', 'gso', 'on', 'tx', 'on']);
        const before = offloads();
        const engine = await startEngine(t, ['configs/bridge.yaml', ...bridgeDevices(t), '--set', `a_in.ring=${ring}`, '--set', `b_in.ring=${ring}`,
          ...(threads === 'auto' ? [] : ['--threads', threads])], 4, ROOT);
        t.start(t.ns.server, ['python3', '-m', 'http.server', '8080', '--bind', ADDRESSES.server, '--directory', dir]);
        // The server needs a moment to listen; curl retries refused connections.
        const r = t.run(t.ns.client, ['curl', '-sS', '--retry', '20', '--retry-connrefused', '--retry-delay', '1', '-m', '60',
          '-o', join(dir, 'got'), `http://${ADDRESSES.server}:8080/blob`], { check: false, timeout: 90_000 });
        assert.is(r.status, 0, `curl: ${r.stderr}`);
        assert.is(sha256(readFileSync(join(dir, 'got'))), sha256(blob));
        assert.ok(offloads().every((line) => line.endsWith(': off')), `off while it runs: ${offloads()}`);
        assert.is(await engine.stop(), 130, engine.stderr());
        assert.equal(offloads(), before, 'the offloads as they were before');
        assert.ok(before.some((line) => line.endsWith(': on')));
        assert.match(engine.stdout(), /b_in\s+FromDevice/);
        const onIoThread = threads === 'auto' && availableParallelism() <= 2;
        assert.is(/shards run on the I\/O thread: a_in is a device/.test(engine.stderr()), onIoThread, engine.stderr());
      });
    } finally {
      removeDir(dir);
    }
  });

  test('configs/nat-bridge.yaml: TCP through Classifier -> Counter -> Rewrite, the server sees 198.18.0.1', async () => {
    const dir = tempDir();
    try {
      const blob = randomBytes(4 << 20);
      writeFileSync(join(dir, 'blob'), blob);
      await withTopology(async (t) => {
        t.route('router');
        const engine = await startEngine(t, ['configs/nat-bridge.yaml', '--set', `from_client.device=${t.dev.engineClient}`, '--set', `to_client.device=${t.dev.engineClient}`,
          '--set', `from_server.device=${t.dev.engineServer}`, '--set', `to_server.device=${t.dev.engineServer}`], 4, ROOT);
        const server = t.start(t.ns.server, ['python3', '-u', '-m', 'http.server', '8080', '--bind', ADDRESSES.server, '--directory', dir]);
        let log = '';
        server.stderr!.on('data', (d) => (log += d));
        const r = t.run(t.ns.client, ['curl', '-sS', '--retry', '20', '--retry-connrefused', '--retry-delay', '1', '-m', '60',
          '-o', join(dir, 'got'), `http://${ADDRESSES.server}:8080/blob`], { check: false, timeout: 90_000 });
        assert.is(r.status, 0, `curl: ${r.stderr}`);
        assert.is(sha256(readFileSync(join(dir, 'got'))), sha256(blob));
        await waitFor(() => log.includes('GET /blob'), 5_000, 'the server to log the request');
        assert.match(log, /^198\.18\.0\.1 - - .*"GET \/blob HTTP\/1\.1" 200/m);
        assert.is(await engine.stop(), 130, engine.stderr());
        assert.match(engine.stdout(), /snat\s+Rewrite\s+(\d+)/);
      });
    } finally {
      removeDir(dir);
    }
  });

  test('UDP: iperf3 datagrams pass through the bridge without loss', async () => {
    await withTopology(async (t) => {
      const engine = await startEngine(t, ['configs/bridge.yaml', ...bridgeDevices(t)], 4, ROOT);
      const server = t.start(t.ns.server, ['iperf3', '-s', '-1', '-B', ADDRESSES.server]);
      await new Promise((r) => setTimeout(r, 500));
      const r = t.run(t.ns.client, ['iperf3', '-c', ADDRESSES.server, '-u', '-b', '20M', '-l', '1200', '-t', '2', '-J'], { check: false, timeout: 30_000 });
      assert.is(r.status, 0, r.stdout.toString() + r.stderr.toString());
      const sum = JSON.parse(r.stdout.toString()).end.sum;
      assert.ok(sum.packets > 3000, `packets sent: ${sum.packets}`);
      assert.ok(sum.lost_percent < 1, `lost ${sum.lost_percent}%`);
      await exited(server);
      assert.is(await engine.stop(), 130, engine.stderr());
    });
  });

  test('a reload under UDP traffic loses no datagram: the receive sockets pass to the new pipeline, whose rings held what came meanwhile', async () => {
    await withTopology(async (t) => {
      // Datagrams the server's socket had no room for (the reload's backlog comes in one burst): the receiver's, not ours.
      const overflowed = () => {
        const [names, values] = t.run(t.ns.server, ['cat', '/proc/net/snmp']).stdout.toString().split('\n').filter((l) => l.startsWith('Udp:')).map((l) => l.split(/\s+/));
        return Number(values[names.indexOf('RcvbufErrors')]);
      };
      const engine = await startEngine(t, ['configs/bridge.yaml', ...bridgeDevices(t), '--control', '0'], 4, ROOT);
      try {
        await waitFor(() => /token \w+/.test(engine.stderr()), 10_000, 'the control line');
        const [, url, token] = /control API on (\S+), token (\w+)/.exec(engine.stderr())!;
        const server = t.start(t.ns.server, ['iperf3', '-s', '-1', '-B', ADDRESSES.server]);
        await new Promise((r) => setTimeout(r, 500));
        const before = overflowed();
        const client = t.start(t.ns.client, ['iperf3', '-c', ADDRESSES.server, '-u', '-b', '40M', '-l', '1200', '-t', '4', '-J']);
        let report = '';
        client.stdout!.on('data', (d) => (report += d));
        await new Promise((r) => setTimeout(r, 1500));
        const reload = t.run(t.ns.engine, [process.execPath, join(ROOT, 'bin/wirepath.js'), 'ctl', 'reload', join(ROOT, 'configs/bridge.yaml'), '--control', url, '--token', token],
          { check: false, timeout: 60_000 });
        assert.is(reload.status, 0, reload.stderr.toString());
        assert.is(await exited(client), 0, report);
        await exited(server);
        const sum = JSON.parse(report).end.sum;
        assert.ok(sum.packets > 10_000, `packets sent: ${sum.packets}`);
        // Before, the sockets were closed and opened again: about 600 of these lost (150 ms).
        assert.is(sum.lost_packets, overflowed() - before, `lost ${sum.lost_packets} of ${sum.packets} across the reload, beyond those the server's socket overflowed`);
      } finally {
        await engine.stop();
      }
    });
  });

  /**
   * A bridge whose frames from the client ToPcap also writes (`tap`: its parameters): 300 UDP datagrams of 1 to 1472
   * bytes with distinct contents (about 220 KB) cross it. Returns the frames tcpdump saw on the far side and the engine's
   * output once it has stopped. `beforeEngine` runs before the engine starts.
   */
  async function tapped(dir: string, tap: string, beforeEngine?: () => Promise<void>) {
    const config = join(dir, 'tap.yaml');
    let result: { seen: Buffer[]; stdout: string } | undefined;
    await withTopology(async (t) => {
      writeFileSync(config, `
elements:
  from_client: { type: FromDevice, device: ${t.dev.engineClient} }
  tee:         { type: Tee, outputs: 2 }
  to_server:   { type: ToDevice, device: ${t.dev.engineServer} }
  tap:         { type: ToPcap, ${tap} }
  from_server: { type: FromDevice, device: ${t.dev.engineServer} }
  to_client:   { type: ToDevice, device: ${t.dev.engineClient} }
connections:
  - from_client -> tee -> to_server
  - tee[1] -> tap
  - from_server -> to_client
`);
      await beforeEngine?.();
      const engine = await startEngine(t, [config], 4, ROOT);
      const far = await tcpdump(t, t.ns.server, t.dev.server, join(dir, 'far.pcap'), 'udp port 9000');
      const sender = `import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n`
        + `for i in range(300): s.sendto(bytes([i % 256]) * (1 + i * 1471 // 299), ('${ADDRESSES.server}', 9000))\n`;
      t.run(t.ns.client, ['python3', '-c', sender]);
      await new Promise((r) => setTimeout(r, 500));
      const seen = await far.stop();
      assert.is(await engine.stop(), 130, engine.stderr());
      result = { seen, stdout: engine.stdout() };
    });
    return result!;
  }

  test('ToPcap on the engine output shows the frames tcpdump sees on the far side', async () => {
    const dir = tempDir();
    try {
      const { seen } = await tapped(dir, 'file: engine.pcap, resolution: ns');
      const frames = readPcap(join(dir, 'engine.pcap')).records.map((r) => r.data).filter(isProbe);
      assert.is(seen.length, 300);
      assert.is(frames.length, seen.length);
      frames.forEach((frame, i) => assert.ok(frame.equals(seen[i]), `frame ${i} differs`));
    } finally {
      removeDir(dir);
    }
  });

  test('ToPcap into a FIFO whose reader lags, fed from devices (when_full: auto): forwarding goes on, and the tap drops and counts what the full pipe cannot take', async () => {
    const dir = tempDir();
    try {
      let reader: Awaited<ReturnType<typeof readFifo>> | undefined;
      const { seen, stdout } = await tapped(dir, 'file: tap.fifo', async () => { reader = await readFifo(join(dir, 'tap.fifo'), 'lagging'); });
      reader!.go();
      const frames = readPcap(await reader!.done).records.map((r) => r.data).filter(isProbe);
      assert.is(seen.length, 300, 'every datagram was forwarded');
      const lagged = Number(/tap .*lagged=(\d+)/.exec(stdout)?.[1]);
      assert.ok(lagged > 0 && frames.length < 300, `${frames.length} tapped, ${lagged} lagged\n${stdout}`);
      // The pipe took the first frames and then had no room: the tap holds the first datagrams, each whole.
      frames.forEach((frame, i) => assert.ok(frame.equals(seen[i]), `frame ${i} differs`));
    } finally {
      removeDir(dir);
    }
  });

  test('VLAN tags (802.1Q with a priority, QinQ, a priority tag) cross the bridge as they came', async () => {
    // veth hands a received frame's outer tag over beside it, as NICs do: the addon puts it back.
    const mac = (m: string) => Buffer.from(m.replaceAll(':', ''), 'hex');
    const tag = (tpid: number, tci: number) => Buffer.from([tpid >> 8, tpid & 255, tci >> 8, tci & 255]);
    const inner = ipv4Frame({ src: ADDRESSES.client, dst: ADDRESSES.server, proto: 'udp', sport: 1111, dport: 2222 }).subarray(12);
    const frames = [[tag(0x8100, (3 << 13) | 7)], [tag(0x88a8, 20), tag(0x8100, 7)], [tag(0x8100, 5 << 13)]]
      .map((tags) => Buffer.concat([mac(MACS.server), mac(MACS.client), ...tags, inner]));
    await withTopology(async (t) => {
      const engine = await startEngine(t, ['configs/bridge.yaml', ...bridgeDevices(t), '--quiet'], 4, ROOT);
      const dir = tempDir();
      try {
        const far = await tcpdump(t, t.ns.server, t.dev.server, join(dir, 'far.pcap'), 'vlan');
        const send = `import socket,sys\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\ns.bind(('${t.dev.client}',0))\n`
          + frames.map((f) => `s.send(bytes.fromhex('${f.toString('hex')}'))\n`).join('');
        t.run(t.ns.client, ['python3', '-c', send]);
        await new Promise((r) => setTimeout(r, 1000));
        const seen = await far.stop();
        assert.equal(seen.map((f) => f.toString('hex')), frames.map((f) => f.toString('hex')));
      } finally {
        await engine.stop();
        removeDir(dir);
      }
    });
  });

  test('the addon checks every address against the memory: slot stack, descriptors, frames', async () => {
    await withTopology(async (t) => {
      // The addon opens sockets in the caller's namespace: ask a child in the engine namespace.
      const script = `
        import { afpacket } from ${JSON.stringify(join(ROOT, 'native/afpacket.ts'))};
        const a = afpacket('probe');
        const mem = new Uint8Array(new SharedArrayBuffer(65536));
        const rx = a.openRx(${JSON.stringify(t.dev.engineClient)}, { room: 1920, ringBytes: 262144, version: 3, retireMs: 1, fanout: 0, promiscuous: false });
        const tx = a.openTx(${JSON.stringify(t.dev.engineClient)}, 1920);
        const codes = [];
        const attempt = (f) => { try { f(); codes.push('ok'); } catch (e) { codes.push(e.code); } };
        attempt(() => a.receive(rx, mem, 65532, 2, 0, 1, 128, 1920, 65535));
        attempt(() => a.receive(rx, mem, 0, 1, 65520, 1, 128, 1920, 65535));
        const d = new DataView(mem.buffer);
        d.setUint32(0, 65000, true); d.setUint32(4, 1000, true);
        attempt(() => a.send(tx, mem, 0, 1));
        d.setUint32(0, 0, true); d.setUint32(4, 64, true);
        attempt(() => a.send(tx, mem, 0, 1));
        console.log(codes.join(' '));
      `;
      const r = t.run(t.ns.engine, [process.execPath, '--import', 'tsx', '--input-type=module', '-e', script], { check: false });
      assert.is(r.stdout.toString().trim(), 'ERANGE ERANGE ERANGE ok', r.stderr.toString());
    });
  });

  test('a receive socket takes no frame of another interface while it opens (its 32 MiB ring is mapped before it is bound)', async () => {
    await withTopology(async (t) => {
      // The server floods the engine's other interface, es.
      const flood = t.start(t.ns.server, ['python3', '-c', `import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nend = time.time() + 60\n`
        + `while time.time() < end: s.sendto(b'z' * 100, ('${ADDRESSES.client}', 9000))\n`]);
      const script = `
        import { afpacket } from ${JSON.stringify(join(ROOT, 'native/afpacket.ts'))};
        const a = afpacket('probe');
        const mem = new Uint8Array(new SharedArrayBuffer(1 << 20));
        const d = new DataView(mem.buffer);
        const server = Buffer.from(${JSON.stringify(MACS.server.replace(/:/g, ''))}, 'hex');
        let strays = 0;
        for (let round = 0; round < 50; round++) {
          const rx = a.openRx(${JSON.stringify(t.dev.engineClient)}, { room: 1920, snaplen: 65535, ringBytes: 32 << 20, version: 2, retireMs: 1, fanout: 0, promiscuous: false });
          for (let i = 0; i < 64; i++) d.setUint32(4 * i, 65536 + i * 4096, true);
          const n = a.receive(rx, mem, 0, 64, 8192, 64, 0, 1920, 65535);
          for (let i = 0; i < n; i++) {
            const slot = d.getUint32(8192 + 24 * i, true);
            if (slot && server.equals(mem.subarray(slot + 6, slot + 12))) strays++;
          }
          a.close(rx);
        }
        console.log(String(strays));
      `;
      try {
        await new Promise((r) => setTimeout(r, 500));
        const r = t.run(t.ns.engine, [process.execPath, '--import', 'tsx', '--input-type=module', '-e', script], { check: false, timeout: 120_000 });
        // Before, about 30 a socket: created for every interface's frames, it was bound to ec only after its ring was set up.
        assert.is(r.stdout.toString().trim(), '0', `frames from the server (on es) taken on ec: ${r.stdout}${r.stderr}`);
      } finally {
        process.kill(-flood.pid!, 'SIGKILL');
      }
    });
  });

  test('an interface with an address, or with IPv4 forwarding on: the start says the host stack acts on its frames too', async () => {
    await withTopology(async (t) => {
      t.kernel('forward');
      const engine = await startEngine(t, ['configs/bridge.yaml', ...bridgeDevices(t)], 4, ROOT);
      try {
        await waitFor(() => engine.stderr().includes(`net.ipv4.conf.${t.dev.engineServer}.forwarding = 1`), 10_000, 'the warnings');
        assert.ok(engine.stderr().includes(`${t.dev.engineClient} has the address 100.64.0.1/24: this host answers for it on the link too`), engine.stderr());
        assert.ok(engine.stderr().includes(`the kernel forwards IPv4 arriving on ${t.dev.engineServer} too (net.ipv4.conf.${t.dev.engineServer}.forwarding = 1)`), engine.stderr());
      } finally {
        await engine.stop();
      }
      // A capture sends nothing: the host's stack is its business.
      const dir = tempDir();
      try {
        const config = join(dir, 'capture.yaml');
        writeFileSync(config, `elements:\n  src: { type: FromDevice, device: ${t.dev.engineClient} }\n  out: { type: ToPcap, file: ${join(dir, 'out.pcap')} }\nconnections:\n  - src -> out\n`);
        const capture = await startEngine(t, [config], 1, ROOT);
        await capture.stop();
        assert.not.ok(/has the address|the kernel forwards/.test(capture.stderr()), capture.stderr());
      } finally {
        removeDir(dir);
        t.kernel('off');
      }
      const quiet = await startEngine(t, ['configs/bridge.yaml', ...bridgeDevices(t)], 4, ROOT);
      await quiet.stop();
      assert.not.ok(/has the address|the kernel forwards/.test(quiet.stderr()), quiet.stderr());
    });
  });

  test('a reload that keeps using an interface leaves its offloads off throughout (a change can reset a NIC\'s link)', async () => {
    await withTopology(async (t) => {
      t.run(t.ns.engine, ['ethtool', '-K', t.dev.engineClient, 'tso', 'on', 'gso', 'on', 'tx', 'on']);
      const engine = await startEngine(t, ['configs/bridge.yaml', ...bridgeDevices(t), '--control', '0'], 4, ROOT);
      try {
        await waitFor(() => /token \w+/.test(engine.stderr()), 10_000, 'the control line');
        const [, url, token] = /control API on (\S+), token (\w+)/.exec(engine.stderr())!;
        const reload = t.run(t.ns.engine, [process.execPath, join(ROOT, 'bin/wirepath.js'), 'ctl', 'reload', join(ROOT, 'configs/bridge.yaml'), '--control', url, '--token', token],
          { check: false, timeout: 60_000 });
        assert.is(reload.status, 0, reload.stderr.toString());
        await waitFor(() => engine.stderr().includes('reload: the run command'), 10_000, 'the reload');
        await new Promise((r) => setTimeout(r, 3000));
        assert.not.ok(engine.stderr().includes('turned the offloads of'), engine.stderr());
        assert.is(t.run(t.ns.client, ['ping', '-c', '2', '-i', '0.2', '-W', '2', ADDRESSES.server], { check: false, timeout: 30_000 }).status, 0, 'forwards after');
      } finally {
        await engine.stop();
      }
      assert.ok(engine.stderr().includes(`turned the offloads of ${t.dev.engineClient} back on`), engine.stderr());
    });
  });

  test('ToDevice: frames longer than the MTU are counted in errors, not in bytes, and the cause is logged once', async () => {
    await withTopology(async (t) => {
      t.run(t.ns.engine, ['ip', 'link', 'set', t.dev.engineServer, 'mtu', '1000']);
      const engine = await startEngine(t, ['configs/bridge.yaml', ...bridgeDevices(t), '--json'], 4, ROOT);
      t.run(t.ns.client, ['ping', '-c', '3', '-i', '0.2', '-W', '1', '-s', '1400', ADDRESSES.server], { check: false, timeout: 30_000 });
      await engine.stop();
      const result = JSON.parse(engine.stdout());
      const out = result.elements.a_out;
      assert.equal([out.packets, out.bytes, out.errors], [0, 0, 3], engine.stdout());
      assert.is(result.packets_out, result.elements.b_out.packets, 'packets out: the frames sent');
      const said = engine.stderr().split('\n').filter((l) => l.includes('the kernel refused frames'));
      assert.equal(said, [`wirepath: a_out: ${t.dev.engineServer}: the kernel refused frames: a frame longer than the interface's MTU (EMSGSIZE); they are counted in errors (logged once)`]);
    });
  });

  test('ToDevice: frames a capture cut short (snaplen) are counted in truncated and not sent; whole ones are; said once', async () => {
    await withTopology(async (t) => {
      const engine = await startEngine(t, ['configs/bridge.yaml', ...bridgeDevices(t), '--set', 'a_in.snaplen=200', '--json'], 4, ROOT);
      const ping = (size: number) => t.run(t.ns.client, ['ping', '-c', '3', '-i', '0.2', '-W', '1', '-s', String(size), ADDRESSES.server], { check: false, timeout: 30_000 });
      // 98-byte frames fit in 200 bytes and are answered; 1042-byte ones are cut to 200 and go no further.
      assert.is(ping(56).status, 0);
      assert.is.not(ping(1000).status, 0);
      await engine.stop();
      const result = JSON.parse(engine.stdout());
      const out = result.elements.a_out;
      assert.equal([out.truncated, out.errors], [3, 0], engine.stdout());
      // Only whole frames left: the pings' 98 bytes, and ARP's fewer.
      assert.ok(out.packets >= 3 && out.bytes <= out.packets * 98, engine.stdout());
      assert.is(result.packets_out, out.packets + result.elements.b_out.packets, 'packets out: the frames sent');
      const said = engine.stderr().split('\n').filter((l) => l.includes('cut short'));
      assert.equal(said, [`wirepath: a_out: ${t.dev.engineServer}: frames a capture cut short (snaplen) are not sent, their headers promising bytes they lack; they are counted in truncated (logged once)`]);
    });
  });

  test('a peer with TX checksum offload on: its frames are counted in csum_partial, and the log says what to turn off, once', async () => {
    await withTopology(async (t) => {
      t.run(t.ns.client, ['ethtool', '-K', t.dev.client, 'tx', 'on']);
      const engine = await startEngine(t, ['configs/bridge.yaml', ...bridgeDevices(t), '--json'], 4, ROOT);
      for (let i = 0; i < 2; i++) t.run(t.ns.client, ['nc', '-z', '-w', '1', ADDRESSES.server, '9'], { check: false, timeout: 10_000 });
      await waitFor(() => engine.stderr().includes('csum_partial'), 10_000, 'the log line');
      await engine.stop();
      assert.ok(JSON.parse(engine.stdout()).elements.a_in.csum_partial > 0, engine.stdout());
      const said = engine.stderr().split('\n').filter((l) => l.includes('csum_partial'));
      assert.equal(said, [`wirepath: a_in: frames arrive on ${t.dev.engineClient} with checksums left for an offload to finish (csum_partial): a sender on this link has `
        + 'TX checksum offload on; turn it off there (ethtool -K DEV tx off): they are forwarded as they are, and receivers drop them']);
    });
  });

  test('kernel_drops shows the frames the kernel dropped while the pipeline runs, not only once it has ended', async () => {
    await withTopology(async (t) => {
      const engine = await startEngine(t, ['configs/bridge.yaml', ...bridgeDevices(t), '--set', 'a_in.ring=v2', '--control', '0', '--json'], 4, ROOT);
      try {
        await waitFor(() => /token \w+/.test(engine.stderr()), 10_000, 'the control line');
        const [, url] = /control API on (\S+), token/.exec(engine.stderr())!;
        const read = () => JSON.parse(t.run(t.ns.engine, [process.execPath, join(ROOT, 'bin/wirepath.js'), 'ctl', 'read', 'a_in.kernel_drops', '--control', url]).stdout.toString()).value as number;
        // Stopped, the engine reads nothing: 30,000 datagrams overflow the 16,384 frames of its 32 MiB V2 ring.
        process.kill(engine.child.pid!, 'SIGSTOP');
        t.run(t.ns.client, ['python3', '-c', `import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor i in range(30000): s.sendto(b'x', ('${ADDRESSES.server}', 9000))\n`]);
        process.kill(engine.child.pid!, 'SIGCONT');
        // Before, it was read every 4096 rounds: an idle engine's 200 s.
        await waitFor(() => read() > 10_000, 5_000, 'kernel_drops while it runs');
        await engine.stop();
        assert.ok(JSON.parse(engine.stdout()).elements.a_in.kernel_drops > 10_000, engine.stdout());
      } finally {
        await engine.stop();
      }
    });
  });

  test('fanout: two sockets of one group share the traffic, and fragments cross as they came (they were reassembled: larger than the MTU, lost)', async () => {
    const dir = tempDir();
    try {
      await withTopology(async (t) => {
        const config = join(dir, 'fanout.yaml');
        writeFileSync(config, `
elements:
  in1: { type: FromDevice, device: ${t.dev.engineClient}, fanout: 7 }
  in2: { type: FromDevice, device: ${t.dev.engineClient}, fanout: 7 }
  to_server: { type: ToDevice, device: ${t.dev.engineServer} }
  from_server: { type: FromDevice, device: ${t.dev.engineServer} }
  to_client: { type: ToDevice, device: ${t.dev.engineClient} }
connections:
  - in1 -> to_server
  - in2 -> to_server
  - from_server -> to_client
`);
        const engine = await startEngine(t, [config, '--json'], 5, ROOT);
        const far = await tcpdump(t, t.ns.server, t.dev.server, join(dir, 'far.pcap'), `ip src ${ADDRESSES.client}`);
        // 2, 3 and 7 fragments on the 1500-byte link, and 20 whole datagrams of as many flows.
        t.run(t.ns.client, ['python3', '-c', `import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n`
          + `for n in (1600, 3000, 9000): s.sendto(b'x' * n, ('${ADDRESSES.server}', 9000))\n`
          + `for p in range(20): socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'y', ('${ADDRESSES.server}', 9100 + p))\n`]);
        await new Promise((r) => setTimeout(r, 500));
        const seen = await far.stop();
        await engine.stop();
        const { in1, in2, to_server } = JSON.parse(engine.stdout()).elements;
        assert.equal(seen.map((f) => f.length).filter((n) => n > 60).sort((a, b) => a - b), [82, 162, 162, 1514, 1514, 1514, 1514, 1514, 1514, 1514, 1514, 1514], engine.stderr());
        assert.is(seen.length, 32, 'and the 20 datagrams');
        assert.equal([in1.oversize + in2.oversize, to_server.errors], [0, 0], engine.stdout());
        assert.ok(in1.packets > 0 && in2.packets > 0, `shared: ${in1.packets} and ${in2.packets}`);
      });
    } finally {
      removeDir(dir);
    }
  });

  test('promiscuous: false receives the frames for the interface\'s own MAC, and none addressed to other hosts', async () => {
    await withTopology(async (t) => {
      const ping = () => t.run(t.ns.client, ['ping', '-c', '3', '-i', '0.2', '-W', '1', ADDRESSES.server], { check: false, timeout: 30_000 });
      const received = async (route: 'bridge' | 'router') => {
        t.route(route);
        const engine = await startEngine(t, ['configs/bridge.yaml', ...bridgeDevices(t), '--set', 'a_in.promiscuous=false', '--json'], 4, ROOT);
        ping();
        await engine.stop();
        return JSON.parse(engine.stdout()).elements.a_in.packets;
      };
      // Bridged, the pings go to the server's MAC: a veth hands them over all the same, and they were received.
      assert.is(await received('bridge'), 0);
      // Routed, they go to the engine's.
      assert.is(await received('router'), 3);
    });
  });

  test('a missing interface: exit 3, the interface named, with a hint', async () => {
    await withTopology(async (t) => {
      const r = t.run(t.ns.engine, [process.execPath, join(ROOT, 'bin/wirepath.js'), 'run', join(ROOT, 'configs/bridge.yaml'),
        ...bridgeDevices(t), '--set', 'a_in.device=nosuch0'], { check: false, timeout: 120_000 });
      assert.is(r.status, 3, r.stderr.toString());
      assert.match(r.stderr.toString(), /nosuch0: no such device/);
      assert.match(r.stderr.toString(), /hint: check the interface name/);
    });
  });

  test('a fanout group taken on another interface: exit 3, the group and the cause named, with a hint', async () => {
    const dir = tempDir();
    try {
      await withTopology(async (t) => {
        const config = join(dir, 'fanout.yaml');
        writeFileSync(config, `elements:\n  a: { type: FromDevice, device: ${t.dev.engineClient}, fanout: 5 }\n  b: { type: FromDevice, device: ${t.dev.engineServer}, fanout: 5 }\n`
          + '  d: { type: Discard }\nconnections:\n  - a -> d\n  - b -> d\n');
        const r = t.run(t.ns.engine, [process.execPath, join(ROOT, 'bin/wirepath.js'), 'run', config], { check: false, timeout: 120_000 });
        assert.is(r.status, 3, r.stderr.toString());
        // Before: "PACKET_FANOUT: Invalid argument", and a hint to look at the interface's offloads.
        assert.match(r.stderr.toString(), new RegExp(`b: ${t.dev.engineServer}: fanout group 5 is taken by sockets on another interface .*\\n  hint: give the FromDevice elements of each interface a fanout group of their own`));
      });
    } finally {
      removeDir(dir);
    }
  });

  test('an interface that is down, an MTU larger than a slot: exit 3 with the cause and a hint', async () => {
    await withTopology(async (t) => {
      const run = () => t.run(t.ns.engine, [process.execPath, join(ROOT, 'bin/wirepath.js'), 'run', join(ROOT, 'configs/bridge.yaml'), ...bridgeDevices(t)],
        { check: false, timeout: 120_000 });
      t.run(t.ns.engine, ['ip', 'link', 'set', t.dev.engineClient, 'down']);
      let r = run();
      assert.is(r.status, 3, r.stderr.toString());
      assert.match(r.stderr.toString(), new RegExp(`${t.dev.engineClient}: the interface is down\\n  hint: bring it up`));
      t.run(t.ns.engine, ['ip', 'link', 'set', t.dev.engineClient, 'up', 'mtu', '4000']);
      r = run();
      assert.is(r.status, 3, r.stderr.toString());
      assert.match(r.stderr.toString(), new RegExp(`${t.dev.engineClient}: MTU 4000 .* larger than a slot's 1920 B`));
      // 4018 bytes of frame after the slot's 128 of metadata and headroom.
      assert.match(r.stderr.toString(), /hint: set slot_size: 8192 in the config, lower the interface MTU, or \(FromDevice\) keep less of each frame with snaplen/);
      // A capture that keeps 128 bytes of each frame fits.
      const dir = tempDir();
      try {
        const config = join(dir, 'capture.yaml');
        writeFileSync(config, `elements:\n  src: { type: FromDevice, device: ${t.dev.engineClient}, snaplen: 128 }\n  out: { type: ToPcap, file: ${join(dir, 'out.pcap')} }\nconnections:\n  - src -> out\n`);
        const engine = await startEngine(t, [config], 1, ROOT);
        assert.is(engine.child.exitCode, null, engine.stderr());
        await engine.stop();
      } finally {
        removeDir(dir);
      }
    });
  });

  test('an MTU no slot can hold (loopback\'s 65536): the hint says to keep less of each frame, not a slot_size the config refuses', async () => {
    await withTopology(async (t) => {
      const dir = tempDir();
      try {
        const config = join(dir, 'lo.yaml');
        writeFileSync(config, `elements:\n  src: { type: FromDevice, device: lo }\n  out: { type: ToPcap, file: ${join(dir, 'out.pcap')} }\nconnections:\n  - src -> out\n`);
        const r = t.run(t.ns.engine, [process.execPath, join(ROOT, 'bin/wirepath.js'), 'run', config], { check: false, timeout: 120_000 });
        assert.is(r.status, 3, r.stderr.toString());
        assert.match(r.stderr.toString(), /src: lo: MTU 65536 .* larger than a slot's 1920 B of frame room\n  hint: lower the interface MTU, or \(FromDevice\) keep at most 65408 bytes of each frame with snaplen and set slot_size: 65536/);
      } finally {
        removeDir(dir);
      }
    });
  });

  test('a link that goes down and up: logged, the engine sleeps and forwards again; an interface deleted: exit 3 naming it, after the counters', async () => {
    await withTopology(async (t) => {
      for (const dev of [t.dev.engineClient, t.dev.engineServer]) t.run(t.ns.engine, ['ethtool', '-K', dev, 'tso', 'on', 'gso', 'on']);
      const engine = await startEngine(t, ['configs/bridge.yaml', ...bridgeDevices(t)], 4, ROOT);
      const ping = () => t.run(t.ns.client, ['ping', '-c', '3', '-i', '0.2', '-W', '2', ADDRESSES.server], { check: false, timeout: 30_000 });
      assert.is(ping().status, 0, 'forwards before');
      t.run(t.ns.engine, ['ip', 'link', 'set', t.dev.engineServer, 'down']);
      t.run(t.ns.engine, ['ip', 'link', 'set', t.dev.engineServer, 'up']);
      await waitFor(() => engine.stderr().includes(`${t.dev.engineServer}: the link went down`), 10_000, 'the link-down line');
      // The socket's error, never read by a ring, kept poll from sleeping: a spinning engine burns a core.
      const cpuTicks = () => readFileSync(`/proc/${engine.child.pid}/stat`, 'utf8').split(') ')[1].split(' ').slice(11, 13).reduce((a, b) => a + Number(b), 0);
      const before = cpuTicks();
      await new Promise((r) => setTimeout(r, 2000));
      assert.ok(cpuTicks() - before < 100, `an idle engine used ${cpuTicks() - before} of 200 ticks in 2 s`);
      assert.is(ping().status, 0, 'forwards after');
      // The server's end set down: the engine's end loses its carrier, which raises no socket error (it was not logged).
      t.run(t.ns.server, ['ip', 'link', 'set', t.dev.server, 'down']);
      await waitFor(() => engine.stderr().split(`${t.dev.engineServer}: the link went down`).length === 3, 10_000, 'the second link-down line');
      t.run(t.ns.server, ['ip', 'link', 'set', t.dev.server, 'up']);
      t.route('bridge'); // the server's route went with its link
      assert.is(ping().status, 0, 'forwards once the carrier is back');
      t.run(t.ns.engine, ['ip', 'link', 'del', t.dev.engineServer]);
      await waitFor(() => engine.child.exitCode !== null, 15_000, 'the engine to exit');
      assert.is(engine.child.exitCode, 3, engine.stderr());
      // Named by the element that read it (b_in), whichever element's wait saw it.
      assert.match(engine.stderr(), new RegExp(`b_in: ${t.dev.engineServer}: the interface went away while in use\\n  hint: it was deleted`));
      // The counters it reached: the pings went through.
      assert.match(engine.stdout(), /a_in\s+FromDevice\s+[1-9]/);
      // The offloads of the interface that is left, not those of the one deleted (it said it turned them back on).
      assert.ok(engine.stderr().includes(`turned the offloads of ${t.dev.engineClient} back on`), engine.stderr());
      assert.not.ok(engine.stderr().includes(`turned the offloads of ${t.dev.engineServer} back on`), engine.stderr());
    });
  });

  test('without CAP_NET_RAW: exit 3 and a permission error that names the capability', async () => {
    await withTopology(async (t) => {
      const r = t.run(t.ns.engine, ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups', '--inh-caps=-all',
        process.execPath, join(ROOT, 'bin/wirepath.js'), 'run', join(ROOT, 'configs/bridge.yaml'), ...bridgeDevices(t)], { check: false, timeout: 120_000 });
      assert.is(r.status, 3, r.stderr.toString());
      assert.match(r.stderr.toString(), new RegExp(`${t.dev.engineClient}: .*permission denied .*CAP_NET_RAW`));
      assert.match(r.stderr.toString(), /hint: run as root/);
    });
  });
}

test.run();
