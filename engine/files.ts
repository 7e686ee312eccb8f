// File helpers for elements that write files (ToPcap's capture, a NAT's block log).

import { accessSync, constants, existsSync, mkdirSync, statSync } from 'node:fs';
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

/**
 * The error code writing a file at `path` would meet (its missing folders made as makeFolders makes them), found without
 * making or opening anything; undefined when nothing is in the way. For checks before a reload takes over.
 */
export function unwritable(path: string): string | undefined {
  try {
    if (existsSync(path)) {
      if (statSync(path).isDirectory()) return 'EISDIR';
      accessSync(path, constants.W_OK);
      return undefined;
    }
    let folder = dirname(path);
    while (!existsSync(folder)) folder = dirname(folder);
    if (!statSync(folder).isDirectory()) return 'ENOTDIR';
    accessSync(folder, constants.W_OK);
    return undefined;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? String(e);
  }
}
