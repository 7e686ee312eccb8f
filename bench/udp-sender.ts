// A 64-byte UDP frame blaster for bench/veth.ts, on the AF_PACKET addon's sendmmsg: iperf3 makes one
// sendto per datagram and tops out near 0.2 Mpps, well below what the path carries.
//   node --import tsx bench/udp-sender.ts DEVICE SRC_MAC DST_MAC SECONDS
// Sends 100.64.0.2 -> 198.18.0.2 UDP to port 9 from 256 source ports for SECONDS, then prints
// {"sent": frames, "seconds": s} as JSON.

import { afpacket } from '../native/afpacket.ts';
import { ipv4Frame } from '../test/helpers.ts';

const [device, srcMac, dstMac, seconds] = process.argv.slice(2);
const FRAMES = 256;
const FRAME = 64;
const addon = afpacket('udp-sender');
const socket = addon.openTx(device, 2048);
const memory = new Uint8Array(FRAMES * FRAME + FRAMES * 8);
const descs = FRAMES * FRAME;
const view = new DataView(memory.buffer);
const mac = (s: string) => Buffer.from(s.replaceAll(':', ''), 'hex');
for (let i = 0; i < FRAMES; i++) {
  // 14 + 20 + 8 + 22 bytes of payload = 64.
  const frame = ipv4Frame({ src: '100.64.0.2', dst: '198.18.0.2', proto: 'udp', sport: 10000 + i, dport: 9, payload: 22 });
  mac(dstMac).copy(frame, 0);
  mac(srcMac).copy(frame, 6);
  memory.set(frame, i * FRAME);
  view.setUint32(descs + 8 * i, i * FRAME, true);
  view.setUint32(descs + 8 * i + 4, FRAME, true);
}
const end = performance.now() + Number(seconds) * 1000;
let sent = 0;
const start = performance.now();
while (performance.now() < end) sent += addon.send(socket, memory, descs, FRAMES);
console.log(JSON.stringify({ sent, seconds: (performance.now() - start) / 1000 }));
addon.close(socket);
