// A test and benchmark topology of three network namespaces joined by two veth pairs:
//
//   client ns  c0 100.64.0.2 ──veth── ec  [engine ns]  es ──veth── s0 198.18.0.2  server ns
//
// wirepath (or the kernel, for comparison) runs in the engine namespace between ec and es. Names
// carry a per-run prefix, and everything is deleted in withTopology's finally (deleting a namespace
// deletes its veth ends). Addresses come only from 100.64.0.0/10 and 198.18.0.0/15, and only
// inside these namespaces; neighbours are static, so nothing needs ARP through the engine.
// Offloads are off on all four veth ends (as in ../shared/research/anchor-click.md §4): with TSO or
// TX checksum offload a peer hands AF_PACKET 64 KB frames and unfinished checksums.

import { spawn, spawnSync, type ChildProcess, type SpawnOptions, type SpawnSyncReturns } from 'node:child_process';
import { randomBytes } from 'node:crypto';

export const ADDRESSES = {
  client: '100.64.0.2',
  clientGateway: '100.64.0.1',
  server: '198.18.0.2',
  serverGateway: '198.18.0.1',
} as const;

export const MACS = {
  client: '02:00:64:00:00:02',
  engineClient: '02:00:64:00:00:01',
  engineServer: '02:00:c6:12:00:01',
  server: '02:00:c6:12:00:02',
} as const;

/**
 * How the peers reach each other. bridge: the server's subnet is on-link for the client (and the other
 * way round) with the far peer's MAC as neighbour, so frames pass a bump in the wire unchanged. router:
 * each peer sends to its gateway (the engine's MAC on its side), as through a router.
 */
export type RouteMode = 'bridge' | 'router';
/** What the engine namespace's kernel does: nothing (wirepath runs there), IP forwarding, or forwarding with nftables masquerade. */
export type KernelMode = 'off' | 'forward' | 'nat';

export interface Topology extends NamespaceTools {
  readonly prefix: string;
  readonly ns: { client: string; engine: string; server: string };
  readonly dev: { client: string; engineClient: string; engineServer: string; server: string };
  route(mode: RouteMode): void;
  kernel(mode: KernelMode): void;
}

export function available(): string | undefined {
  if (process.platform !== 'linux') return 'needs Linux';
  if (process.getuid?.() !== 0) return 'needs root (network namespaces)';
  if (spawnSync('ip', ['netns', 'list']).status !== 0) return 'needs iproute2 with netns support';
  return undefined;
}

function sh(args: string[], options: { input?: string | Buffer; timeout?: number; check?: boolean } = {}): SpawnSyncReturns<Buffer> {
  const r = spawnSync(args[0], args.slice(1), { input: options.input, timeout: options.timeout ?? 30_000 });
  if ((options.check ?? true) && r.status !== 0) {
    throw new Error(`${args.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr?.toString().trim()}`);
  }
  return r;
}

/** Runs commands in the namespaces of withNamespaces; processes it starts are killed when they are deleted. */
export interface NamespaceTools {
  /** Runs a command in a namespace and waits for it; throws when it fails, with its stderr. */
  run(ns: string, args: string[], options?: { input?: string | Buffer; timeout?: number; check?: boolean }): SpawnSyncReturns<Buffer>;
  /** Starts a command in a namespace; it is killed (by its process group) when the namespaces are deleted. */
  start(ns: string, args: string[], options?: SpawnOptions): ChildProcess;
}

/**
 * Creates one namespace per name, called PREFIX-NAME with a per-run prefix (lo up, IPv6 off), runs `body`
 * with their names, and deletes them whatever happens (deleting a namespace deletes its veth ends).
 */
export async function withNamespaces<const N extends string, T>(names: readonly N[], body: (ns: Record<N, string>, prefix: string, tools: NamespaceTools) => Promise<T>): Promise<T> {
  const prefix = `wp${randomBytes(3).toString('hex')}`;
  const ns = Object.fromEntries(names.map((name) => [name, `${prefix}-${name}`])) as Record<N, string>;
  const children: ChildProcess[] = [];
  const inNs = (name: string, args: string[]) => ['ip', 'netns', 'exec', name, ...args];
  const deleteAll = () => {
    for (const child of children) {
      if (child.exitCode === null && child.signalCode === null && child.pid) {
        try { process.kill(-child.pid, 'SIGKILL'); } catch { /* already gone */ }
      }
    }
    for (const name of Object.values<string>(ns)) sh(['ip', 'netns', 'del', name], { check: false });
  };
  // Also when the process exits or is interrupted mid-run: a namespace left behind would hold the veths.
  const onSignal = (signal: NodeJS.Signals) => {
    deleteAll();
    process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
  };
  process.once('exit', deleteAll);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    for (const name of Object.values<string>(ns)) {
      sh(['ip', 'netns', 'add', name]);
      sh(inNs(name, ['sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']));
      sh(['ip', '-n', name, 'link', 'set', 'lo', 'up']);
    }
    return await body(ns, prefix, {
      run: (name, args, options) => sh(inNs(name, args), options),
      start(name, args, options = {}) {
        const child = spawn('ip', ['netns', 'exec', name, ...args], { stdio: 'pipe', ...options, detached: true });
        children.push(child);
        return child;
      },
    });
  } finally {
    deleteAll();
    process.removeListener('exit', deleteAll);
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
}

/** A veth pair between two namespaces, [namespace, device, MAC] at each end, up, with offloads off. */
export function vethPair(a: [string, string, string], b: [string, string, string], mtu?: number): void {
  sh(['ip', 'link', 'add', a[1], 'netns', a[0], 'address', a[2], 'type', 'veth', 'peer', 'name', b[1], 'netns', b[0], 'address', b[2]]);
  for (const [name, d] of [a, b]) {
    sh(['ip', 'netns', 'exec', name, 'ethtool', '-K', d, 'tx', 'off', 'rx', 'off', 'tso', 'off', 'gso', 'off', 'gro', 'off']);
    sh(['ip', '-n', name, 'link', 'set', d, ...(mtu ? ['mtu', String(mtu)] : []), 'up']);
  }
}

/** Builds the topology, runs `body` on it, and deletes it whatever happens. */
export async function withTopology<T>(body: (t: Topology) => Promise<T>): Promise<T> {
  return withNamespaces(['client', 'engine', 'server'], async (ns, prefix, tools) => {
    const dev = { client: `${prefix}c0`, engineClient: `${prefix}ec`, engineServer: `${prefix}es`, server: `${prefix}s0` };
    const inNs = (name: string, args: string[]) => ['ip', 'netns', 'exec', name, ...args];
    vethPair([ns.client, dev.client, MACS.client], [ns.engine, dev.engineClient, MACS.engineClient]);
    vethPair([ns.server, dev.server, MACS.server], [ns.engine, dev.engineServer, MACS.engineServer]);
    sh(['ip', '-n', ns.client, 'addr', 'add', `${ADDRESSES.client}/24`, 'dev', dev.client]);
    sh(['ip', '-n', ns.server, 'addr', 'add', `${ADDRESSES.server}/24`, 'dev', dev.server]);

    const topology: Topology = {
      prefix, ns, dev,
      route(mode) {
        const far = mode === 'bridge'
          ? { client: [ADDRESSES.server, MACS.server], server: [ADDRESSES.client, MACS.client] }
          : { client: [ADDRESSES.clientGateway, MACS.engineClient], server: [ADDRESSES.serverGateway, MACS.engineServer] };
        const sides = [[ns.client, dev.client, '198.18.0.0/24', far.client], [ns.server, dev.server, '100.64.0.0/24', far.server]] as const;
        for (const [name, d, subnet, [neighbour, mac]] of sides) {
          sh(['ip', '-n', name, 'neigh', 'replace', neighbour, 'lladdr', mac, 'dev', d, 'nud', 'permanent']);
          const via = mode === 'bridge' ? ['dev', d] : ['via', neighbour, 'dev', d];
          sh(['ip', '-n', name, 'route', 'replace', subnet, ...via]);
        }
      },
      kernel(mode) {
        const on = mode !== 'off';
        for (const [d, address] of [[dev.engineClient, ADDRESSES.clientGateway], [dev.engineServer, ADDRESSES.serverGateway]]) {
          sh(['ip', '-n', ns.engine, 'addr', on ? 'replace' : 'flush', ...(on ? [`${address}/24`] : []), 'dev', d]);
        }
        if (on) {
          sh(['ip', '-n', ns.engine, 'neigh', 'replace', ADDRESSES.client, 'lladdr', MACS.client, 'dev', dev.engineClient, 'nud', 'permanent']);
          sh(['ip', '-n', ns.engine, 'neigh', 'replace', ADDRESSES.server, 'lladdr', MACS.server, 'dev', dev.engineServer, 'nud', 'permanent']);
        }
        sh(inNs(ns.engine, ['sysctl', '-qw', `net.ipv4.ip_forward=${on ? 1 : 0}`]));
        sh(inNs(ns.engine, ['nft', 'flush', 'ruleset']));
        if (mode === 'nat') {
          sh(inNs(ns.engine, ['nft', '-f', '-']), {
            input: `table ip wpnat {\n  chain post {\n    type nat hook postrouting priority srcnat;\n    oifname "${dev.engineServer}" masquerade\n  }\n}\n`,
          });
        }
      },
      ...tools,
    };
    topology.route('bridge');
    topology.kernel('off');
    return body(topology);
  });
}

/** Resolves when `child` exits, with its exit code (or 128 + signal number, as a shell reports it). */
export function exited(child: ChildProcess): Promise<number> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? 128 + (signal === 'SIGINT' ? 2 : signal === 'SIGTERM' ? 15 : 9))));
}

/** Polls `check` every 50 ms until it is true or `ms` pass. */
export async function waitFor(check: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface Engine {
  readonly child: ChildProcess;
  readonly stdout: () => string;
  readonly stderr: () => string;
  /** Stops it as Ctrl-C would and resolves with its exit code once it has written its outputs. */
  stop(): Promise<number>;
}

/**
 * Starts `wirepath run CONFIG ARGS...` in the engine namespace and waits until it holds `sockets`
 * AF_PACKET sockets (every FromDevice and ToDevice open), or until it exits (then the caller reads why).
 */
export async function startEngine(t: NamespaceTools & { ns: { engine: string } }, args: string[], sockets: number, cwd: string): Promise<Engine> {
  const child = t.start(t.ns.engine, [process.execPath, 'bin/wirepath.js', 'run', ...args], { cwd });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const open = () => t.run(t.ns.engine, ['ss', '-0', '-H', '-n'], { check: false }).stdout.toString().trim().split('\n').filter(Boolean).length;
  await waitFor(() => child.exitCode !== null || open() >= sockets, 120_000, `wirepath to open ${sockets} AF_PACKET sockets`);
  return {
    child,
    stdout: () => stdout,
    stderr: () => stderr,
    async stop() {
      if (child.exitCode === null && child.pid) process.kill(-child.pid, 'SIGINT');
      return exited(child);
    },
  };
}
