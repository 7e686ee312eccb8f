import { defineElement, param, state } from '../../engine/api.ts';

export default defineElement({
  type: 'CheckIPHeader',
  summary: 'checks IPv4 headers, sending bad packets to output 1',
  description: 'Checks that each Ethernet frame (after up to two VLAN tags) carries an IPv4 header whose version is 4, '
    + 'whose header length is at least 20 bytes, whose total length covers the header and fits in the frame, and whose '
    + 'checksum verifies. A frame that a capture cut short (snaplen) is good when its header is whole and its total length '
    + 'fits the frame as it was on the wire; it is counted in cut (elements that need the whole packet, a NAT or ToDevice, '
    + 'still drop it). Good packets leave on output 0; bad ones on output 1 (dropped if it is not connected), '
    + 'each counted by reason. Frames that are not IPv4 count as not_ipv4 unless non_ipv4 is pass.',
  inputs: 1,
  outputs: [
    { name: 'ok', doc: 'packets with a valid IPv4 header' },
    { name: 'bad', doc: 'packets that failed a check', optional: true },
  ],
  params: {
    verify_checksum: param.bool('verify the header checksum', { default: true }),
    non_ipv4: param.enum('what to do with frames that are not IPv4 (IPv6, ARP, ...)', ['bad', 'pass'], { default: 'bad' }),
  },
  state: {
    not_ipv4: state.counter('frames whose ethertype is not IPv4 (or too short for an Ethernet header)'),
    truncated: state.counter('frames too short for a 20-byte IPv4 header'),
    bad_version: state.counter('headers whose version is not 4'),
    bad_header_length: state.counter('headers with IHL below 5 or beyond the frame'),
    bad_total_length: state.counter('total length below the header length or beyond the frame'),
    bad_checksum: state.counter('headers whose checksum does not verify'),
    cut: state.counter('good packets that a capture cut short (snaplen): passed, their headers checked'),
  },
  example: 'check: { type: CheckIPHeader }\n# connections: src -> check -> ..., check[1] -> drop',
});
