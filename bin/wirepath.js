#!/usr/bin/env node
// The wirepath command. The engine is TypeScript, loaded through tsx.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../engine/cli.ts');
process.exitCode = await main(process.argv.slice(2));
