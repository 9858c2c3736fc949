/**
 * Stepping through a scenario (or a fuzz finding, which is one) forward and back, for the
 * explorer. Wraps `ScenarioStepper`: forward runs the next lines; back replays the file from
 * a fresh host up to the line asked for (runs are deterministic, so the state is the same as
 * it was). Each move reports the last line's result against its expectation and what that
 * line changed (`diffStates` of the state before and after it).
 *
 * On opening, the whole file is run once so every line's outcome is known up front: a
 * failing expectation is marked at its line before anyone steps to it.
 */

import type { LineStatus, StateDiff, StepView } from "../../web/protocol.js";
import { ScenarioError, type ScenarioLine } from "../scenario/parse.js";
import { type LineResult, ScenarioStepper } from "../scenario/run.js";
import type { Host } from "../xen/host.js";
import { captureState, diffStates, tlbContents } from "./diff.js";

export class ScenarioSession {
  /** The lines that run (a leading `host` line configures the host and is not a step). */
  readonly lines: ScenarioLine[];
  private stepper: ScenarioStepper;
  private readonly status: LineStatus[];
  private last: StepView["last"];
  private diff: StateDiff | undefined;
  /** Index of a line that cannot run (a reference found bad while running). */
  private blocked: number | undefined;
  private blockedMessage = "";

  /** Throws ScenarioError for a malformed file. */
  constructor(
    readonly text: string,
    readonly name: string,
  ) {
    this.stepper = new ScenarioStepper(text);
    const all = this.stepper.lines;
    this.lines = all[0]?.obj.op === "host" ? all.slice(1) : all.slice();
    this.status = this.lines.map(() => "pending");
    // Run it all once: every line's outcome is known from the start.
    while (this.position < this.lines.length && this.blocked === undefined) this.runOne();
    this.stepper = new ScenarioStepper(text);
    this.last = undefined;
    this.diff = undefined;
  }

  get host(): Host {
    return this.stepper.host;
  }

  /** Lines run so far. */
  get position(): number {
    return this.stepper.results.length;
  }

  /** Why a line cannot run (ScenarioError's message), if one cannot. */
  get blockedError(): string | undefined {
    return this.blocked === undefined ? undefined : this.blockedMessage;
  }

  /** The furthest position reachable (the end, or just before a line that cannot run). */
  get end(): number {
    return this.blocked ?? this.lines.length;
  }

  private record(r: LineResult): void {
    const i = this.lines.findIndex((l) => l.line === r.line);
    if (i >= 0) this.status[i] = r.ok ? "ok" : "fail";
    this.last = { line: r.line, op: r.op, ok: r.ok, expected: r.expected, actual: r.actual };
  }

  /** Run the next line (if it throws, the line is marked and stepping stops there). */
  private runOne(): void {
    const i = this.stepper.results.length;
    try {
      const r = this.stepper.step();
      if (r) this.record(r);
    } catch (e) {
      if (!(e instanceof ScenarioError)) throw e;
      this.blocked = i;
      this.blockedMessage = e.message;
      this.status[i] = "error";
      this.last = { line: this.lines[i].line, op: String(this.lines[i].obj.op), ok: false, error: e.message };
    }
  }

  /** Move to `position` (lines run); returns the view there. Throws RangeError for a bad position. */
  goto(position: number): StepView {
    if (!Number.isInteger(position) || position < 0 || position > this.lines.length) {
      throw new RangeError(`position must be a whole number from 0 to ${this.lines.length}, got ${position}`);
    }
    const target = Math.min(position, this.end);
    if (target === this.stepper.results.length) return this.view();
    if (target < this.stepper.results.length) this.stepper = new ScenarioStepper(this.text);
    while (this.stepper.results.length < target - 1) this.runOne();
    this.diff = undefined;
    this.last = undefined;
    if (target > 0) {
      const before = captureState(this.host);
      this.runOne();
      this.diff = diffStates(before, captureState(this.host));
    }
    return this.view();
  }

  /** Where the stepper is. */
  view(): StepView {
    const at = this.stepper.results.length;
    const a = this.host.audit();
    const v: StepView = {
      position: at,
      total: this.lines.length,
      lines: this.lines.map((l, i) => ({
        line: l.line,
        text: l.text,
        op: String(l.obj.op),
        status: this.status[i],
      })),
      tlb: tlbContents(this.host),
      audit: { ok: a.ok, problems: a.problems.map((p) => p.message) },
    };
    if (at > 0 && !this.last) {
      const r = this.stepper.results[at - 1];
      this.last = { line: r.line, op: r.op, ok: r.ok, expected: r.expected, actual: r.actual };
    }
    if (this.last) v.last = this.last;
    if (this.diff) v.diff = this.diff;
    if (this.blocked !== undefined) {
      v.blockedAt = this.lines[this.blocked].line;
      if (at === this.blocked)
        v.last = {
          line: v.blockedAt,
          op: String(this.lines[this.blocked].obj.op),
          ok: false,
          error: this.blockedMessage,
        };
    }
    return v;
  }
}
