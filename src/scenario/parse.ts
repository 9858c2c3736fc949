/**
 * Reading scenario files: JSON Lines, one object a line; blank lines and
 * lines starting with `#` are ignored. Integers may be JSON numbers or
 * strings (hex `"0x67"`, decimal `"103"`, negative `"-22"`); symbolic values
 * may name Xen constants joined by `|` (`"UVMF_INVLPG|UVMF_ALL"`). 64-bit
 * values round-trip exactly: integer literals too large for a double are
 * turned into strings before JSON parsing.
 */

import * as abi from "../xen/abi.js";
import * as grant from "../xen/grant.js";
import * as memory from "../xen/memory.js";

export class ScenarioError extends Error {
  constructor(
    readonly line: number,
    message: string,
  ) {
    super(`line ${line}: ${message}`);
  }
}

export interface ScenarioLine {
  line: number;
  text: string;
  obj: Record<string, unknown>;
}

/** Quote integer literals outside strings that a double cannot hold exactly. */
function quoteBigIntegers(text: string): string {
  let out = "";
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      out += text.slice(i, j + 1);
      i = j + 1;
    } else if (c === "-" || (c >= "0" && c <= "9")) {
      let j = i + 1;
      while (j < text.length && /[0-9.eE+-]/.test(text[j])) j++;
      const tok = text.slice(i, j);
      out += /^-?\d+$/.test(tok) && !Number.isSafeInteger(Number(tok)) ? `"${tok}"` : tok;
      i = j;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

/** Parse a whole scenario file; throws ScenarioError naming the first bad line. */
export function parseScenario(text: string): ScenarioLine[] {
  const out: ScenarioLine[] = [];
  const lines = text.split(/\r?\n/);
  for (let n = 0; n < lines.length; n++) {
    const t = lines[n].trim();
    if (t === "" || t.startsWith("#")) continue;
    let obj: unknown;
    try {
      obj = JSON.parse(quoteBigIntegers(t));
    } catch (e) {
      throw new ScenarioError(n + 1, `not valid JSON: ${(e as Error).message}`);
    }
    if (typeof obj !== "object" || obj === null || Array.isArray(obj)) {
      throw new ScenarioError(n + 1, "each line must be a JSON object");
    }
    if (typeof (obj as Record<string, unknown>).op !== "string") {
      throw new ScenarioError(n + 1, 'missing "op"');
    }
    out.push({ line: n + 1, text: t, obj: obj as Record<string, unknown> });
  }
  return out;
}

const CONSTANTS: Record<string, bigint> = {};
for (const [k, v] of [...Object.entries(abi), ...Object.entries(grant), ...Object.entries(memory)]) {
  if (typeof v === "number") CONSTANTS[k] = BigInt(v);
  if (typeof v === "bigint") CONSTANTS[k] = v;
}
for (const [k, v] of Object.entries(abi.MMUEXT)) CONSTANTS[k] = BigInt(v);

const HEX = /^0x[0-9a-f]{1,16}$/i;

/** An integer from a JSON number, a numeric string, or Xen constant names joined by `|`. */
export function toBig(v: unknown, what: string, line: number): bigint {
  if (typeof v === "bigint") return v;
  if (typeof v === "number") {
    if (!Number.isInteger(v)) throw new ScenarioError(line, `${what} must be an integer, got ${v}`);
    return BigInt(v);
  }
  if (typeof v === "string") {
    if (HEX.test(v)) return BigInt(v); // the common case: one plain hex number
    let acc = 0n;
    for (const part of v.split("|").map((s) => s.trim())) {
      if (/^-?0x[0-9a-f]+$/i.test(part)) acc |= part.startsWith("-") ? -BigInt(part.slice(1)) : BigInt(part);
      else if (/^-?\d+$/.test(part)) acc |= BigInt(part);
      else if (part in CONSTANTS) acc |= CONSTANTS[part];
      else throw new ScenarioError(line, `${what}: '${part}' is not a number or a known Xen constant`);
    }
    return acc;
  }
  throw new ScenarioError(line, `${what} must be a number or a string, got ${JSON.stringify(v)}`);
}

export function toNum(v: unknown, what: string, line: number): number {
  if (typeof v === "number" && Number.isSafeInteger(v)) return v;
  const b = toBig(v, what, line);
  if (b > BigInt(Number.MAX_SAFE_INTEGER) || b < -BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new ScenarioError(line, `${what} is too large`);
  }
  return Number(b);
}
