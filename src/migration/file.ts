/**
 * A saved image read back from a file in chunks, for `restoreStream`: every chunk is read into
 * the same buffer, so restoring a 4 GiB image does not bring 4 GiB of fresh read buffers into
 * being besides the guest's own frames. The source says so (`reusesBuffers`), and the restorer
 * has its stream reader copy any partial record out of a chunk before the next one is read.
 */

import { closeSync, openSync, readSync, statSync } from "node:fs";

/** A chunk source that overwrites a chunk's memory when the next chunk is asked for. */
export interface ReusingSource {
  readonly reusesBuffers: true;
}

export class FileChunks implements Iterable<Uint8Array>, ReusingSource {
  readonly reusesBuffers = true;
  /** Bytes in the file when it was opened. */
  readonly size: number;

  /** Throws Node's error (ENOENT, EISDIR, …) if `path` is not a readable file. */
  constructor(
    readonly path: string,
    private readonly chunkBytes = 16 * 2 ** 20,
  ) {
    const st = statSync(path);
    if (!st.isFile()) {
      throw Object.assign(new Error(`'${path}' is not a file`), {
        code: st.isDirectory() ? "EISDIR" : "EINVAL",
      });
    }
    this.size = st.size;
  }

  *[Symbol.iterator](): Generator<Uint8Array> {
    const fd = openSync(this.path, "r");
    try {
      const buf = new Uint8Array(this.chunkBytes);
      for (;;) {
        let n = 0;
        while (n < buf.length) {
          const k = readSync(fd, buf, n, buf.length - n, null);
          if (k === 0) break;
          n += k;
        }
        if (n > 0) yield buf.subarray(0, n);
        if (n < buf.length) return;
      }
    } finally {
      closeSync(fd);
    }
  }
}
