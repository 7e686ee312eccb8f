import { defineElement, param, state } from '../../engine/api.ts';

export default defineElement({
  type: 'Rewrite',
  summary: 'rewrites Ethernet addresses, IPv4 addresses, ports, TTL and DSCP',
  description: 'Sets each header field that has a parameter and leaves the others alone. IP checksums and the TCP/UDP '
    + 'checksums (whose pseudo-header covers the addresses) are updated incrementally (RFC 1624); a UDP checksum of 0 '
    + '(none) stays 0. Ports are rewritten on TCP and UDP first fragments only. With dec_ttl, a packet whose TTL is 1 or 0 '
    + 'leaves unchanged on output 1 (expired), or is dropped if output 1 is not connected. Frames without a valid IPv4 '
    + 'header get only the Ethernet rewrites and are counted in not_ipv4. When addresses or ports change, a TCP or UDP packet '
    + 'whose header is cut short (by the frame or the IP length) is dropped and counted in malformed: its checksum could not follow. '
    + 'A frame that a capture cut short (snaplen) is rewritten like a whole one as long as its headers are there: the checksums '
    + 'follow the change without the bytes the capture left out.',
  inputs: 1,
  outputs: [
    { name: 'out', doc: 'rewritten packets' },
    { name: 'expired', doc: 'packets whose TTL ran out (with dec_ttl)', optional: true },
  ],
  params: {
    eth_src: param.mac('new Ethernet source address'),
    eth_dst: param.mac('new Ethernet destination address'),
    ip_src: param.ipv4('new IPv4 source address'),
    ip_dst: param.ipv4('new IPv4 destination address'),
    src_port: param.port('new TCP/UDP source port'),
    dst_port: param.port('new TCP/UDP destination port'),
    dec_ttl: param.bool('decrement the TTL, sending expired packets to output 1', { default: false }),
    dscp: param.int('new DSCP value (the ECN bits are kept)', 0, 63),
  },
  state: {
    rewritten: state.counter('packets whose IPv4 header was processed'),
    not_ipv4: state.counter('frames without a valid IPv4 header (passed with Ethernet rewrites only)'),
    expired: state.counter('packets whose TTL ran out'),
    malformed: state.counter('TCP or UDP packets whose header is cut short, when addresses or ports change: their checksum could not follow (dropped)'),
  },
  example: 'rw: { type: Rewrite, ip_src: 203.0.113.7, dec_ttl: true }',
});
