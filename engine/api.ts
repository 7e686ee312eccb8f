// What element authors import from 'wirepath' in an element's element.ts.
export { defineElement, state } from './element.ts';
export type { ElementDefinition, ParamWarning, SourceDriver, SinkDriver, IoContext, ElementView, TableEntry, HandlerSpec, PortSpec, ReloadedElement } from './element.ts';
export { param, ParamTypeError } from './params.ts';
export { makeFolders, unwritable } from './files.ts';
// The parameter types themselves (types.cidr, types.port, ...): the `item` of a list parameter, or parts of a custom type.
export { types, intType, parseIPv4, formatIPv4, parseCidr, nonHostKind, hostPrefix, type Cidr } from './params.ts';
export type { ParamType, ValueLocation } from './params.ts';
