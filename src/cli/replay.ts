/**
 * `pvmmu replay FILE...`: run scenario files; exit 0 only if every
 * expectation holds and the final audit is clean, 1 if any does not, 2 for a
 * file that cannot be read or is malformed.
 */

import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { ScenarioError } from "../scenario/parse.js";
import { runScenario, type ScenarioResult } from "../scenario/run.js";
import { UsageError } from "./errors.js";

const show = (v: unknown) =>
  JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? `0x${x.toString(16)}` : x));

export function registerReplay(
  program: Command,
  out: (s: string) => void,
  setExit: (code: number) => void,
): void {
  program
    .command("replay")
    .description("run scenario files (JSON Lines, see docs/scenarios.md) and check every expectation")
    .argument("<files...>", "scenario files")
    .option("--json", "print results as JSON")
    .action((files: string[], o: { json?: boolean }) => {
      const results: { file: string; result: ScenarioResult }[] = [];
      for (const file of files) {
        let text: string;
        try {
          text = readFileSync(file, "utf8");
        } catch (e) {
          throw new UsageError(`cannot read scenario '${file}': ${(e as NodeJS.ErrnoException).code ?? e}`);
        }
        try {
          results.push({ file, result: runScenario(text) });
        } catch (e) {
          if (e instanceof ScenarioError) throw new UsageError(`${file}: ${e.message}`);
          throw e;
        }
      }
      const allOk = results.every((r) => r.result.ok);
      if (o.json) {
        out(
          `${show(
            results.map(({ file, result }) => ({
              file,
              ok: result.ok,
              lines: result.lines.length,
              failures: result.failures,
              audit: result.audit,
            })),
          )}\n`,
        );
      } else {
        for (const { file, result } of results) {
          out(`${result.ok ? "PASS" : "FAIL"} ${file} (${result.lines.length} lines)\n`);
          for (const f of result.failures) {
            out(`  ${file}:${f.line}: ${f.op}: expected ${show(f.expected)}, got ${show(f.actual)}\n`);
          }
          if (!result.audit.ok) for (const p of result.audit.problems) out(`  ${file}: audit: ${p}\n`);
        }
      }
      setExit(allOk ? 0 : 1);
    });
}
