// File helpers for elements that write files (ToPcap's capture, a NAT's block log).

import { existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * Makes a folder and those above it that are missing, one at a time: Node's mkdirSync with `recursive`
 * never returns for a path under /proc (the kernel answers ENOENT for a folder it says exists), where
 * this throws ENOENT as it should.
 */
export function makeFolders(dir: string): void {
  if (existsSync(dir)) return;
  makeFolders(dirname(dir));
  try {
    mkdirSync(dir);
  } catch (e) {
    // Made meanwhile by someone else: as good.
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
}
