/** Text tables for the terminal: meshctl's, and the demo's (examples/single-host imports the built file). */

export interface TableOptions {
  /** Columns aligned right (numbers); the others are aligned left. */
  right?: readonly number[];
  /** Put before every line. */
  indent?: string;
}

/** Rows of cells (the header first) as lines: each column as wide as its widest cell, two spaces apart, no
 *  trailing blanks. */
export function tableLines(rows: readonly (readonly unknown[])[], opts: TableOptions = {}): string[] {
  const { right = [], indent = '' } = opts;
  const cells = rows.map((r) => r.map(String));
  const widths: number[] = [];
  for (const r of cells) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return cells.map((r) => (indent + r.map((c, i) => (right.includes(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ')).trimEnd());
}

/** The table as text, every line ended by a newline. */
export const table = (rows: readonly (readonly unknown[])[], opts: TableOptions = {}): string => tableLines(rows, opts).map((l) => `${l}\n`).join('');
