/**
 * `pvmmu serve`: the web explorer. Opens scenario files and saved images (FILE…), a memory
 * dump (`--image FILE --cr3 ADDR [--la57]`), or attaches to a live run (`--attach HOST:PORT`,
 * a `pvmmu run … --publish HOST:PORT`), then serves the page (built into dist/web by
 * `npm run build`; nothing is fetched from the network) until interrupted. Everything is
 * opened and checked before the server starts: a bad file or flag is one line on stderr,
 * exit code 2.
 */

import { type Command, Option } from "commander";
import type { ImageFormat } from "../dump/image.js";
import { LiveRelay, parseHostPort } from "../web/live.js";
import { startServer } from "../web/server.js";
import { LiveSource, OpenError, openDump, openFile, type Source } from "../web/sources.js";
import { AddressSyntaxError, parseAddress } from "../x86/address.js";
import { UsageError } from "./errors.js";
import { parseSize } from "./run.js";

interface ServeFlags {
  port: string;
  host: string;
  image?: string;
  cr3?: string;
  la57?: boolean;
  format: ImageFormat | "auto";
  attach?: string;
  hostMemory?: string;
}

function parsePort(text: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) > 65535) {
    throw new UsageError(`--port: '${text}' is not a port (0 to 65535; 0: any free port)`);
  }
  return Number(text);
}

/** Open every input; on any failure close what was opened and throw UsageError. */
export async function openSources(files: string[], o: ServeFlags): Promise<Source[]> {
  const sources: Source[] = [];
  try {
    const hostMiB =
      o.hostMemory === undefined ? undefined : parseSize(o.hostMemory, "--host-memory") / 2 ** 20;
    if ((o.image === undefined) !== (o.cr3 === undefined)) {
      throw new UsageError("--image and --cr3 go together (a memory dump and the CR3 of its tables)");
    }
    if (o.la57 && o.image === undefined) throw new UsageError("--la57 needs --image and --cr3");
    let attach: ReturnType<typeof parseHostPort> | undefined;
    if (o.attach !== undefined) {
      try {
        attach = parseHostPort(o.attach, "--attach");
      } catch (e) {
        throw new UsageError((e as Error).message);
      }
    }
    if (files.length === 0 && o.image === undefined && attach === undefined) {
      throw new UsageError(
        "nothing to open: give scenario or saved-image FILEs, --image FILE --cr3 ADDR, or --attach HOST:PORT",
      );
    }
    for (const f of files) sources.push(await openFile(f, hostMiB));
    if (o.image !== undefined) {
      let cr3: bigint;
      try {
        cr3 = parseAddress(o.cr3!, "CR3");
      } catch (e) {
        if (e instanceof AddressSyntaxError) throw new UsageError(e.message);
        throw e;
      }
      sources.push(openDump(o.image, cr3, o.la57 ? 5 : 4, o.format));
    }
    if (attach) {
      const relay = new LiveRelay(attach);
      relay.start();
      sources.push(new LiveSource(relay.name, relay));
    }
    return sources;
  } catch (e) {
    for (const s of sources) s.close();
    if (e instanceof OpenError) throw new UsageError(e.message);
    throw e;
  }
}

export function registerServe(program: Command, out: (s: string) => void): void {
  program
    .command("serve")
    .description(
      "the web explorer: frame map, page-table tree, frame inspector, scenario stepping, live charts",
    )
    .argument("[files...]", "scenario files (.jsonl, fuzz findings too) and saved images (pvmmu save)")
    .option("--port <n>", "port to listen on (0: any free port)", "7700")
    .option("--host <addr>", "address to listen on", "127.0.0.1")
    .option("--image <file>", "a physical memory dump (raw or ELF core) to explore, with --cr3")
    .option("--cr3 <addr>", "physical address of the dump's top-level page table (hex)")
    .option("--la57", "the dump uses 5-level paging")
    .addOption(
      new Option("--format <fmt>", "dump image format").choices(["auto", "raw", "elf"]).default("auto"),
    )
    .option("--attach <addr>", "HOST:PORT of a `pvmmu run … --publish HOST:PORT` to chart live")
    .option(
      "--host-memory <size>",
      "memory of the host a saved image is restored onto (default: guest + 25%)",
    )
    .action(async (files: string[], o: ServeFlags) => {
      const port = parsePort(o.port);
      const sources = await openSources(files, o);
      let server: Awaited<ReturnType<typeof startServer>>;
      try {
        server = await startServer({ sources, host: o.host, port });
      } catch (e) {
        for (const s of sources) s.close();
        throw e;
      }
      out(
        `pvmmu explorer: ${server.url} (${sources.map((s) => `${s.kind} ${s.name}`).join(", ")}); Ctrl-C stops it\n`,
      );
      await new Promise<void>((done) => {
        const stop = () => {
          process.off("SIGINT", stop);
          process.off("SIGTERM", stop);
          server.close().then(done, done);
        };
        process.on("SIGINT", stop);
        process.on("SIGTERM", stop);
      });
    });
}
