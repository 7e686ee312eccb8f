// One error type for everything a user can get wrong: a message, where it is, and what to do.

export interface SourcePosition {
  file: string;
  line: number;
  col: number;
}

export class ConfigError {
  constructor(
    readonly message: string,
    readonly position?: SourcePosition,
    readonly hint?: string,
  ) {}

  format(): string {
    const where = this.position ? `${this.position.file}:${this.position.line}:${this.position.col}: ` : '';
    return where + this.message + (this.hint ? `\n  hint: ${this.hint}` : '');
  }
}

/** Something valid but probably not meant: printed on stderr, the config still loads. */
export class ConfigWarning extends ConfigError {
  override format(): string {
    const where = this.position ? `${this.position.file}:${this.position.line}:${this.position.col}: ` : '';
    return `${where}warning: ${this.message}` + (this.hint ? `\n  hint: ${this.hint}` : '');
  }
}

/** Thrown with every error found in one file, so they are reported together. */
export class ConfigErrors extends Error {
  constructor(readonly errors: ConfigError[]) {
    super(errors.map((e) => e.format()).join('\n'));
    this.name = 'ConfigErrors';
  }
}

/** A failure of the world outside the config: a missing file, a device, a permission. */
export class EnvironmentError extends Error {
  /** The config element whose file or device it is, when an element opened it. */
  position?: SourcePosition;

  constructor(message: string, readonly hint?: string) {
    super(message);
    this.name = 'EnvironmentError';
  }

  format(): string {
    const where = this.position ? `${this.position.file}:${this.position.line}:${this.position.col}: ` : '';
    return where + this.message + (this.hint ? `\n  hint: ${this.hint}` : '');
  }
}

/** A request the pipeline cannot take now, for another under way or its stop (the control API's 409). */
export class ConflictError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConflictError';
  }
}

/** A pipeline that stopped moving (the stall watch in pipeline.ts): its message says what is stuck. */
export class StallError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StallError';
  }
}

/** An element's own code that threw while the pipeline ran (a periodic task): the message names the element and its line. */
export class ElementCodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ElementCodeError';
  }
}

/** The closest candidate by edit distance, when it is close enough to be a likely typo. */
export function didYouMean(word: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestDistance) { best = c; bestDistance = d; }
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}
