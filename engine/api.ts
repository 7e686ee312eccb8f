// What element authors import from 'wirepath' in an element's element.ts.
export { defineElement, state } from './element.ts';
export type { ElementDefinition, ParamWarning, SourceDriver, SinkDriver, IoContext, ElementView, TableEntry, HandlerSpec, PortSpec } from './element.ts';
export { param, ParamTypeError } from './params.ts';
export type { ParamType, ValueLocation } from './params.ts';
