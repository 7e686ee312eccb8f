// LoadBalancer across reloads: what a reload keeps of the table and refuses.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { tempDir, removeDir } from './helpers.ts';
import { loadConfig } from '../engine/config.ts';
import { Pipeline } from '../engine/pipeline.ts';
import { Supervisor } from '../engine/supervisor.ts';

/** A pipeline with an lb that runs until stopped; `lb` is the rest of its parameters. */
const config = (lb: string) => `
elements:
  gen: { type: Generator, count: 0, timing: original, rate: 1000 }
  lb: { type: LoadBalancer, vips: ['198.18.100.1 tcp 80'], source: 198.18.0.0/24, ${lb} }
  drop: { type: Discard }
connections:
  - gen -> lb -> drop
`;

/** Runs `yaml` under a supervisor (so it can be reloaded) while `body` runs; `logs` collects the pipeline's log lines. */
async function running(yaml: string, body: (supervisor: Supervisor, logs: string[]) => Promise<void>): Promise<void> {
  const dir = tempDir();
  try {
    const file = join(dir, 'lb.yaml');
    writeFileSync(file, yaml);
    const logs: string[] = [];
    const options = { shards: 1, log: (m: string) => logs.push(m) };
    const supervisor = new Supervisor(await Pipeline.create(await loadConfig(file), options), file, {}, options);
    const run = supervisor.run();
    try {
      await body(supervisor, logs);
    } finally {
      supervisor.stop();
      await run;
    }
  } finally {
    removeDir(dir);
  }
}

const weights = (supervisor: Supervisor) => Object.fromEntries((supervisor.pipeline().handlerRead('lb', 'backends') as { name: string; weight: number }[]).map((b) => [b.name, b.weight]));

test('a reload with more backends than max_backends is refused by that check, and the running table stays', async () => {
  await running(config("backends: ['web1 198.18.1.11', 'web2 198.18.1.12'], max_backends: 2"), async (supervisor) => {
    const refused = await supervisor.reload(config("backends: ['web1 198.18.1.11', 'web2 198.18.1.12'], max_backends: 1")).then(() => undefined, (e) => e);
    assert.equal(refused?.errors?.map((e: { message: string }) => e.message), ['lb.backends: 2 backends do not fit max_backends: 1 (web2 is the first without a slot)']);
    assert.equal(weights(supervisor), { web1: 1, web2: 1 });
  });
});

test.run();
