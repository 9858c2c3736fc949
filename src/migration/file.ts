/**
 * Saved images as files.
 *
 * `FileSink` writes a stream to a file with direct I/O (O_DIRECT) where the file system allows
 * it, as QEMU's `direct-io` migration to a file does: the image goes from two staging buffers
 * straight to the device, without filling the page cache with a copy of the guest's memory —
 * a 64 GiB save must not evict everything else, and on this project's VM page-cache pages are
 * brought into being at a fraction of the disk's speed. One buffer is written (by the thread
 * pool) while the saver fills the other. Where O_DIRECT is refused (tmpfs, some network file
 * systems) it writes ordinary buffered I/O; `direct` says which.
 *
 * `FileChunks` reads an image back for `restoreStream` in chunks of one reused buffer (with
 * direct I/O too, where allowed), so
 * restoring a 4 GiB image does not bring 4 GiB of fresh read buffers into being besides the
 * guest's own frames. The source says so (`reusesBuffers`), and the restorer has its stream
 * reader copy any partial record out of a chunk before the next one is read.
 */

import {
  closeSync,
  constants,
  ftruncateSync,
  openSync,
  read as readCb,
  readSync,
  statSync,
  write as writeCb,
  writeSync,
} from "node:fs";
import type { StreamSink } from "./save.js";

/** Direct I/O's unit: buffer addresses, lengths and file offsets are multiples of it. */
const BLOCK = 4096;
/** Bytes per staging buffer. */
const STAGE_BYTES = 8 * 2 ** 20;

/** `write(2)` at `pos` until all of `b` is written, on the thread pool. */
function writeAllAt(fd: number, b: Uint8Array, pos: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (done: number) => {
      if (done === b.length) return resolve();
      writeCb(fd, b, done, b.length - done, pos + done, (err, n) => {
        if (err) reject(err);
        else if (n === 0) reject(new Error(`write to the image made no progress at byte ${pos + done}`));
        else step(done + n);
      });
    };
    step(0);
  });
}

/**
 * A BLOCK-aligned window of `bytes` in a fresh buffer, found by trying a direct write (or read)
 * of one block at offset 0 of `fd` from each 8-byte offset (JavaScript cannot ask for an aligned
 * allocation, and an unaligned direct write fails with EINVAL); null if none is accepted.
 */
function alignedWindow(fd: number, bytes: number, io: "write" | "read" = "write"): Uint8Array | null {
  const raw = new Uint8Array(bytes + BLOCK);
  for (let off = 0; off < BLOCK; off += 8) {
    try {
      if (io === "write") writeSync(fd, raw, off, BLOCK, 0);
      else readSync(fd, raw, off, BLOCK, 0);
      return raw.subarray(off, off + bytes);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EINVAL") throw e;
    }
  }
  return null;
}

/** Where `FileSink` writes, and how. */
export interface FileSinkOptions {
  /** Try direct I/O (default true); false: buffered writes. */
  direct?: boolean;
}

/**
 * A stream written to a file (created or truncated). `close()` once the save succeeded (it
 * writes what is staged); `discard()` on failure (closes without finishing; remove the file).
 */
export class FileSink implements StreamSink {
  bytes = 0;
  /** Direct I/O in use. */
  readonly direct: boolean;
  private fd: number;
  private readonly stage: Uint8Array[] = [];
  private cur = 0;
  private fill = 0;
  /** File offset of the current staging buffer. */
  private pos = 0;
  private pending: Promise<void> | null = null;
  private closed = false;

  constructor(
    readonly path: string,
    o: FileSinkOptions = {},
  ) {
    const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC;
    let fd = -1;
    if ((o.direct ?? true) && constants.O_DIRECT !== undefined) {
      try {
        fd = openSync(path, flags | constants.O_DIRECT, 0o644);
        for (let i = 0; i < 2; i++) {
          const w = alignedWindow(fd, STAGE_BYTES);
          if (w === null) throw new Error("no aligned buffer");
          this.stage.push(w);
        }
      } catch (e) {
        if (fd >= 0) closeSync(fd);
        fd = -1;
        this.stage.length = 0;
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== undefined && code !== "EINVAL" && code !== "EOPNOTSUPP") throw e;
      }
    }
    this.direct = fd >= 0;
    this.fd = this.direct ? fd : openSync(path, flags, 0o644);
  }

  write(chunks: Uint8Array[]): void | Promise<void> {
    if (this.closed) throw new Error(`the image '${this.path}' is already closed`);
    if (!this.direct) {
      for (const c of chunks) {
        for (let at = 0; at < c.length; ) at += writeSync(this.fd, c, at);
        this.bytes += c.length;
      }
      return;
    }
    for (let ci = 0; ci < chunks.length; ci++) {
      const c = chunks[ci];
      for (let at = 0; at < c.length; ) {
        const buf = this.stage[this.cur];
        const n = Math.min(c.length - at, buf.length - this.fill);
        buf.set(c.subarray(at, at + n), this.fill);
        this.fill += n;
        at += n;
        this.bytes += n;
        if (this.fill === buf.length) {
          // Full: write it while the other buffer fills — once that one's own write is done.
          if (this.pending !== null) return this.afterPending([c.subarray(at), ...chunks.slice(ci + 1)]);
          this.startWrite();
        }
      }
    }
  }

  /** Wait for the other buffer's write, start this one's, then stage `rest`. */
  private async afterPending(rest: Uint8Array[]): Promise<void> {
    await this.pending;
    this.pending = null;
    this.startWrite();
    await this.write(rest);
  }

  private startWrite(): void {
    const buf = this.stage[this.cur];
    this.pending = writeAllAt(this.fd, buf.subarray(0, this.fill), this.pos);
    this.pos += this.fill;
    this.cur ^= 1;
    this.fill = 0;
  }

  /** Write what is staged and close. With direct I/O the last block is padded, then cut off. */
  async close(): Promise<void> {
    if (this.closed) return;
    try {
      if (this.direct) {
        if (this.pending !== null) await this.pending;
        this.pending = null;
        if (this.fill > 0) {
          const buf = this.stage[this.cur];
          const padded = Math.ceil(this.fill / BLOCK) * BLOCK;
          buf.fill(0, this.fill, padded);
          await writeAllAt(this.fd, buf.subarray(0, padded), this.pos);
        }
        ftruncateSync(this.fd, this.bytes);
      }
    } finally {
      this.closed = true;
      closeSync(this.fd);
    }
  }

  /** Stop without finishing (a failed save): waits for a write under way, closes; the caller removes the file. */
  async discard(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.pending;
    } catch {
      // the save failed already; this write's error adds nothing
    }
    closeSync(this.fd);
  }
}

/** A chunk source that overwrites a chunk's memory when the next chunk is asked for. */
export interface ReusingSource {
  readonly reusesBuffers: true;
}

/**
 * Chunk buffers of a `FileChunks` read: one with the restorer, the others being read (at most;
 * a small file gets one more than it has chunks).
 */
const READ_BUFFERS = 8;

export class FileChunks implements AsyncIterable<Uint8Array>, ReusingSource {
  readonly reusesBuffers = true;
  /** Bytes in the file when it was opened (0 for a pipe or device: not known). */
  readonly size: number;
  /** A regular file: read at explicit offsets, directly where allowed. Else read in sequence. */
  private readonly regular: boolean;

  /** Throws Node's error (ENOENT, EACCES, …), or one with code EISDIR for a directory. */
  constructor(
    readonly path: string,
    private readonly chunkBytes = 16 * 2 ** 20,
  ) {
    const st = statSync(path);
    if (st.isDirectory()) {
      throw Object.assign(new Error(`'${path}' is a directory, not an image`), { code: "EISDIR" });
    }
    this.regular = st.isFile();
    this.size = this.regular ? st.size : 0;
  }

  /** The last iteration read with direct I/O (chunk sizes that are whole blocks, where allowed). */
  direct = false;

  /**
   * The chunks, each valid until the next is asked for. Up to `READ_BUFFERS` buffers take
   * turns: while the restorer works through one chunk, the thread pool reads the next ones into
   * the others, several at once from a regular file (a virtual disk reads faster with more than
   * one request queued: here 1.1–1.4× with two), one after another from a pipe or device.
   */
  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    let fd = -1;
    const bufs: Uint8Array[] = [];
    const count = this.regular
      ? Math.max(2, Math.min(READ_BUFFERS, Math.ceil(this.size / this.chunkBytes) + 1))
      : 2; // in sequence: one read at a time
    if (this.regular && this.chunkBytes % BLOCK === 0 && constants.O_DIRECT !== undefined) {
      // Direct reads, like the sink's writes: the image does not pass through the page cache.
      try {
        fd = openSync(this.path, constants.O_RDONLY | constants.O_DIRECT);
        for (let i = 0; i < count; i++) {
          const w = alignedWindow(fd, this.chunkBytes, "read");
          if (w !== null) bufs.push(w);
        }
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== "EINVAL" && code !== "EOPNOTSUPP") throw e;
      }
      if (bufs.length < count && fd >= 0) {
        closeSync(fd);
        fd = -1;
      }
    }
    this.direct = fd >= 0;
    if (fd < 0) {
      fd = openSync(this.path, "r");
      bufs.length = 0;
      for (let i = 0; i < count; i++) bufs.push(new Uint8Array(this.chunkBytes));
    }
    /** Descriptors to close at the end (a direct one given up at the end may still have reads on it). */
    const fds = [fd];
    const directFd = this.direct ? fd : -1;
    /** Fill `b` from `pos` (short only at the end of the file). */
    const fill = async (b: Uint8Array, pos: number): Promise<number> => {
      let n = 0;
      while (n < b.length) {
        let k: number;
        const used = fd;
        try {
          k = await readAt(used, b, n, this.regular ? pos + n : null);
        } catch (e) {
          // A direct read refused (a short read at the end left it unaligned): go on buffered.
          if (used !== directFd || (e as NodeJS.ErrnoException).code !== "EINVAL") throw e;
          if (fd === directFd) {
            fd = openSync(this.path, "r");
            fds.push(fd);
            this.direct = false;
          }
          continue;
        }
        if (k === 0) break;
        n += k;
      }
      return n;
    };
    // Chunk j is read into bufs[j % count]; reads of chunks j+1 … j+count-1 are under way while
    // chunk j is with the restorer (their buffers held chunks it is done with).
    const ahead: Promise<number>[] = [];
    let issued = 0;
    let ended = false;
    const issue = (): void => {
      while (!ended && ahead.length < count - 1) {
        const read = fill(bufs[issued % count], issued * this.chunkBytes);
        read.catch(() => 0); // a read that fails before its turn fails when its turn comes
        ahead.push(read);
        issued++;
      }
    };
    issue();
    try {
      for (let j = 0; ahead.length > 0; j++) {
        const n = await (ahead.shift() as Promise<number>);
        if (n < this.chunkBytes) ended = true;
        issue();
        if (n > 0) yield bufs[j % count].subarray(0, n);
        if (ended) break;
      }
    } finally {
      for (const r of ahead) await r.catch(() => 0);
      for (const f of fds) closeSync(f);
    }
  }
}

/** `read(2)` at `pos` (null: where the file is) into `b` from `at`, on the thread pool. */
function readAt(fd: number, b: Uint8Array, at: number, pos: number | null): Promise<number> {
  return new Promise((resolve, reject) =>
    readCb(fd, b, at, b.length - at, pos, (err, n) => (err ? reject(err) : resolve(n))),
  );
}
