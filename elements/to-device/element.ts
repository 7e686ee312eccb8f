import { readFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { defineElement, param, state, type IoContext, type SinkDriver } from '../../engine/api.ts';
import { afpacket, checkDevice, deviceError, disableOffloads, releaseOffloads, type AfPacket } from '../../native/afpacket.ts';

export default defineElement({
  type: 'ToDevice',
  summary: 'sends packets out of a network interface (AF_PACKET)',
  description: 'Sends every packet it receives, as a whole Ethernet frame, out of a Linux interface through an AF_PACKET '
    + 'socket: the native addon (native/) passes bursts of frames to sendmmsg straight from the shared memory, without '
    + 'copying them in JavaScript. Frames the kernel refuses (its queue full, a frame longer than the MTU) are counted in '
    + 'errors, not retried, and each cause is logged once. Frames a capture cut short (FromDevice\'s or a pcap\'s snaplen) are not sent '
    + '(their headers promise bytes they lack): they are counted in truncated, and said once. The host\'s own stack still gets the frames arriving on the interface: '
    + 'the start warns when it has an IPv4 address (the host answers for it on the link) or IPv4 forwarding on (the host '
    + 'forwards what wirepath forwards, a second time). With offloads: disable (the default) it turns off GRO, GSO, TSO and checksum offloads on the '
    + 'interface and logs it (see FromDevice). Needs root or CAP_NET_RAW.',
  inputs: 1,
  outputs: [],
  params: {
    device: param.string('the interface to send on', { required: true }),
    burst: param.int('most frames per sendmmsg call', 1, 1024, { default: 256, fixed: true }),
    offloads: param.enum('turn off the interface\'s GRO/GSO/TSO/checksum offloads, or keep them', ['disable', 'keep'], { default: 'disable', fixed: true }),
  },
  state: {
    packets: state.counter('frames sent'),
    bytes: state.counter('bytes of the frames sent'),
    errors: state.counter('frames the kernel refused'),
    truncated: state.counter('frames not sent because a capture cut them short (snaplen)'),
  },
  ioExports: ['keepWhole', 'frames', 'sent'],
  sink: (ctx) => new DeviceWriter(ctx),
  check: ({ name, params, slotRoom }) => checkDevice(name, params.device, slotRoom),
  example: 'out: { type: ToDevice, device: eth1 }',
});

/** Interfaces whose host stack the log has warned of: once a process, reloads included. */
const warned = new Set<string>();

/**
 * The host's own stack gets every frame too: an address on an interface wirepath sends on makes it answer for that
 * address on the link (ARP, and TCP resets for the connections wirepath translates to it), and IPv4 forwarding makes
 * it forward the frames wirepath forwards, a second time. Says so at start (a capture, which sends nothing, is left alone).
 */
function warnOfHostStack(device: string, log: (m: string) => void): void {
  if (warned.has(device)) return;
  warned.add(device);
  const addresses = (networkInterfaces()[device] ?? []).filter((a) => a.family === 'IPv4').map((a) => a.cidr);
  if (addresses.length) {
    log(`${device} has the address ${addresses.join(', ')}: this host answers for it on the link too (ARP; TCP resets for connections to it `
      + `that are not its own), beside what wirepath does; an interface wirepath bridges or routes needs no address (ip addr flush dev ${device})`);
  }
  let forwarding = '0';
  try { forwarding = readFileSync(`/proc/sys/net/ipv4/conf/${device}/forwarding`, 'utf8').trim(); } catch { /* not IPv4-enabled */ }
  if (forwarding === '1') {
    log(`the kernel forwards IPv4 arriving on ${device} too (net.ipv4.conf.${device}.forwarding = 1): packets wirepath forwards may leave `
      + `twice; turn it off (sysctl -w ${device.includes('.') ? `net/ipv4/conf/${device}/forwarding` : `net.ipv4.conf.${device}.forwarding`}=0)`);
  }
}

class DeviceWriter implements SinkDriver {
  private readonly addon: AfPacket;
  private readonly socket: number;
  /** (frame address, length) pairs for sendmmsg. */
  private readonly descs: number;
  /** Causes of refused frames logged so far. */
  private readonly causes = new Set<string>();
  private saidTruncated = false;

  constructor(private readonly ctx: IoContext) {
    const { name, params } = ctx;
    this.addon = afpacket(name);
    if (params.offloads === 'disable') disableOffloads(name, this.addon, params.device, ctx.log);
    warnOfHostStack(params.device, ctx.log);
    try {
      this.socket = this.addon.openTx(params.device, ctx.slotRoom);
    } catch (e) {
      throw deviceError(name, e);
    }
    this.descs = ctx.arena.alloc(8 * params.burst, 8);
  }

  write(batch: number): number {
    const { exports, self, arena, params } = this.ctx;
    const received = arena.view.getUint32(batch, true);
    const count = exports.ToDevice__keepWhole(self, batch);
    if (count < received) this.sayTruncated();
    let sentAll = 0;
    for (let start = 0; start < count; start += params.burst) {
      const n = exports.ToDevice__frames(self, batch, start, params.burst, this.descs);
      let sent: number;
      try {
        sent = this.addon.send(this.socket, arena.u8, this.descs, n);
      } catch (e) {
        throw deviceError(this.ctx.name, e); // an interface deleted under a running pipeline
      }
      exports.ToDevice__sent(self, batch, start, n, sent, this.descs);
      sentAll += sent;
      if (sent < n) this.sayWhyRefused();
    }
    arena.view.setUint32(batch, 0, true);
    return sentAll;
  }

  /** Says once that frames cut short by a capture are not sent. */
  private sayTruncated(): void {
    if (this.saidTruncated) return;
    this.saidTruncated = true;
    this.ctx.log(`${this.ctx.params.device}: frames a capture cut short (snaplen) are not sent, their headers promising bytes they lack; `
      + 'they are counted in truncated (logged once)');
  }

  /** Logs each cause of refused frames once (an MTU smaller than the frames, a full queue): errors counts them all. */
  private sayWhyRefused(): void {
    const why = this.addon.sendError(this.socket);
    if (!why || this.causes.has(why)) return;
    this.causes.add(why);
    this.ctx.log(`${this.ctx.params.device}: the kernel refused frames: ${why}; they are counted in errors (logged once)`);
  }

  close(): void {
    this.addon.close(this.socket);
    if (this.ctx.params.offloads === 'disable') releaseOffloads(this.addon, this.ctx.params.device, this.ctx.log);
  }
}
