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
  const ids = mermaidIds(graph);
  const id = (name: string) => ids.get(name)!;
  return [
    'flowchart LR',
    ...graph.nodes.map((n) => `  ${id(n.name)}["${label(n.name)}"]`),
    ...edges.map((e) => `  ${id(e.from)} -- "${e.out} → ${e.in}" --> ${id(e.to)}`),
    '',
  ].join('\n');
}

/** Words a Mermaid flowchart reads as statements or block ends, so no node can have them as its id. */
const MERMAID_KEYWORDS = new Set(['end', 'graph', 'flowchart', 'subgraph', 'direction', 'style', 'linkStyle', 'classDef', 'class', 'click', 'call', 'href']);

/** Each element's Mermaid node id: its name, or for a keyword the name with _ appended until it is unused. */
function mermaidIds(graph: Graph): Map<string, string> {
  const ids = new Map<string, string>();
  for (const name of graph.byName.keys()) {
    let id = name;
    while (MERMAID_KEYWORDS.has(id) || (id !== name && graph.byName.has(id))) id += '_';
    ids.set(name, id);
  }
  return ids;
}
