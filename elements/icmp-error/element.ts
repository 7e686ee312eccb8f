import { defineElement, param, state } from '../../engine/api.ts';

export default defineElement({
  type: 'ICMPError',
  summary: 'turns each packet into an ICMP error about it, back to its sender (time exceeded, destination unreachable)',
  description: 'Click\'s ICMPError: the router\'s answer to a packet it cannot forward. Each packet becomes, in place, an ICMP '
    + 'error from src to the packet\'s source, quoting its IPv4 header and as much of what follows as keeps the error within '
    + '576 bytes (RFC 1812 §4.3.2.3); the Ethernet addresses are swapped, so that it goes back the way the packet came (a '
    + 'Rewrite after it may set them). Put it on the expired output of a Rewrite with dec_ttl, and traceroute through the '
    + 'pipeline shows it as a hop. A router takes packets addressed to itself whatever their TTL (RFC 1812 §4.2.2.9): '
    + 'send those past the TTL check; time exceeded is never sent about a packet addressed to src. No error is sent about an ICMP error, a later fragment, a packet whose IPv4 header '
    + 'checksum fails, a packet to a multicast address or the limited broadcast 255.255.255.255 (the element knows no '
    + 'subnet\'s broadcast address) or to an Ethernet group address, or one whose source is no single host (0/8, 127/8, '
    + 'multicast, 240/4), as RFC 1122 §3.2.2 and RFC 1812 §4.3.2.7 require; nor, past the rate, more than `rate` a second '
    + 'per shard (bursts of `burst`), nor for a packet with no room in front of its frame. Those leave unchanged on output '
    + '1 (dropped if it is not connected), counted by reason.',
  inputs: 1,
  outputs: [
    { name: 'errors', doc: 'the ICMP errors' },
    { name: 'unanswered', doc: 'packets no error may be sent about, or none now (rate, room)', optional: true },
  ],
  params: {
    src: param.ipv4('the address the errors come from: the router\'s on the link they go back over', { required: true }),
    error: param.enum('the error: time exceeded (type 11) or destination unreachable (type 3)', ['time-exceeded', 'unreachable'], { default: 'time-exceeded' }),
    code: param.int('its code (time exceeded: 0 TTL, 1 reassembly; unreachable: 0 net, 1 host, 3 port, 4 fragmentation needed, 13 prohibited, ...)', 0, 15, { default: 0 }),
    mtu: param.int('the next-hop MTU an unreachable with code 4 (fragmentation needed) names', 68, 65535),
    rate: param.int('most errors a shard sends a second (as Linux\'s icmp_msgs_per_sec); 0: no limit', 0, 1_000_000, { default: 1000 }),
    burst: param.int('most errors a shard sends at once when it sent none for a while', 1, 1_000_000, { default: 50 }),
  },
  state: {
    sent: state.counter('ICMP errors sent'),
    not_allowed: state.counter('packets no error may be sent about: ICMP errors, later fragments, bad header checksums, broadcast or multicast, no single host as source; and for time exceeded, packets to src'),
    not_ipv4: state.counter('frames without a valid IPv4 header'),
    limited: state.counter('packets not answered because of the rate'),
    no_room: state.counter('packets not answered for want of room in front of the frame (a slot with less headroom than 28 bytes)'),
    due_ns: state.internal('when the shard may send its next error (the rate limit)'),
  },
  invalid: (p: { error: string; code: number; mtu?: number }) => {
    if (p.error === 'time-exceeded' && p.code > 1) {
      return [{ param: 'code', message: `time exceeded has codes 0 (TTL exceeded in transit) and 1 (fragment reassembly time exceeded), not ${p.code} (RFC 792)`, hint: 'use code: 0, or error: unreachable for its codes' }];
    }
    const fragmentationNeeded = p.error === 'unreachable' && p.code === 4;
    if (fragmentationNeeded && p.mtu === undefined) {
      return [{ param: 'code', message: 'an unreachable with code 4 (fragmentation needed) names the next-hop MTU, and mtu is not set', hint: 'set mtu: the MTU of the link the packet was too big for' }];
    }
    return [];
  },
  // Not an error: a running pipeline is switched to fragmentation needed by writing mtu first, then code.
  warnings: (p: { error: string; code: number; mtu?: number }) => (p.mtu !== undefined && !(p.error === 'unreachable' && p.code === 4)
    ? [{ param: 'mtu', message: 'mtu is named only by an unreachable with code 4 (fragmentation needed): unused', hint: 'set error: unreachable and code: 4, or leave mtu out' }]
    : []),
  example: 'ttl: { type: Rewrite, dec_ttl: true }\nexpired: { type: ICMPError, src: 100.64.0.1 }\n# connections: ttl[1] -> expired -> back out of the port the packets came in',
});
