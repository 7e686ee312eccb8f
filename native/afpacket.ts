// The AF_PACKET addon (native/afpacket.cc), loaded on first use so that a machine without it runs
// everything but the device elements.

import { createRequire } from 'node:module';
import { EnvironmentError } from '../engine/errors.ts';
import { Meta } from '../engine/layout.ts';
import { MAX_SLOT_SIZE } from '../engine/config.ts';

export interface RxOptions {
  /** Bytes of frame a slot holds: the MTU must fit (or snaplen, when less), and longer frames are dropped as oversize. */
  room: number;
  /** Most bytes kept of each frame. */
  snaplen: number;
  /** Bytes of the ring: how much the kernel can queue while nobody reads. */
  ringBytes: number;
  /** TPACKET_V3 (frames packed in blocks, fastest to drain) or V2 (each frame readable at once: lowest latency). */
  version: 2 | 3;
  /** V3: the most a frame waits in a part-filled block. */
  retireMs: number;
  /** PACKET_FANOUT group id (hash mode), 0 for none. */
  fanout: number;
  promiscuous: boolean;
}

export interface AfPacket {
  openRx(ifname: string, options: RxOptions): number;
  openTx(ifname: string, room: number): number;
  /** Throws what opening the interface would throw for it (no such device, down, frames larger than `room`), opening nothing. */
  check(ifname: string, room: number, snaplen: number): void;
  receive(id: number, memory: Uint8Array, slots: number, slotCount: number, descs: number, budget: number, dataOffset: number, room: number, snaplen: number): number;
  /** Sends `count` frames whose (address, length) pairs are at `descs`; a frame the kernel refused gets length 0 there. */
  send(id: number, memory: Uint8Array, descs: number, count: number): number;
  /** Why the kernel last refused a frame on the socket since the last call, or undefined. */
  sendError(id: number): string | undefined;
  stats(id: number): { packets: number; drops: number };
  close(id: number): void;
  /** Sleeps until one of the receive sockets `ids` has frames to read, at most `timeoutMs`; how many have. */
  wait(ids: number[], timeoutMs: number): number;
  /** Whether the link of socket `id` went down since the last call (wait notices; an interface gone makes wait throw). */
  linkWentDown(id: number): boolean;
  disableOffloads(ifname: string): string[];
  /** Turns the named offloads back on, as far as it can; false when the interface is gone. */
  restoreOffloads(ifname: string, names: string[]): boolean;
  /** Bytes of one receive descriptor. */
  rxDescBytes: number;
}

let addon: AfPacket | undefined;

export function afpacket(element: string): AfPacket {
  if (addon) return addon;
  try {
    addon = createRequire(import.meta.url)('./build/Release/afpacket.node') as AfPacket;
    return addon;
  } catch (e) {
    throw new EnvironmentError(`${element}: the AF_PACKET addon is not built (${(e as Error).message.split('\n')[0]})`,
      'build it with `npm run build:native` (needs a C++ compiler, make and python3); `npm install` tries and says why it failed');
  }
}

/** Turns an addon error (its code: ENODEV, ENETDOWN, EPERM, EMSGSIZE, EFANOUT...) into an EnvironmentError with a hint. */
export function deviceError(element: string, e: unknown): unknown {
  const { code, needed } = e as { code?: string; needed?: number };
  // A slot holds its metadata and headroom before the frame, and is at most MAX_SLOT_SIZE.
  const slotSize = needed ? 2 ** Math.ceil(Math.log2(needed + Meta.defaultDataOffset)) : 4096;
  const slotFits = slotSize <= MAX_SLOT_SIZE;
  const hints: Record<string, string> = {
    ENODEV: 'check the interface name (`ip link` lists them); run wirepath in the network namespace that holds it (`ip netns exec NS ...`)',
    ENETDOWN: 'bring it up: ip link set dev IFACE up',
    EFANOUT: 'give the FromDevice elements of each interface a fanout group of their own, one that no other program in this network namespace uses',
    EGONE: 'it was deleted, or deleted and made anew (a socket stays bound to the interface it opened): run the pipeline again once it is back',
    EPERM: 'run as root, or give node CAP_NET_RAW and CAP_NET_ADMIN (setcap cap_net_raw,cap_net_admin+ep $(which node))',
    EMSGSIZE: slotFits ? `set slot_size: ${slotSize} in the config, lower the interface MTU, or (FromDevice) keep less of each frame with snaplen`
      : `lower the interface MTU, or (FromDevice) keep at most ${MAX_SLOT_SIZE - Meta.defaultDataOffset} bytes of each frame with snaplen and set slot_size: ${MAX_SLOT_SIZE}`,
  };
  if (!code) return e;
  return new EnvironmentError(`${element}: ${(e as Error).message}`, hints[code] ?? 'the interface refused it: look at it with ip link and ethtool -k; with offloads: keep wirepath leaves its offloads alone');
}

/** Throws, as opening would, when `device` is missing, down, or has frames longer than `room` (or snaplen, when less). */
export function checkDevice(element: string, device: string, room: number, snaplen = 0xffffffff): void {
  try {
    afpacket(element).check(device, room, snaplen);
  } catch (e) {
    throw deviceError(element, e);
  }
}

/**
 * Offloads this process turned off, by interface, how many open elements count on it, and the log of the last one
 * to close: given back a moment after the last of them closes, and at exit whatever way the process ends (a start
 * that failed half-way, a signal).
 */
const turnedOff = new Map<string, { names: string[]; users: number; log: (m: string) => void; restore?: NodeJS.Timeout }>();
/**
 * How long offloads stay off after the last element using them closes: a reload opens the interface again meanwhile
 * (after it has moved the state, which takes seconds for tables of millions).
 */
const RESTORE_AFTER_MS = 10_000;
let restoresAtExit = false;

/**
 * Turns off the offloads that would hand the engine frames larger than the MTU (GRO, GSO, TSO) or
 * with unfinished checksums, on an interface the config names, and says so in the log.
 */
export function disableOffloads(element: string, addon: AfPacket, device: string, log: (m: string) => void): void {
  let changed: string[];
  try {
    changed = addon.disableOffloads(device);
  } catch (e) {
    throw deviceError(element, e);
  }
  if (!restoresAtExit) process.once('exit', () => { for (const [d, entry] of turnedOff) restoreOffloads(addon, d, entry); });
  restoresAtExit = true;
  const entry = turnedOff.get(device) ?? { names: [], users: 0, log };
  clearTimeout(entry.restore);
  entry.restore = undefined;
  entry.names.push(...changed);
  entry.users++;
  turnedOff.set(device, entry);
  if (changed.length) log(`turned off offloads on ${device}: ${changed.join(', ')} (frames must fit a slot; offloads: keep leaves them on; turned back on when wirepath no longer uses ${device})`);
}

/**
 * An element that disabled `device`'s offloads closes: the last one turns them back on, after a moment, so that the
 * elements of a reloaded config that use the interface find them as they were (changing them can reset a NIC's link).
 */
export function releaseOffloads(addon: AfPacket, device: string, log: (m: string) => void): void {
  const entry = turnedOff.get(device);
  if (!entry || --entry.users > 0) return;
  entry.log = log;
  entry.restore = setTimeout(() => restoreOffloads(addon, device, entry), RESTORE_AFTER_MS).unref();
}

function restoreOffloads(addon: AfPacket, device: string, entry: { names: string[]; log: (m: string) => void }): void {
  turnedOff.delete(device);
  if (!entry.names.length) return;
  // A deleted interface took its offloads with it: there is nothing to turn back on.
  if (addon.restoreOffloads(device, entry.names)) entry.log(`turned the offloads of ${device} back on: ${entry.names.join(', ')}`);
}
