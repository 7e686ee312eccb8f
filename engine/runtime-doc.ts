// The reference of the fast-path runtime that element authors import from "wirepath" (assembly/index.ts),
// made from the declarations and their doc comments, for the README (`npm run docs`).

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PROJECT_ROOT } from './registry.ts';
import { EnvironmentError } from './errors.ts';
import type * as TS from 'typescript';

const ASSEMBLY = join(PROJECT_ROOT, 'assembly');

export async function runtimeReference(): Promise<string> {
  let ts: typeof TS;
  try {
    ts = ((await import('typescript')) as unknown as { default: typeof TS }).default;
  } catch {
    throw new EnvironmentError('the runtime reference is read with the typescript package, which is not installed', 'it is a development dependency: npm install in the project');
  }
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
