import { defineElement, param, state } from '../../engine/api.ts';
import { expressionType, programState, programText, reachabilityWarnings, compileErrors, rulesAsCode, type Rule } from './rules.ts';

export default defineElement({
  type: 'Classifier',
  summary: 'sends each packet to the output of the first pattern it matches',
  description: 'Pattern N sends what it matches to output N; the first matching pattern wins, `-` matches everything, and '
    + 'a packet no pattern matches is dropped and counted in unmatched. Patterns are tcpdump filter expressions (libpcap\'s '
    + 'pcap-filter syntax: host, net, port, portrange, src/dst, ether host/src/dst, ether proto, broadcast, multicast, ip, ip6, tcp, udp, icmp, proto N, vlan [ID], less, greater, '
    + 'byte expressions such as tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn, and/or/not) or Click IPClassifier spellings '
    + '(syn, tcp opt ack, dst tcp port > 1023, ip ttl < 10, ip frag, icmp type 8, a bare 10.0.0.0/8), and they match what '
    + 'tcpdump matches (numbers with a leading 0 are octal, as there; IPv6 hosts and nets too; not supported: arithmetic '
    + 'on packet fields and variable offsets, protochain, and link and tunnel protocols such as mpls, pppoes, llc): port and TCP-flag tests see first fragments only, `vlan` shifts what follows by the tag, `and` and '
    + '`or` group from the left with equal precedence, and a pattern that reads past the captured bytes does not match. '
    + 'All patterns compile into one decision program of masked compares, shared between patterns, with a hash lookup '
    + 'of a field that patterns compare with many values (a list of thousands of hosts, nets or ports is best one pattern: '
    + '`host a or host b or ...` is a lookup of each address field), run as code made for the patterns (up to 64 terms without a branch, as a bit '
    + 'vector); a pattern that can never match or is shadowed by earlier ones is warned about.',
  inputs: 1,
  outputs: (params) => ((params.patterns as Rule[] | undefined) ?? [undefined]).map((rule, i) => ({
    name: `${i}`,
    doc: rule ? `packets matching '${rule.text}' (and no earlier pattern)` : 'packets whose first matching pattern is pattern N',
  })),
  params: {
    patterns: param.strings('the patterns, one per output, in order', { required: true, item: expressionType }),
  },
  state: {
    program: programState((p) => p.patterns),
    unmatched: state.counter('packets no pattern matched (dropped)'),
  },
  handlers: {
    program: {
      doc: 'the compiled decision program, one node per line',
      counter: false,
      read: (view) => programText(view.params.patterns as Rule[], (n) => `output ${n}`),
    },
  },
  specialize: rulesAsCode((p) => p.patterns, { stateClass: 'ClassifierState', programModule: './program' }),
  invalid: (params) => compileErrors('patterns', params.patterns, 'pattern'),
  warnings: (params) => reachabilityWarnings('patterns', params.patterns, 'pattern', 0), // numbered as the outputs they send to
  example: "cl: { type: Classifier, patterns: ['tcp dst port 80 or 443', 'udp dst port 53', '-'] }\n# connections: src -> cl, cl[0] -> web, cl[1] -> dns, cl[2] -> other",
});
