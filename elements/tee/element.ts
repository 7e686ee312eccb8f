import { defineElement, param, state } from '../../engine/api.ts';

export default defineElement({
  type: 'Tee',
  summary: 'copies each packet to every output',
  description: 'Sends each packet to output 0 and a copy of it to each further output. A copy needs a free slot; '
    + 'when the pool has none, that copy is not made and counted in no_buffer.',
  inputs: 1,
  outputs: (p: { outputs: number }) => Array.from({ length: p.outputs }, (_, i) => ({ name: `copy${i}`, doc: i === 0 ? 'the original packet' : `copy ${i}` })),
  params: {
    outputs: param.int('number of outputs', 1, 64, { default: 2 }),
  },
  state: {
    no_buffer: state.counter('copies not made for want of a free slot'),
  },
  clones: (p: { outputs: number }) => p.outputs - 1,
  example: 'tee: { type: Tee, outputs: 2 }',
});
