/** Malformed images get an ImageError (a clear message), never another exception. */

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { ImageError, MemoryImage } from "../../src/dump/image.js";
import { infoTlb } from "../../src/dump/views.js";

const dir = mkdtempSync(join(tmpdir(), "pvmmu-img-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function openCleanly(bytes: Uint8Array): void {
  const f = join(dir, "img");
  writeFileSync(f, bytes);
  let img: MemoryImage | undefined;
  try {
    img = MemoryImage.open(f);
  } catch (e) {
    expect(e).toBeInstanceOf(ImageError);
    expect((e as Error).message).toMatch(/image '.*'/);
    return;
  }
  try {
    // Whatever opened must be readable: walk from the first frame as if it were CR3.
    expect(typeof infoTlb(img.memory(), 0, 4)).toBe("string");
  } finally {
    img.close();
  }
}

function elfHeader(phnum: number): Uint8Array {
  const h = Buffer.alloc(64);
  h.writeUInt32BE(0x7f454c46, 0);
  h[4] = 2;
  h[5] = 1;
  h.writeUInt16LE(4, 16);
  h.writeBigUInt64LE(64n, 32);
  h.writeUInt16LE(56, 54);
  h.writeUInt16LE(phnum, 56);
  return h;
}

describe("image input", () => {
  it("random bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 200 }), (b) => openCleanly(b)),
      { numRuns: 200, seed: 5 },
    );
  });

  it("an ELF core header with random program headers", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 4 }),
        fc.uint8Array({ minLength: 0, maxLength: 4 * 56 }),
        (n, ph) => {
          const head = elfHeader(n);
          const b = new Uint8Array(head.length + ph.length);
          b.set(head);
          b.set(ph, head.length);
          openCleanly(b);
        },
      ),
      { numRuns: 300, seed: 6 },
    );
  });
});
