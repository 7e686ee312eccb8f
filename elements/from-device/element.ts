import { readFileSync } from 'node:fs';
import { defineElement, param, state, type IoContext, type ReloadedElement, type SourceDriver } from '../../engine/api.ts';
import { Meta } from '../../engine/layout.ts';
import { afpacket, checkDevice, deviceError, disableOffloads, releaseOffloads, type AfPacket } from '../../native/afpacket.ts';

/** Receive ring: 32 MiB; a part-filled TPACKET_V3 block is handed over after 1 ms. */
const RING = { ringBytes: 32 << 20, retireMs: 1 };
/** Pumps between reads of the kernel's drop counter (a system call). */
const STATS_EVERY = 4096;

export default defineElement({
  type: 'FromDevice',
  summary: 'receives packets from a network interface (AF_PACKET)',
  description: 'Receives every frame arriving on a Linux interface through an AF_PACKET socket with a TPACKET_V3 ring (TPACKET_V2 with ring: v2); the '
    + 'native addon (native/) copies each frame straight into a packet slot of the shared memory, a burst per call, without '
    + 'per-packet JavaScript. A VLAN tag the kernel took off (NIC or veth VLAN offload) is put back, so frames are forwarded and '
    + 'matched as they came. It is a live source: it never waits for the shards. A packet that finds the shard\'s ring full is '
    + 'dropped and counted by the engine (ring-full drops), one that finds no free slot is counted in no_slot, and frames the '
    + 'kernel could not queue in time are in kernel_drops. Frames leaving the interface (sent by ToDevice or by the host) are '
    + 'not seen. snaplen cuts frames on purpose; a frame whose kept part does not fit a slot is dropped and counted in oversize. '
    + 'With offloads: disable (the default) it turns off GRO, GSO, TSO and checksum offloads on the interface and logs it (and '
    + 'turns them back on when the pipeline ends, however it ends; a reload whose config still uses the interface leaves them off): an '
    + 'aggregated frame larger than a slot cannot be forwarded, and is dropped and counted in oversize. Peers on the same link '
    + '(the other end of a veth) must turn off TSO and TX checksum offload themselves (ethtool -K DEV tso off gso off tx off), or '
    + 'their TCP frames arrive too large (oversize) or with unfinished checksums (csum_partial); the log says so once. With fanout, sockets that '
    + 'name the same group share the interface\'s traffic by flow hash (PACKET_FANOUT). On a machine with two cores or fewer, '
    + 'threads: auto (the default) runs the graph of a config with a FromDevice on the I/O thread, leaving a core to the kernel. '
    + 'The host\'s own stack still gets every frame (ToDevice warns of what that does). Needs root or CAP_NET_RAW (and '
    + 'CAP_NET_ADMIN to change offloads). Runs until the pipeline is stopped (Ctrl-C or SIGTERM). A link '
    + 'that goes down (set down, or its carrier lost) is logged and its frames come again when it is up; an interface deleted under a running pipeline ends it '
    + '(exit 3, the interface named). A reload whose config keeps the element (same name, device and ring options) hands it the '
    + 'open socket: the frames that arrive while the pipelines are swapped wait in its ring (a ring that fills meanwhile counts in kernel_drops).',
  inputs: 0,
  outputs: [{ name: 'out', doc: 'the frames received, timestamped by the kernel' }],
  params: {
    device: param.string('the interface to receive from', { required: true }),
    burst: param.int('most frames taken off the ring per call', 1, 4096, { default: 256, fixed: true }),
    fanout: param.int('PACKET_FANOUT group id shared with other sockets on the interface (0: none)', 0, 65535, { default: 0, fixed: true }),
    snaplen: param.size('most bytes kept of each frame', { min: 64, max: 65535, default: 65535 }),
    promiscuous: param.bool('receive frames addressed to other hosts too', { default: true, fixed: true }),
    ring: param.enum('v3: frames packed in blocks, the fastest to drain, but at low rates a frame waits up to 1 ms for its block; '
      + 'v2: each frame readable as soon as it arrives, the lowest latency (a ping through a bridge: a few tenths of a ms)', ['v3', 'v2'], { default: 'v3', fixed: true }),
    offloads: param.enum('turn off the interface\'s GRO/GSO/TSO/checksum offloads, or keep them', ['disable', 'keep'], { default: 'disable', fixed: true }),
  },
  state: {
    packets: state.counter('frames received and handed to the shards'),
    bytes: state.counter('bytes of those frames, as on the wire'),
    no_slot: state.counter('frames dropped: no free packet slot'),
    oversize: state.counter('frames dropped: longer than a slot (a GRO/GSO aggregate)'),
    csum_partial: state.counter('frames whose checksum a sender\'s offload left unfinished (forwarded as they are)'),
    kernel_drops: state.counter('frames the kernel dropped: the receive ring was full'),
  },
  ioExports: ['reserve', 'submit', 'unreserve'],
  source: (ctx) => new DeviceReader(ctx),
  check: ({ name, params, slotRoom }) => checkDevice(name, params.device, slotRoom, params.snaplen),
  live: true,
  example: 'src: { type: FromDevice, device: eth0, burst: 256 }',
});

/** Drop counters whose cause the log has explained, by interface: once a process, reloads included. */
const explained = new Set<string>();

/** Receive sockets open in this process: an idle engine sleeps until any of them has frames. */
const openReaders = new Set<DeviceReader>();

/**
 * Receive sockets a reload hands from the pipeline it stops to the one it starts, by element name: the kernel goes on
 * filling the ring in between (draining the old pipeline, moving its state, starting the new one's threads), so the
 * frames that come meanwhile wait there instead of finding no socket. `opened`: how the socket was opened (on which
 * interface, by its index too: one made anew under the name is another); the new element takes it only if it would open
 * it alike, and one not taken is closed after HANDOVER_MS. `drops`: the kernel's count of the socket's drops when it was
 * left, from which the new element counts.
 */
const handedOver = new Map<string, { socket: number; opened: string; drops: number; addon: AfPacket; expire: NodeJS.Timeout }>();
const HANDOVER_MS = 10_000;

/** The receive socket an element of a reloaded config takes over (when it opens alike), else undefined; closes any other left for it. */
function takeOver(name: string, opened: string): { socket: number; drops: number } | undefined {
  const kept = handedOver.get(name);
  if (!kept) return undefined;
  clearTimeout(kept.expire);
  handedOver.delete(name);
  if (kept.opened === opened) return kept;
  kept.addon.close(kept.socket);
  return undefined;
}

/** The interface's index, or '' when it has none (opening then says why). */
function interfaceIndex(device: string): string {
  try {
    return readFileSync(`/sys/class/net/${device}/ifindex`, 'utf8').trim();
  } catch {
    return '';
  }
}

class DeviceReader implements SourceDriver {
  private readonly addon: AfPacket;
  readonly socket: number;
  /** Free slots held for the next frames: a stack of slot addresses the addon pops. */
  private readonly slots: number;
  private reserved = 0;
  private readonly descs: number;
  private pumps = 0;

  /** How the socket was opened (device and ring options): a reloaded config's element takes it over if it would open it alike. */
  private readonly opened: string;
  /** The kernel's drops on the socket before this element had it (another pipeline's, before a reload). */
  private readonly dropsBefore: number;

  constructor(private readonly ctx: IoContext) {
    const { name, params, arena } = ctx;
    this.addon = afpacket(name);
    if (params.offloads === 'disable') disableOffloads(name, this.addon, params.device, ctx.log);
    const options = {
      room: ctx.slotRoom, snaplen: params.snaplen, ...RING, version: params.ring === 'v2' ? 2 as const : 3 as const, fanout: params.fanout, promiscuous: params.promiscuous,
    };
    this.opened = JSON.stringify([params.device, interfaceIndex(params.device), options]);
    try {
      const kept = takeOver(name, this.opened);
      this.dropsBefore = kept?.drops ?? 0;
      this.socket = kept?.socket ?? this.addon.openRx(params.device, options);
    } catch (e) {
      throw deviceError(name, e);
    }
    openReaders.add(this);
    this.slots = arena.alloc(4 * params.burst, 8);
    this.descs = arena.alloc(this.addon.rxDescBytes * params.burst, 8);
  }

  idle(maxMs: number): void {
    // An idle engine pumps about 20 times a second, so STATS_EVERY pumps would keep the drops of a burst unread for minutes.
    for (const reader of openReaders) {
      reader.readKernelDrops();
      reader.explainDrops();
    }
    try {
      this.addon.wait([...openReaders].map((r) => r.socket), maxMs);
    } catch (e) {
      // An interface deleted under a running pipeline: named by the element that had it.
      const had = [...openReaders].find((r) => r.socket === (e as { socket?: number }).socket) ?? this;
      throw deviceError(had.ctx.name, e);
    }
    for (const reader of openReaders) {
      if (reader.addon.linkWentDown(reader.socket)) reader.ctx.log(`${reader.ctx.params.device}: the link went down; frames will come again when it is up`);
    }
  }

  get done(): boolean {
    return false;
  }

  pump(budget: number): number {
    const { ctx, addon } = this;
    const { exports, self, params } = ctx;
    this.reserved = exports.FromDevice__reserve(this.slots, this.reserved, params.burst);
    const frames = addon.receive(this.socket, ctx.arena.u8, this.slots, this.reserved, this.descs, Math.min(budget, params.burst),
      Meta.defaultDataOffset, ctx.slotRoom, params.snaplen);
    if (++this.pumps % STATS_EVERY === 0) {
      this.readKernelDrops();
      this.explainDrops();
    }
    if (!frames) return 0;
    const submitted = exports.FromDevice__submit(self, this.descs, frames, ctx.port);
    this.reserved -= submitted;
    return submitted;
  }

  /** Says once per cause why frames are dropped or left unfinished: what an operator must change on the link. */
  private explainDrops(): void {
    const device = this.ctx.params.device;
    for (const [counter, why] of [
      ['csum_partial', `frames arrive on ${device} with checksums left for an offload to finish (csum_partial): a sender on this link has `
        + 'TX checksum offload on; turn it off there (ethtool -K DEV tx off): they are forwarded as they are, and receivers drop them'],
      ['oversize', `frames larger than a slot arrive on ${device} (oversize, dropped): a sender on this link aggregates them (TSO, GSO), or `
        + `with offloads: keep this interface's GRO does; turn that off (ethtool -K DEV tso off gso off gro off), or raise slot_size`],
    ] as const) {
      if (explained.has(`${device} ${counter}`) || !this.ctx.arena.view.getBigUint64(this.ctx.self + this.ctx.fieldOffset(counter), true)) continue;
      explained.add(`${device} ${counter}`);
      this.ctx.log(why);
    }
  }

  /** Reads the kernel's count of the socket's drops into kernel_drops; returns the count. */
  private readKernelDrops(): number {
    const drops = this.addon.stats(this.socket).drops;
    this.ctx.arena.view.setBigUint64(this.ctx.self + this.ctx.fieldOffset('kernel_drops'), BigInt(drops - this.dropsBefore), true);
    return drops;
  }

  close(next?: ReloadedElement): void {
    const drops = this.readKernelDrops();
    openReaders.delete(this);
    if (next?.params.device === this.ctx.params.device) {
      const { socket, addon } = this;
      const expire = setTimeout(() => { handedOver.delete(this.ctx.name); addon.close(socket); }, HANDOVER_MS).unref();
      handedOver.set(this.ctx.name, { socket, opened: this.opened, drops, addon, expire });
    } else {
      this.addon.close(this.socket);
    }
    this.ctx.exports.FromDevice__unreserve(this.slots, this.reserved);
    this.reserved = 0;
    if (this.ctx.params.offloads === 'disable') releaseOffloads(this.addon, this.ctx.params.device, this.ctx.log);
  }
}
