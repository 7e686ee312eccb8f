// Click's connection syntax inside YAML strings: `src -> check -> rw`, `tee[1] -> [0]count`.

import { isScalar } from 'yaml';
import type { Node, Scalar } from 'yaml';
import { ConfigError, type SourcePosition } from './errors.ts';
import type { Positions } from './config.ts';

export interface Endpoint {
  name: string;
  port: number;
  position: SourcePosition;
}

export interface Connection {
  from: Endpoint;
  to: Endpoint;
}

interface Hop {
  inPort?: number;
  name: string;
  outPort?: number;
  at: number;
  portAt: { in?: number; out?: number };
}

const HOP = /^\s*(?:\[\s*(\d+)\s*\]\s*)?([A-Za-z_][A-Za-z0-9_]*)\s*(?:\[\s*(\d+)\s*\])?\s*$/;
/** What a chain copied from rendered docs or typed by habit may hold in place of ->. */
const NOT_AN_ARROW = /[→⟶➔➜]|=>|[–—]>|-\s+>/;

/** Parses each chain into single connections; syntax errors point at the column inside the string. */
export function parseConnections(items: Node[], pos: Positions, errors: ConfigError[]): Connection[] {
  const connections: Connection[] = [];
  for (const item of items) {
    if (!isScalar(item) || typeof item.value !== 'string') {
      errors.push(new ConfigError('a connection is a string like "a -> b"', pos.of(item), 'quote it if it holds YAML special characters'));
      continue;
    }
    const hops = parseChain(item, pos, errors);
    if (!hops) continue;
    for (let i = 0; i + 1 < hops.length; i++) {
      const a = hops[i], b = hops[i + 1];
      connections.push({
        from: { name: a.name, port: a.outPort ?? 0, position: pos.inside(item, a.portAt.out ?? a.at) },
        to: { name: b.name, port: b.inPort ?? 0, position: pos.inside(item, b.portAt.in ?? b.at) },
      });
    }
  }
  return connections;
}

function parseChain(item: Scalar, pos: Positions, errors: ConfigError[]): Hop[] | undefined {
  const text = item.value as string;
  const hops: Hop[] = [];
  let start = 0;
  const parts = text.split('->');
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i];
    const m = HOP.exec(part);
    if (!m) {
      const lookalike = NOT_AN_ARROW.exec(part);
      if (lookalike) {
        errors.push(new ConfigError(`connection: '${lookalike[0]}' is not an arrow`, pos.inside(item, start + lookalike.index), 'join elements with -> (a hyphen and a greater-than sign)'));
        return undefined;
      }
      const col = start + (part.length - part.trimStart().length);
      const what = part.trim() === '' ? 'an element name is missing' : `'${part.trim()}' is not an element reference`;
      errors.push(new ConfigError(`connection: ${what}`, pos.inside(item, col), 'write NAME, NAME[OUT] or [IN]NAME between arrows, e.g. "tee[1] -> [0]count"'));
      return undefined;
    }
    // A number too large to hold exactly would be said back rounded (1e+23).
    const huge = [m[1], m[3]].find((digits) => digits !== undefined && !Number.isSafeInteger(Number(digits)));
    if (huge !== undefined) {
      errors.push(new ConfigError(`connection: port ${huge} is larger than any element's`, pos.inside(item, start + part.indexOf(huge)), 'ports count from 0, e.g. "tee[1] -> [0]count"'));
      return undefined;
    }
    const at = start + part.indexOf(m[2], m[1] !== undefined ? part.indexOf(']') + 1 : 0);
    const hop: Hop = { name: m[2], at, portAt: {} };
    if (m[1] !== undefined) { hop.inPort = Number(m[1]); hop.portAt.in = start + part.indexOf('['); }
    if (m[3] !== undefined) { hop.outPort = Number(m[3]); hop.portAt.out = start + part.lastIndexOf('['); }
    if (i === 0 && hop.inPort !== undefined) {
      errors.push(new ConfigError('connection: an input port on the first element of a chain connects nothing', pos.inside(item, hop.portAt.in!), `write "${m[2]}" or put an element before it`));
    }
    if (i === parts.length - 1 && hop.outPort !== undefined) {
      errors.push(new ConfigError('connection: an output port on the last element of a chain connects nothing', pos.inside(item, hop.portAt.out!), 'add "-> NAME" after it'));
    }
    hops.push(hop);
    start += part.length + 2;
  }
  if (hops.length < 2) {
    errors.push(new ConfigError('connection: a chain needs at least two elements joined by ->', pos.inside(item, 0), 'e.g. "src -> drop"'));
    return undefined;
  }
  return hops;
}
