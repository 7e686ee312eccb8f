import { defineElement } from '../../engine/api.ts';

export default defineElement({
  type: 'Discard',
  summary: 'drops every packet it receives',
  description: 'Recycles the slot of each packet it receives. The end of a branch whose packets are not wanted; its `in` counter says how many.',
  inputs: 1,
  outputs: [],
  params: {},
  example: 'drop: { type: Discard }',
});
