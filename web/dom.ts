/** Small DOM helpers for the explorer's views. */

type Attrs = Record<string, string | number | boolean | undefined>;

/** An element with attributes (`class`, `data-*`, …) and children (strings become text). */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Node | string | null | undefined)[]
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (!e) throw new Error(`no #${id} in the page`);
  return e as T;
}

export const hex = (n: number) => `0x${n.toString(16)}`;

/** A 16-digit hex address without leading zeros beyond 4 digits, grouped for reading. */
export function shortVa(va: string): string {
  return `0x${va.replace(/^0+(?=.{4})/, "")}`;
}

export function bytesText(n: number): string {
  if (n >= 2 ** 30 && n % 2 ** 30 === 0) return `${n / 2 ** 30} GiB`;
  if (n >= 2 ** 20 && n % 2 ** 20 === 0) return `${n / 2 ** 20} MiB`;
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024} KiB`;
  return `${n} B`;
}
