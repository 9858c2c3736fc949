/**
 * The lock seed 001 puts around machine frame numbers: a write-preferring
 * reader/writer lock. Guest code that holds an MFN for a while (a queued
 * page-table update, a foreign mapping being set up, a cached frame number)
 * takes the read side for as long as it holds it; the suspend path takes the
 * write side, so it waits for every holder to finish, and once it waits no
 * new reader gets in (write-preferring: a stream of readers cannot starve the
 * suspend). After resume the writer releases and the readers re-derive their
 * MFNs from the new P2M.
 *
 * Readers may hold the lock several times at once (distinct holders, not
 * recursion), as the seed asks; each acquire needs its release.
 */

export class RwLock {
  private readers = 0;
  private writer = false;
  private readonly waitingWriters: (() => void)[] = [];
  private readonly waitingReaders: (() => void)[] = [];

  get readersHolding(): number {
    return this.readers;
  }

  get writeHeld(): boolean {
    return this.writer;
  }

  /** Take the read side; waits while a writer holds or waits for the lock. */
  acquireRead(): Promise<void> {
    if (!this.writer && this.waitingWriters.length === 0) {
      this.readers++;
      return Promise.resolve();
    }
    return new Promise((resolve) =>
      this.waitingReaders.push(() => {
        this.readers++;
        resolve();
      }),
    );
  }

  releaseRead(): void {
    if (this.readers === 0) throw new Error("releaseRead without a reader");
    this.readers--;
    this.wake();
  }

  /** Take the write side; waits for every reader (and writer) to leave. */
  acquireWrite(): Promise<void> {
    if (!this.writer && this.readers === 0) {
      this.writer = true;
      return Promise.resolve();
    }
    return new Promise((resolve) =>
      this.waitingWriters.push(() => {
        this.writer = true;
        resolve();
      }),
    );
  }

  releaseWrite(): void {
    if (!this.writer) throw new Error("releaseWrite without the writer");
    this.writer = false;
    this.wake();
  }

  private wake(): void {
    if (this.writer) return;
    if (this.waitingWriters.length > 0) {
      if (this.readers === 0) this.waitingWriters.shift()!();
      return;
    }
    while (this.waitingReaders.length > 0) this.waitingReaders.shift()!();
  }
}
