// Transparent huge pages for the shared memory, through the AF_PACKET addon when it is built: an advice the
// kernel may ignore (THP "never"), so without the addon everything runs as before, on 4 KiB pages.

import { createRequire } from 'node:module';

type Advise = (memory: Uint8Array, from: number, to: number) => boolean;
let advise: Advise | null | undefined;

/** Asks that the pages [from, to) of `memory` touches come as 2 MiB huge pages when they are faulted in; false when it cannot. */
export function adviseHugePages(memory: WebAssembly.Memory, from: number, to: number): boolean {
  if (advise === undefined) {
    try {
      advise = (createRequire(import.meta.url)('./build/Release/afpacket.node') as { adviseHugePages: Advise }).adviseHugePages;
    } catch {
      advise = null;
    }
  }
  return advise ? advise(new Uint8Array(memory.buffer), from, to) : false;
}
