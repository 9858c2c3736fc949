/**
 * Known bug classes that tests can inject into the hypervisor, to prove that
 * the fuzzer (src/fuzz/) finds what it is meant to find. Each is a class of
 * bug from Xen's history. Test-only: the CLI and scenario files never set
 * them; only code that constructs a Host with `injectBugs` does.
 *
 *  - fast-path-rw:        mod_lN_entry's fast path accepts a change of RW (XSA-182's class:
 *                         a flag change applied without revalidating the entry);
 *  - linear-chain:        linear page tables not limited to one hop (XSA-240's class);
 *  - no-type-flush:       no TLB flush when a frame's type changes (a stale writable
 *                         translation of a frame that became a page table survives);
 *  - level-confusion:     an L2 accepted where an L1 belongs (a type reference of the wrong level);
 *  - grant-unmap-unchecked: a grant unmap that does not check that the PTE still holds the
 *                         granted frame (it clears whatever is there, and drops the grant's refs);
 *  - validation-leak:     a failed validation does not release the references its earlier
 *                         entries took.
 */

export const BUG_CLASSES = [
  "fast-path-rw",
  "linear-chain",
  "no-type-flush",
  "level-confusion",
  "grant-unmap-unchecked",
  "validation-leak",
] as const;

export type BugClass = (typeof BUG_CLASSES)[number];

/** The injected bugs of one host, as booleans read on the paths they change. */
export class InjectedBugs {
  readonly fastPathRw: boolean;
  readonly linearChain: boolean;
  readonly noTypeFlush: boolean;
  readonly levelConfusion: boolean;
  readonly grantUnmapUnchecked: boolean;
  readonly validationLeak: boolean;

  constructor(bugs: readonly BugClass[] = []) {
    for (const b of bugs) {
      if (!(BUG_CLASSES as readonly string[]).includes(b)) throw new RangeError(`unknown bug class '${b}'`);
    }
    const has = (b: BugClass) => bugs.includes(b);
    this.fastPathRw = has("fast-path-rw");
    this.linearChain = has("linear-chain");
    this.noTypeFlush = has("no-type-flush");
    this.levelConfusion = has("level-confusion");
    this.grantUnmapUnchecked = has("grant-unmap-unchecked");
    this.validationLeak = has("validation-leak");
  }
}
