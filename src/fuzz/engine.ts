/**
 * The fuzz engine: episodes of hostile actions against a fresh world, checks
 * after every step, and — on a finding — shrinking with fast-check and a
 * scenario file that `pvmmu replay` reproduces.
 *
 * An episode: a new host and domains (src/fuzz/world.ts), then up to
 * `episodeSteps` actions from a seeded generator, each interpreted into one
 * scenario line and run through the scenario runner itself — so the finding's
 * file means exactly what ran. After every line: a thrown exception is a
 * finding; the local checks (src/fuzz/checks.ts) may raise a suspicion; a
 * suspicion, every `auditEvery`-th step and the episode's last step run the
 * full audit, whose first problem names the violated invariant.
 *
 * A finding's actions are cut after the step that revealed it, then shrunk
 * with fast-check's own shrinker for arrays (removing actions, moving their
 * numbers towards 0) while the replay still breaks the same invariant. The
 * result is rendered as a scenario: the world's lines, the calls, and an
 * `audit` line expecting ok right after the call that broke it.
 */

import fc from "fast-check";
import { Rng } from "../guest/workloads.js";
import { ScenarioError, type ScenarioLine } from "../scenario/parse.js";
import { ScenarioStepper } from "../scenario/run.js";
import type { BugClass } from "../xen/bugs.js";
import { ACTION_LEN, type Action, FuzzMemory, Interpreter, PARAM_MAX, randomAction } from "./actions.js";
import { LocalChecker } from "./checks.js";
import { Coverage } from "./coverage.js";
import { checkWorld, DEFAULT_WORLD, type WorldOptions, worldLines } from "./world.js";

export interface FuzzOptions {
  seed: number;
  /** Hypercalls (scenario lines run) in all. */
  steps: number;
  world?: Partial<WorldOptions>;
  /** Actions per episode before starting afresh. */
  episodeSteps?: number;
  /** Full audit every this many steps (and at each episode's end). */
  auditEvery?: number;
  /** Stop after this many findings. */
  maxFindings?: number;
  /** Replays fast-check's shrinker may try per finding. */
  shrinkBudget?: number;
  /** How to say where a finding came from (a comment line of its file). */
  origin?: string;
  /** Test-only: bugs injected into the hypervisor (src/xen/bugs.ts). */
  injectBugs?: readonly BugClass[];
  /** Called every few thousand steps with the steps done and findings so far. */
  onProgress?: (steps: number, findings: number) => void;
}

export interface Finding {
  /** The violated invariant: an auditor problem kind, or "exception". */
  kind: string;
  message: string;
  /** Everything the audit found at that point. */
  problems: string[];
  seed: number;
  episode: number;
  /** Actions (and hypercalls) of the episode up to the finding, and after shrinking. */
  originalSteps: number;
  shrunkSteps: number;
  shrinkTries: number;
  /** The scenario file's text. */
  scenario: string;
}

export interface FuzzResult {
  steps: number;
  episodes: number;
  /** Actions that named nothing that existed at the time (not run). */
  skipped: number;
  findings: Finding[];
  coverage: Coverage;
}

interface Detection {
  kind: string;
  message: string;
  problems: string[];
}

/** 32-bit mix of two numbers (seed streams for workers and episodes). */
export function mixSeed(a: number, b: number): number {
  let h = Math.imul(a ^ 0x5bd1e995, 0x9e3779b1) ^ Math.imul(b + 0x7f4a7c15, 0x85ebca6b);
  h ^= h >>> 15;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 13)) >>> 0;
}

/** One episode's world, run action by action. */
class Episode {
  readonly stepper: ScenarioStepper;
  readonly interp: Interpreter;
  readonly checker: LocalChecker;
  readonly worldCount: number;

  constructor(
    world: WorldOptions,
    inject: readonly BugClass[] | undefined,
    readonly coverage?: Coverage,
  ) {
    const lines: ScenarioLine[] = worldLines(world).map((obj, i) => ({ line: i + 1, text: "", obj }));
    this.stepper = new ScenarioStepper(lines, inject ? { injectBugs: inject } : {});
    while (this.stepper.step());
    this.worldCount = lines.length;
    this.interp = new Interpreter(world, new FuzzMemory());
    this.checker = new LocalChecker(this.stepper.host);
    this.checker.reset();
  }

  /** Lines run by the last `apply`. */
  ran = 0;

  /** Run one action's lines, checking after each; the first detection, if any. */
  apply(a: Action, auditNow: boolean): Detection | undefined {
    const h = this.stepper.host;
    const lines = this.interp.lines(a, h);
    this.ran = 0;
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      let actual: unknown;
      try {
        actual = this.stepper.run(line).actual;
      } catch (e) {
        if (e instanceof ScenarioError) continue;
        throw e;
      }
      this.ran++;
      this.interp.note(line, actual);
      this.coverage?.record(line, actual);
      const ex = (actual as { exception?: string } | undefined)?.exception;
      if (ex !== undefined)
        return { kind: "exception", message: `${String(line.op)} threw: ${ex}`, problems: [] };
      if (this.checker.suspicious() || (auditNow && i === lines.length - 1)) {
        const r = h.audit();
        if (!r.ok) {
          const first = r.problems[0];
          return { kind: first.kind, message: first.message, problems: r.problems.map((p) => p.message) };
        }
      }
    }
    return undefined;
  }

  /** The lines run so far after the world's, as scenario objects. */
  ranLines(): Record<string, unknown>[] {
    return this.stepper.lines.slice(this.worldCount).map((l) => l.obj);
  }
}

function resolve(o: FuzzOptions): Required<
  Omit<FuzzOptions, "injectBugs" | "onProgress" | "world" | "origin">
> & {
  world: WorldOptions;
} {
  const world = { ...DEFAULT_WORLD, ...o.world };
  checkWorld(world);
  const r = {
    seed: o.seed >>> 0,
    steps: o.steps,
    world,
    episodeSteps: o.episodeSteps ?? 400,
    auditEvery: o.auditEvery ?? 100,
    maxFindings: o.maxFindings ?? 1,
    shrinkBudget: o.shrinkBudget ?? 4000,
  };
  for (const [k, v] of Object.entries(r)) {
    if (k !== "world" && k !== "seed" && (!Number.isInteger(v) || (v as number) < 1)) {
      throw new RangeError(`${k} must be a whole number ≥ 1, got ${String(v)}`);
    }
  }
  return r;
}

/**
 * Run the fuzzer in this thread. Deterministic: the same options give the
 * same steps, findings and scenario files, byte for byte.
 */
export function fuzz(opts: FuzzOptions): FuzzResult {
  const o = resolve(opts);
  const coverage = new Coverage();
  const findings: Finding[] = [];
  let steps = 0;
  let skipped = 0;
  let episodes = 0;
  let nextReport = 4096;
  while (steps < o.steps && findings.length < o.maxFindings) {
    const episode = episodes++;
    const rng = new Rng(mixSeed(o.seed, episode));
    const run = new Episode(o.world, opts.injectBugs, coverage);
    const actions: Action[] = [];
    for (let i = 0; i < o.episodeSteps && steps < o.steps; i++) {
      const a = randomAction(rng);
      actions.push(a);
      const last = i === o.episodeSteps - 1 || steps + 1 === o.steps;
      const out = run.apply(a, last || (i + 1) % o.auditEvery === 0);
      if (run.ran === 0) skipped++;
      steps += run.ran;
      if (steps >= nextReport) {
        nextReport += 4096;
        opts.onProgress?.(steps, findings.length);
      }
      if (out) {
        const origin =
          opts.origin ??
          `pvmmu fuzz --seed ${o.seed} --policy ${o.world.policy} --domains ${o.world.domains}`;
        findings.push(shrinkFinding(o, opts.injectBugs, actions, out, episode, origin));
        break;
      }
    }
  }
  opts.onProgress?.(steps, findings.length);
  return { steps, episodes, skipped, findings, coverage };
}

/** Replay `actions` on a fresh world; the first detection (`auditAll`: audit after every step). */
function replay(
  world: WorldOptions,
  inject: readonly BugClass[] | undefined,
  actions: Action[],
  auditAll: boolean,
): { det: Detection | undefined; at: number; run: Episode } {
  const run = new Episode(world, inject);
  for (let i = 0; i < actions.length; i++) {
    const out = run.apply(actions[i], auditAll || i === actions.length - 1);
    if (out) return { det: out, at: i, run };
  }
  return { det: undefined, at: -1, run };
}

const actionArb = fc.array(fc.nat({ max: PARAM_MAX }), { minLength: ACTION_LEN, maxLength: ACTION_LEN });

function shrinkFinding(
  o: ReturnType<typeof resolve>,
  inject: readonly BugClass[] | undefined,
  actions: Action[],
  det: Detection,
  episode: number,
  origin: string,
): Finding {
  const fails = (cand: Action[]) => {
    if (cand.length === 0) return false;
    const r = replay(o.world, inject, cand, false);
    return r.det !== undefined && r.det.kind === det.kind;
  };
  // fast-check's shrinker for arrays, driven directly: take the first smaller candidate that
  // still fails and shrink from there, until none does or the budget is spent. First the
  // sequence alone (items are positions that never shrink: only removals), then the actions'
  // numbers too (towards the plainest choices).
  let tries = 0;
  const shrinkWith = <T>(
    arb: fc.Arbitrary<T[]>,
    start: T[],
    test: (v: T[]) => boolean,
    budget: number,
  ): T[] => {
    let cur = start;
    let ctx: unknown;
    let spent = 0;
    let progress = true;
    while (progress && spent < budget) {
      progress = false;
      for (const cand of arb.shrink(cur, ctx)) {
        if (++spent > budget) break;
        if (test(cand.value)) {
          cur = cand.value;
          ctx = cand.context;
          progress = true;
          break;
        }
      }
    }
    tries += Math.min(spent, budget);
    return cur;
  };
  const positions = actions.map((_, i) => i);
  const kept = shrinkWith(
    fc.array(fc.noShrink(fc.nat({ max: actions.length })), { maxLength: actions.length }),
    positions,
    (ps: number[]) => fails(ps.map((i) => actions[i])),
    Math.ceil(o.shrinkBudget * 0.75),
  );
  const cur = shrinkWith(
    fc.array(actionArb, { maxLength: kept.length }),
    kept.map((i) => actions[i]),
    fails,
    o.shrinkBudget - tries,
  );
  // Render: replay with the audit after every step, cut right after the first broken invariant.
  const r = replay(o.world, inject, cur, true);
  const final = r.det ?? det;
  const calls = r.run.ranLines();
  const head = [
    `# pvmmu fuzz finding — invariant violated: ${final.kind}`,
    `# ${final.message}`,
    ...final.problems.slice(1, 6).map((p) => `#   also: ${p}`),
    `# found by ${origin} (episode ${episode}), shrunk from ${actions.length} to ${calls.length} calls`,
  ];
  const body = calls.map((c) => JSON.stringify(c));
  if (final.kind === "exception") body.splice(body.length - 1, 0, `# the next line throws: ${final.message}`);
  else body.push(JSON.stringify({ op: "audit", expect: { ok: true } }));
  const text = [...head, ...worldLines(o.world).map((l) => JSON.stringify(l)), ...body].join("\n");
  return {
    kind: final.kind,
    message: final.message,
    problems: final.problems,
    seed: o.seed,
    episode,
    originalSteps: actions.length,
    shrunkSteps: calls.length,
    shrinkTries: tries,
    scenario: `${text}\n`,
  };
}
