// What element authors import from 'wirepath' in an element's element.ts.
export { defineElement, state } from './element.ts';
export type { ElementDefinition, SourceDriver, SinkDriver, IoContext, ElementView, HandlerSpec, PortSpec } from './element.ts';
export { param } from './params.ts';
