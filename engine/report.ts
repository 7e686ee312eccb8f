// What `wirepath run` prints: a live line while running, a table of counters at the end.

import type { RunResult } from './pipeline.ts';

const si = (n: number) => (n >= 1e9 ? `${(n / 1e9).toFixed(2)}G` : n >= 1e6 ? `${(n / 1e6).toFixed(2)}M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)}k` : `${Math.round(n)}`);

/** `n` and the noun, plural unless n is 1: '1 packet', '2 packets'. */
export const amount = (n: number, noun: string) => `${n} ${noun}${n === 1 ? '' : 's'}`;

export function liveLine(packets: number, seconds: number, progress: number | undefined): string {
  const rate = seconds > 0 ? packets / seconds : 0;
  const bar = progress === undefined ? '' : `[${'#'.repeat(Math.round(progress * 20)).padEnd(20, '.')}] ${(progress * 100).toFixed(0).padStart(3)}%  `;
  return `${bar}${si(packets)} packets  ${si(rate)}pps  ${seconds.toFixed(1)}s`;
}

const holdsRecords = (v: unknown): boolean => typeof v === 'object' && v !== null && (!Array.isArray(v) || v.length === 0 || v.some((item) => typeof item === 'object'));

export function statsTable(result: RunResult): string {
  const rows = [['element', 'type', 'in', 'out', 'counters']];
  for (const [name, s] of Object.entries(result.elements)) {
    const { type, in: input, out, unconnected_drops, ...counters } = s;
    // Handlers that read as records (a LoadBalancer's backends) do not fit a line: --json has them.
    const extra = Object.entries(counters).filter(([, v]) => v !== 0 && !holdsRecords(v)).map(([k, v]) => `${k}=${v}`);
    if (unconnected_drops) extra.unshift(`unconnected_drops=${unconnected_drops}`);
    rows.push([name, type, String(input), out.join(' / '), extra.join(' ')]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const lines = rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ').trimEnd());
  lines.splice(1, 0, widths.map((w) => '-'.repeat(w)).join('  '));
  lines.push('', `${amount(result.packets_in, 'packet')} in, ${result.packets_out} out, ${result.wall_seconds.toFixed(3)} s, ${si(result.packets_per_second)} packets/s${result.interrupted ? ' (interrupted)' : ''}`);
  for (const c of result.crashes) lines.push(`shard ${c.shard} crashed in ${c.element} (${c.type}): ${c.error}${c.source ? ` at ${c.source}` : ''}; ${c.packets_lost} packets lost`);
  return lines.join('\n') + '\n';
}

/** JSON of a result whose values may be bigints (a handler returning a counter as the view reads it): numbers, or strings past 2^53. */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_, v) => (typeof v === 'bigint' ? (v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= -BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : String(v)) : v));
}
