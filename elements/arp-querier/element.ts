import { defineElement, param, state } from '../../engine/api.ts';
import type { Cidr } from '../../engine/params.ts';

interface QuerierParams {
  address: number;
  gateway?: number;
  network?: Cidr;
  capacity: number;
}

/** Bytes of a neighbour slot, and of the table's header before the slots (process.ts). */
const SLOT = 32;
const slots = (p: { capacity: number }) => 2 ** Math.ceil(Math.log2(p.capacity));

export default defineElement({
  type: 'ARPQuerier',
  summary: 'sets the Ethernet addresses of IPv4 packets to their next hop\'s, found by ARP',
  description: 'Click\'s ARPQuerier: the Ethernet end of a router\'s output. Each IPv4 packet on input 0 leaves on output 0 '
    + 'from `mac` to the MAC of its next hop: its destination, or `gateway` for a destination outside `network`. A packet '
    + 'to 255.255.255.255 or the network\'s broadcast address goes to the broadcast MAC, and one to a multicast group to '
    + 'the group\'s MAC (RFC 1112). The other MACs come from ARP (RFC 826): for a next hop not known yet it sends an ARP '
    + 'request from `address` (broadcast, with the packet\'s VLAN tags), again at most once a second, and holds the '
    + 'packet until the answer comes; as Click does, one packet per neighbour waits (up to 64 in all, on any shard), and '
    + 'the others are dropped, as is a packet not answered for within 3 s or sent to 0.0.0.0, which no one has (counted in unresolved). A packet still waiting '
    + 'when the pipeline stops or reloads goes with it (counted in held only). ARP frames given to input 1 teach it, as '
    + 'Click learns: answers (the answering host), and requests for `address` (the asker); any ARP updates a neighbour '
    + 'already known; probes, group MACs and senders outside the network teach nothing (ignored). A '
    + 'neighbour answered more than `timeout` ago is asked again (at most once a second) while its packets go on to the '
    + 'MAC it had; one that has not answered for 3 s more is unknown again. The neighbours are shared by all shards (a '
    + 'table of `capacity`, where a neighbour not heard of for `timeout` makes room for a new one); a table with no room '
    + 'drops the packets of neighbours it cannot take (table_full). Frames on input 0 without a valid IPv4 header, and '
    + 'those on input 1 that are no Ethernet and IPv4 ARP, are counted and dropped.',
  inputs: 2,
  outputs: [{ name: 'out', doc: 'packets with their next hop\'s Ethernet address, and ARP requests' }],
  // A packet may go out with a new ARP request beside it; an ARP answer may let a held packet go.
  expands: 2,
  clones: 1,
  tick: 'drops the packets held 3 s for a neighbour that did not answer, also on a shard without packets',
  params: {
    address: param.ipv4('its own address on the link: the sender of its ARP requests', { required: true }),
    mac: param.mac('its own Ethernet address: the source of every frame it sends', { required: true }),
    network: param.cidr('the prefix on the link: destinations outside it go to gateway (unset: every destination is on the link)', { fixed: true }),
    gateway: param.ipv4('the next hop of destinations outside network', { fixed: true }),
    timeout: param.duration('how long an answer is trusted before the neighbour is asked again', { default: 300e9 }),
    capacity: param.int('most neighbours', 16, 1 << 20, { default: 4096, fixed: true }),
  },
  invalid: (p: QuerierParams) => {
    if ((p.gateway === undefined) !== (p.network === undefined)) {
      return [{ param: p.gateway === undefined ? 'network' : 'gateway', message: 'network and gateway go together: destinations outside the network go to the gateway', hint: 'set both, or neither (every destination is then on the link)' }];
    }
    if (p.gateway !== undefined && p.network !== undefined && ((p.gateway & p.network.mask) >>> 0) !== p.network.address) {
      return [{ param: 'gateway', message: 'the gateway is outside the network: it could not be reached on the link', hint: 'give the gateway\'s address on the link, inside network' }];
    }
    return [];
  },
  state: {
    resolved: state.counter('packets sent to a known next hop'),
    held: state.counter('packets held until their next hop answered'),
    released: state.counter('held packets sent once their next hop answered'),
    unresolved: state.counter('packets dropped for want of their next hop\'s MAC: another waited for it, no room to hold them, no answer in 3 s, or sent to 0.0.0.0'),
    queries: state.counter('ARP requests sent'),
    learned: state.counter('ARP frames that taught or updated a neighbour'),
    ignored: state.counter('ARP frames that taught nothing: probes, group MACs, senders outside the network, requests for others by unknown hosts'),
    table_full: state.counter('packets dropped because the table had no room for their next hop'),
    not_ipv4: state.counter('frames on input 0 without a valid IPv4 header (dropped)'),
    not_arp: state.counter('frames on input 1 that are no Ethernet and IPv4 ARP (dropped)'),
    neighbours: state.data({
      doc: 'the neighbours, shared by the shards: [slot count u32] then from byte 32 per slot [address u32][version u32][MAC, bit 63 when known u64][learned u64][queried u64]',
      shared: true,
      layout: (p: QuerierParams) => slots(p),
      size: (p: QuerierParams) => SLOT + slots(p) * SLOT,
      init: (p: QuerierParams, view) => view.setUint32(0, slots(p), true),
    }),
    held_packets: state.data({
      doc: 'packets waiting for their next hop\'s MAC, one per neighbour, for any shard: [count u32] then from byte 16, 64 times [packet u32][next hop u32][since u64] (not saved: a snapshot holds no packets)',
      size: () => 16 + 64 * 16,
      init: () => undefined,
    }),
  },
  holding: (view) => view.data('held_packets').getUint32(0, true),
  example: 'to_lan: { type: ARPQuerier, address: 100.64.0.1, mac: 02:00:64:00:00:01 }\n'
    + '# connections: nat[1] -> to_lan -> to_device, arp_replies -> [1]to_lan',
});
