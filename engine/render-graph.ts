// `wirepath graph`: the element graph as Graphviz dot or a Mermaid flowchart.

import type { Graph } from './graph.ts';

export function renderGraph(graph: Graph, format: 'dot' | 'mermaid'): string {
  const edges = graph.nodes.flatMap((node) =>
    node.targets.flatMap((t, port) => (t ? [{ from: node.name, out: port, to: t.node, in: t.port }] : [])));
  const label = (name: string) => `${name} :: ${graph.byName.get(name)!.type.type}`;
  if (format === 'dot') {
    return [
      'digraph wirepath {',
      '  rankdir=LR;',
      '  node [shape=box, fontname="monospace"];',
      ...graph.nodes.map((n) => `  "${n.name}" [label="${label(n.name)}"];`),
      ...edges.map((e) => `  "${e.from}" -> "${e.to}" [taillabel="${e.out}", headlabel="${e.in}"];`),
      '}',
      '',
    ].join('\n');
  }
  return [
    'flowchart LR',
    ...graph.nodes.map((n) => `  ${n.name}["${label(n.name)}"]`),
    ...edges.map((e) => `  ${e.from} -- "${e.out} → ${e.in}" --> ${e.to}`),
    '',
  ].join('\n');
}
