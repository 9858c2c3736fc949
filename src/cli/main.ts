/**
 * The `pvmmu` command. Every error in what was asked for (a flag, a file, an
 * address) is reported in one line on stderr with exit code 2; nothing is
 * written on failure.
 */

import { Command, CommanderError } from "commander";
import { HypercallFailed } from "../guest/hypercalls.js";
import { GuestError } from "../guest/kernel.js";
import { AddressSyntaxError } from "../x86/address.js";
import { registerCompare } from "./compare.js";
import { registerDump } from "./dump.js";
import { UsageError } from "./errors.js";
import { registerFuzz } from "./fuzz.js";
import { MigrationFailed, registerMigrate } from "./migrate.js";
import { registerReplay } from "./replay.js";
import { registerRun } from "./run.js";
import { registerServe } from "./serve.js";
import { runTour } from "./tour.js";

export function buildProgram(
  out: (s: string) => void = (s) => process.stdout.write(s),
  setExit: (code: number) => void = () => {},
): Command {
  const program = new Command();
  program
    .name("pvmmu")
    .description(
      "An executable model of Xen-style paravirtualized x86-64 memory management:\n" +
        "the x86-64 MMU (4- and 5-level paging, TLB), Xen's PV MMU (reference counts, validation,\n" +
        "pinning, the MMU hypercalls), scenario replay, and tools for real memory dumps.",
    )
    .version("0.1.0")
    .showHelpAfterError("(run with --help for usage)")
    .exitOverride();

  program
    .command("tour")
    .description("a short tour of what pvmmu does: builds page tables, walks them, shows the TLB and a dump")
    .option("--json", "print JSON instead of text")
    .action(async (o: { json?: boolean }) => runTour(out, o.json ?? false));

  registerDump(program, out);
  registerReplay(program, out, setExit);
  registerRun(program, out, setExit);
  registerCompare(program, out, setExit);
  registerMigrate(program, out, setExit);
  registerFuzz(program, out, setExit);
  registerServe(program, out);
  for (const c of program.commands) {
    c.exitOverride();
    for (const s of c.commands) s.exitOverride();
  }
  return program;
}

export interface Io {
  out: (s: string) => void;
  err: (s: string) => void;
}

const processIo: Io = { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) };

/** Run the CLI on `argv` (without the node and script names); returns the exit code. */
export async function main(argv: string[], io: Io = processIo): Promise<number> {
  let exitCode = 0;
  const program = buildProgram(io.out, (c) => {
    exitCode = c;
  });
  program.configureOutput({ writeOut: io.out, writeErr: io.err });
  for (const c of program.commands) {
    c.configureOutput({ writeOut: io.out, writeErr: io.err });
    for (const sub of c.commands) sub.configureOutput({ writeOut: io.out, writeErr: io.err });
  }
  try {
    await program.parseAsync(argv, { from: "user" });
    return exitCode;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Help and version exit 0; usage errors (already printed by commander) exit 2.
      return e.exitCode === 0 ? 0 : 2;
    }
    if (e instanceof UsageError || e instanceof AddressSyntaxError || e instanceof RangeError) {
      io.err(`pvmmu: ${e.message}\n`);
      return 2;
    }
    if (e instanceof MigrationFailed) {
      io.err(`pvmmu: migration failed: ${e.message}\n`);
      return 1;
    }
    if (e instanceof GuestError || e instanceof HypercallFailed) {
      // The guest kernel panicked (or a hypercall it relied on failed): an outcome, not a usage error.
      io.err(`pvmmu: guest kernel panic: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
}
