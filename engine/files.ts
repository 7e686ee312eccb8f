// File helpers for elements that write files (ToPcap's capture, a NAT's block log).

import { accessSync, constants, existsSync, mkdirSync, statSync, statfsSync } from 'node:fs';
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
 * The kernel's own filesystems (procfs, sysfs, cgroup v1 and v2, debugfs, tracefs, securityfs, by their statfs magic): no
 * file can be made in them, and their files are the kernel's settings, yet root passes access(W_OK) there.
 */
const KERNEL_FILESYSTEMS = new Set([0x9fa0, 0x62656572, 0x27e0eb, 0x63677270, 0x64626720, 0x74726163, 0x73636673]);

/**
 * The error code writing a file at `path` would meet (its missing folders made as makeFolders makes them), found without
 * making or opening anything; undefined when nothing is in the way. For checks before a reload takes over.
 */
export function unwritable(path: string): string | undefined {
  try {
    if (existsSync(path)) {
      if (statSync(path).isDirectory()) return 'EISDIR';
      return writableThere(path);
    }
    let folder = dirname(path);
    while (!existsSync(folder)) folder = dirname(folder);
    if (!statSync(folder).isDirectory()) return 'ENOTDIR';
    return writableThere(folder);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? String(e);
  }
}

/** undefined when a file or folder that exists may be written to (throws access's error otherwise). */
function writableThere(path: string): string | undefined {
  if (KERNEL_FILESYSTEMS.has(Number(statfsSync(path).type))) return 'EACCES';
  accessSync(path, constants.W_OK);
  return undefined;
}
