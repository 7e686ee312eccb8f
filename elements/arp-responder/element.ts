import { defineElement, param, state } from '../../engine/api.ts';
import { types, type Cidr } from '../../engine/params.ts';

export default defineElement({
  type: 'ARPResponder',
  summary: 'answers ARP requests for its addresses with its Ethernet address',
  description: 'Click\'s ARPResponder: an ARP request (RFC 826: Ethernet, IPv4) for one of `addresses` becomes, in place, the '
    + 'reply that `mac` has it, sent back to the asker on output 0; VLAN tags stay. A prefix among the addresses answers '
    + 'for every address in it (proxy ARP) but its multicast addresses. Probes (RFC 5227: the sender\'s address 0.0.0.0) '
    + 'are answered too, so that a host does not take an address the pipeline answers for; as Linux does, announcements '
    + '(a request for the sender\'s own address), requests sent to another host\'s MAC and requests from a group MAC are '
    + 'not, and IEEE 802 hardware (type 6) is taken as Ethernet. Every other frame, IPv4 and ARP for other addresses alike, '
    + 'leaves unchanged on output 1, so the element can stand first after a FromDevice (dropped if output 1 is not '
    + 'connected); an ARP frame too short for the addresses of Ethernet and IPv4 ARP is counted in malformed and dropped.',
  inputs: 1,
  outputs: [
    { name: 'replies', doc: 'ARP replies, back to the hosts that asked' },
    { name: 'other', doc: 'every other frame, unchanged', optional: true },
  ],
  params: {
    addresses: param.strings('the addresses to answer for (a prefix: every address in it)', { required: true, item: types.prefix }),
    mac: param.mac('the Ethernet address the replies give', { required: true }),
  },
  state: {
    answered: state.counter('ARP requests answered'),
    other: state.counter('frames passed on output 1: not ARP requests for its addresses'),
    malformed: state.counter('ARP frames too short for the addresses of Ethernet and IPv4 ARP (dropped)'),
    address_table: state.data({
      doc: 'the addresses: [count u32] then [address u32][mask u32] per prefix',
      size: (p: { addresses: Cidr[] }) => 4 + 8 * p.addresses.length,
      init: (p: { addresses: Cidr[] }, view) => {
        view.setUint32(0, p.addresses.length, true);
        p.addresses.forEach((c, i) => {
          view.setUint32(4 + 8 * i, c.address, true);
          view.setUint32(8 + 8 * i, c.mask, true);
        });
      },
    }),
  },
  example: 'arp: { type: ARPResponder, addresses: [100.64.0.1], mac: 02:00:64:00:00:01 }\n'
    + '# connections: from_inside -> arp, arp[0] -> to_inside, arp[1] -> check -> ...',
});
