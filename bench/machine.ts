// The machine line every benchmark reports, so figures are read with the hardware they came from.

import { cpus, release } from 'node:os';
import { availableParallelism } from 'node:os';

export interface Machine {
  nproc: number;
  cpu: string;
  node: string;
  kernel: string;
}

export function machine(): Machine {
  return { nproc: availableParallelism(), cpu: cpus()[0]?.model ?? 'unknown', node: process.version, kernel: release() };
}

export function machineLine(m: Machine): string {
  return `${m.nproc} × ${m.cpu}, node ${m.node}, kernel ${m.kernel}`;
}

export const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
