// The references element authors read in the README (`npm run docs`), made from the declarations and their
// doc comments: the fast-path runtime they import from "wirepath" in process.ts (assembly/index.ts), and the
// declaration API they import from 'wirepath' in element.ts (engine/api.ts: defineElement, param, state).

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PROJECT_ROOT } from './registry.ts';
import { EnvironmentError } from './errors.ts';
import type * as TS from 'typescript';

const ASSEMBLY = join(PROJECT_ROOT, 'assembly');

async function typescript(): Promise<typeof TS> {
  try {
    return ((await import('typescript')) as unknown as { default: typeof TS }).default;
  } catch {
    throw new EnvironmentError('the references are read with the typescript package, which is not installed', 'it is a development dependency: npm install in the project');
  }
}

export async function runtimeReference(): Promise<string> {
  const ts = await typescript();
  const index = ts.createSourceFile('index.ts', readFileSync(join(ASSEMBLY, 'index.ts'), 'utf8'), ts.ScriptTarget.Latest, true);
  const sections: string[] = [];
  for (const st of index.statements) {
    if (!ts.isExportDeclaration(st) || !st.moduleSpecifier || !ts.isStringLiteral(st.moduleSpecifier)) continue;
    const file = `${st.moduleSpecifier.text.replace(/^\.\//, '')}.ts`;
    const names = st.exportClause && ts.isNamedExports(st.exportClause) ? new Set(st.exportClause.elements.map((e) => e.name.text)) : undefined;
    const lines = fileEntries(ts, file, names);
    if (lines.length) sections.push(`**${file}**${fileDoc(ts, file)}\n\n${lines.join('\n')}`);
  }
  return sections.join('\n\n') + '\n';
}

/** The text of the /** comment just before `node`, on one line. */
function docOf(ts: typeof TS, node: TS.Node, text: string): string {
  const doc = (ts.getLeadingCommentRanges(text, node.getFullStart()) ?? []).filter((r) => text.startsWith('/**', r.pos)).at(-1);
  if (!doc) return '';
  return text.slice(doc.pos + 3, doc.end - 2).split('\n').map((l) => l.replace(/^\s*\*\s?/, '').trim()).filter(Boolean).join(' ');
}

/** A file's opening comment's first sentence. */
function fileDoc(ts: typeof TS, file: string): string {
  const text = readFileSync(join(ASSEMBLY, file), 'utf8');
  const lead = /^((?:\/\/.*\n)+)/.exec(text)?.[1];
  if (!lead) return '';
  const words = lead.split('\n').map((l) => l.replace(/^\/\/\s?/, '').trim()).join(' ').trim();
  return `: ${/^.*?\.(\s|$)/.exec(words)?.[0].trim() ?? words}`;
}

/** The declaration's head: up to its body, without decorators, `export` or `function`. */
function head(node: TS.Node, text: string): string {
  const body = (node as TS.FunctionDeclaration).body;
  return text.slice(node.getStart(), body ? body.getStart() : node.getEnd())
    .replace(/^(@\w+\s+)+/, '').replace(/^export\s+/, '').replace(/^function\s+/, '').replace(/\s+/g, ' ').replace(/[;{\s]+$/, '');
}

/** What element.ts declares with: each interface's members and each helper object's functions, with their docs. */
export async function declarationReference(): Promise<string> {
  const ts = await typescript();
  const source = (file: string) => {
    const text = readFileSync(join(PROJECT_ROOT, file), 'utf8');
    return { text, tree: ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true) };
  };
  const element = source('engine/element.ts'), params = source('engine/params.ts');
  const oneLine = (s: string) => s.replace(/\s+/g, ' ').replace(/[;,]$/, '');
  const iface = ({ text, tree }: typeof element, name: string, title: string) => {
    const node = tree.statements.find((s): s is TS.InterfaceDeclaration => ts.isInterfaceDeclaration(s) && s.name.text === name)!;
    const doc = docOf(ts, node, text);
    return [`- ${title}${doc ? `: ${doc}` : ''}`, ...node.members.map((m) => {
      const d = docOf(ts, m, text);
      return `  - \`${oneLine(m.getText().replace(/^\/\*\*[\s\S]*?\*\/\s*/, ''))}\`${d ? `: ${d}` : ''}`;
    })];
  };
  const helpers = ({ text, tree }: typeof element, name: string) => {
    const statement = tree.statements.find((s): s is TS.VariableStatement => ts.isVariableStatement(s) && s.declarationList.declarations[0].name.getText() === name)!;
    const object = statement.declarationList.declarations[0].initializer as TS.ObjectLiteralExpression;
    const doc = docOf(ts, statement, text);
    return [`- \`${name}\`${doc ? `: ${doc}` : ''}`, ...object.properties.map((p) => {
      const fn = (p as TS.PropertyAssignment).initializer as TS.ArrowFunction;
      const args = fn.parameters.map((a) => oneLine(a.getText())).join(', ');
      const d = docOf(ts, p, text);
      return `  - \`${name}.${p.name!.getText()}(${args})\`${d ? `: ${d}` : ''}`;
    })];
  };
  return [
    ...iface(element, 'ElementDefinition', '`defineElement({ ... })`: the declaration, in element.ts'),
    ...iface(element, 'PortSpec', 'an output port (`outputs`)'),
    ...iface(element, 'ParamWarning', 'what `warnings` and `invalid` return, one per mistake'),
    ...helpers(params, 'param'),
    ...iface(params, 'ParamOptions', 'the options every `param.*` takes'),
    ...helpers(element, 'state'),
    ...iface(element, 'FlowTableState', 'a table\'s declaration (`state.flowTable`, `state.sourceTable`; kind, scope, owner and merges are set by them)'),
    ...iface(element, 'DataState', 'data\'s declaration (`state.data`)'),
    ...iface(element, 'HandlerSpec', 'a handler (`handlers`)'),
    ...iface(element, 'ElementView', 'what handlers and periodic tasks get: `view`'),
    ...iface(element, 'TableEntry', 'an entry of `view.entries(table)`'),
  ].join('\n') + '\n';
}

function fileEntries(ts: typeof TS, file: string, only: Set<string> | undefined): string[] {
  const text = readFileSync(join(ASSEMBLY, file), 'utf8');
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const exported = (n: TS.Node) => ts.canHaveModifiers(n) && (ts.getModifiers(n) ?? []).some((m) => m.kind === ts.SyntaxKind.ExportKeyword);
  const entry = (signature: string, doc: string, indent = '') => `${indent}- \`${signature}\`${doc ? `: ${doc}` : ''}`;
  const constants = (statements: readonly TS.Statement[], prefix = '') => statements.filter((s): s is TS.VariableStatement => ts.isVariableStatement(s) && exported(s))
    .flatMap((s) => s.declarationList.declarations.map((d) => `${prefix}${d.name.getText()}`)).filter((n) => !only || only.has(n));
  const out: string[] = [];
  const consts = constants(source.statements);
  if (consts.length) out.push(`- constants: ${consts.map((c) => `\`${c}\``).join(', ')}`);
  for (const st of source.statements) {
    if (!exported(st)) continue;
    if (ts.isFunctionDeclaration(st) && st.name && (!only || only.has(st.name.text))) out.push(entry(head(st, text), docOf(ts, st, text)));
    else if (ts.isModuleDeclaration(st) && st.body && ts.isModuleBlock(st.body) && (!only || only.has(st.name.getText()))) {
      const name = st.name.getText();
      const doc = docOf(ts, st, text);
      out.push(`- namespace \`${name}\`${doc ? `: ${doc}` : ''}`);
      const members = constants(st.body.statements, `${name}.`);
      if (members.length) out.push(`  - constants: ${members.map((c) => `\`${c}\``).join(', ')}`);
      for (const m of st.body.statements) {
        if (exported(m) && ts.isFunctionDeclaration(m) && m.name) out.push(entry(`${name}.${head(m, text)}`, docOf(ts, m, text), '  '));
      }
    } else if (ts.isClassDeclaration(st) && st.name && (!only || only.has(st.name.text))) {
      const doc = docOf(ts, st, text);
      out.push(`- class \`${st.name.text}\`${doc ? `: ${doc}` : ''}`);
      for (const m of st.members) {
        if ((ts.getModifiers(m as TS.HasModifiers) ?? []).some((x) => x.kind === ts.SyntaxKind.PrivateKeyword)) continue;
        if (ts.isPropertyDeclaration(m) || ts.isMethodDeclaration(m) || ts.isGetAccessor(m)) out.push(entry(head(m, text), docOf(ts, m, text), '  '));
      }
    }
  }
  return out;
}
