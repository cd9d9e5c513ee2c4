/**
 * The API reference shows how to use every public class (issue 9): each class that `lib/index` exports (what a
 * user can import from 'graphdriver') has an `@example` in its doc comment, and that example type-checks against
 * the real API, so a signature change that leaves an example behind fails here rather than in a user's editor.
 *
 * The classes are taken from the module at run time (the values that are classes), their declarations from the
 * TypeScript compiler, which follows the re-exports. Each example is compiled as a module of its own: its import
 * lines with 'graphdriver' pointed at lib/index, the rest as the body of an async function (examples use
 * top-level await and show results in variables they do not use again).
 */
import * as path from 'node:path';
import * as ts from 'typescript';

import * as api from '../../lib';

const ROOT = path.resolve(__dirname, '../..');
const INDEX = path.join(ROOT, 'lib', 'index.ts');

function isClass(v: unknown): boolean {
  return typeof v === 'function' && /^class\b/.test(Function.prototype.toString.call(v));
}

const exportedClasses = Object.entries(api)
  .filter(([, v]) => isClass(v))
  .map(([name]) => name)
  .sort();

function compilerOptions(): ts.CompilerOptions {
  const parsed = ts.getParsedCommandLineOfConfigFile(path.join(ROOT, 'tsconfig.json'), {}, {
    ...ts.sys,
    onUnRecoverableConfigFileDiagnostic: (d) => {
      throw new Error(ts.flattenDiagnosticMessageText(d.messageText, '\n'));
    },
  });
  if (!parsed) throw new Error('cannot read tsconfig.json');
  // Examples show values in variables they do not use again.
  return { ...parsed.options, noEmit: true, noUnusedLocals: false, noUnusedParameters: false };
}

interface ClassDoc {
  file: string;
  /** Text of each `@example` tag. */
  examples: string[];
}

/** The declaration and examples of each class lib/index exports, per the compiler. */
function classDocs(program: ts.Program): Map<string, ClassDoc> {
  const checker = program.getTypeChecker();
  const index = program.getSourceFile(INDEX);
  const moduleSymbol = index && checker.getSymbolAtLocation(index);
  if (!moduleSymbol) throw new Error('lib/index.ts is not a module');
  const out = new Map<string, ClassDoc>();
  for (const exp of checker.getExportsOfModule(moduleSymbol)) {
    const sym = exp.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exp) : exp;
    const decl = sym.declarations?.find(ts.isClassDeclaration);
    if (!decl) continue;
    const examples = ts
      .getJSDocTags(decl)
      .filter((t) => t.tagName.text === 'example')
      .map((t) => ts.getTextOfJSDocComment(t.comment) ?? '');
    out.set(exp.name, { file: path.relative(ROOT, decl.getSourceFile().fileName), examples });
  }
  return out;
}

/** The code of an example: the content of its ```ts fence (typedoc shows the tag's text as markdown). */
function exampleCode(text: string): string | null {
  const m = /```ts\n([\s\S]*?)\n```/.exec(text);
  return m ? m[1]! : null;
}

/** An example as a module: its imports on top (from lib/index), the rest inside an async function. */
function exampleModule(code: string, dir: string): string {
  const lines = code.split('\n');
  let i = 0;
  const imports: string[] = [];
  while (i < lines.length) {
    const line = lines[i]!;
    if (line.trim() === '') {
      i++;
      continue;
    }
    if (!line.startsWith('import ')) break;
    // An import statement may span lines; it ends with its module specifier.
    let stmt = line;
    while (!/from\s+'[^']+';?\s*$/.test(stmt) && i + 1 < lines.length) stmt += '\n' + lines[++i]!;
    imports.push(stmt);
    i++;
  }
  const index = path.relative(dir, path.join(ROOT, 'lib', 'index')).split(path.sep).join('/');
  const head = imports.map((s) => s.replace(/from\s+'graphdriver'/, `from '${index.startsWith('.') ? index : `./${index}`}'`));
  return `${head.join('\n')}\n\nexport async function example(): Promise<void> {\n${lines.slice(i).join('\n')}\n}\n`;
}

describe('API reference examples', () => {
  const options = compilerOptions();
  const libProgram = ts.createProgram([INDEX], options);
  const docs = classDocs(libProgram);

  it('finds the public classes', () => {
    // A sanity check of the discovery itself: a few classes every release has.
    expect(exportedClasses).toEqual(expect.arrayContaining(['Storage', 'VfsDriver', 'Overlay2Driver', 'GraphdriverError', 'RegistryClient']));
    expect(exportedClasses.filter((name) => !docs.has(name))).toEqual([]);
  });

  it('gives every exported class an @example with a ts code block', () => {
    const missing = exportedClasses
      .filter((name) => docs.get(name)!.examples.every((e) => exampleCode(e) === null))
      .map((name) => `${name} (${docs.get(name)!.file})`);
    expect(missing).toEqual([]);
  });

  it('has examples that type-check against the API', () => {
    const dir = path.join(ROOT, 'test', 'unit', '__doc_examples__');
    const files = new Map<string, string>();
    for (const name of exportedClasses) {
      for (const [n, text] of docs.get(name)!.examples.entries()) {
        const code = exampleCode(text);
        if (code !== null) files.set(path.join(dir, `${name}-${n}.ts`), exampleModule(code, dir));
      }
    }
    expect(files.size).toBeGreaterThan(0);
    // The examples exist only in memory: a host that serves them and reads everything else from disk.
    const host = ts.createCompilerHost(options);
    const getSourceFile = host.getSourceFile.bind(host);
    host.getSourceFile = (fileName, languageVersion, onError, shouldCreate) => {
      const text = files.get(path.resolve(fileName));
      return text !== undefined ? ts.createSourceFile(fileName, text, languageVersion, true) : getSourceFile(fileName, languageVersion, onError, shouldCreate);
    };
    const fileExists = host.fileExists.bind(host);
    host.fileExists = (fileName) => files.has(path.resolve(fileName)) || fileExists(fileName);
    // The library's files are reused from the first program (they did not change), only the examples are new.
    const program = ts.createProgram([...files.keys()], options, host, libProgram);
    const errors = ts
      .getPreEmitDiagnostics(program)
      .filter((d) => d.file !== undefined && files.has(path.resolve(d.file.fileName)))
      .map((d) => {
        const { line } = d.file!.getLineAndCharacterOfPosition(d.start ?? 0);
        return `${path.basename(d.file!.fileName)}:${line + 1}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
      });
    expect(errors).toEqual([]);
  });
});
