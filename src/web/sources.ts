/**
 * What the explorer opens, each behind one interface (`Source`):
 *  - a scenario file (or a fuzz finding): a host stepped line by line (`ScenarioSession`);
 *  - a saved image (a Xen migration stream from `pvmmu save`): restored onto a fresh host and
 *    resumed, as `pvmmu restore` does before it runs the workload on;
 *  - a memory dump (raw or ELF core) with the CR3 of its tables: no frame table, the tree and
 *    walks as `pvmmu dump` sees them;
 *  - a live run it attaches to (src/web/live.ts): charts only.
 * Opening checks everything first and throws `OpenError` with one clear line.
 */

import { closeSync, openSync, readFileSync, readSync, statSync } from "node:fs";
import { basename } from "node:path";
import {
  type DomainView,
  FRAME_CLASSES,
  type FrameInfo,
  type Meta,
  type SourceKind,
  type SourceSummary,
  type TableView,
  type WalkView,
} from "../../web/protocol.js";
import { ImageError, type ImageFormat, MemoryImage } from "../dump/image.js";
import { restoreGuest } from "../migration/guest.js";
import { StreamError } from "../migration/stream.js";
import { ScenarioError } from "../scenario/parse.js";
import type { PagingLevels } from "../x86/address.js";
import type { PhysicalMemory } from "../x86/memory.js";
import { DOMID_IO, DOMID_XEN } from "../xen/abi.js";
import { Host } from "../xen/host.js";
import { dumpFrameClasses, encodeFrameMap, grantMappedFrames, hostFrameMap } from "./framemap.js";
import { dumpFrameInfo, hostFrameInfo, ownerName } from "./inspect.js";
import type { LiveRelay } from "./live.js";
import { ScenarioSession } from "./stepping.js";
import { grantPtes, hostRoots, tableView, walkFrom } from "./tree.js";

/** A file or flag the explorer cannot open: one line saying why. */
export class OpenError extends Error {}

export type SourceMeta = Omit<Meta, "sources" | "source">;

export interface Source {
  readonly kind: SourceKind;
  readonly name: string;
  meta(): SourceMeta;
  /** The binary frame map (web/protocol.ts), or undefined when there are no frames (live). */
  frameMap(): Uint8Array | undefined;
  frameInfo(mfn: number): FrameInfo;
  table(mfn: number, level: number, va: bigint, path: number[]): TableView;
  walk(
    root: number,
    levels: PagingLevels,
    va: bigint,
    access: { kind?: "read" | "write" | "fetch"; user?: boolean },
  ): WalkView;
  readonly scenario?: ScenarioSession;
  readonly live?: LiveRelay;
  close(): void;
}

export function summary(s: Source, index: number): SourceSummary {
  return { index, kind: s.kind, name: s.name };
}

function owners(h?: Host): Record<string, string> {
  const out: Record<string, string> = { "0": "none" };
  if (h) for (const d of h.domains.values()) out[String(d.domid + 1)] = ownerName(d.domid);
  out[String(DOMID_IO + 1)] = ownerName(DOMID_IO);
  out[String(DOMID_XEN + 1)] = ownerName(DOMID_XEN);
  return out;
}

function domainViews(h: Host): DomainView[] {
  return [...h.domains.values()]
    .sort((a, b) => a.domid - b.domid)
    .map((d) => ({
      domid: d.domid,
      pages: d.pages.size,
      privileged: d.privileged,
      dying: d.isDying,
      crashed: d.crashed,
      nrL4Pages: d.nrL4Pages,
      vcpus: d.vcpus.map((v) => ({
        vcpu: v.id,
        kernelBase: v.guestTable,
        userBase: v.guestTableUser,
        kernelMode: v.kernelMode,
        cr3: `0x${v.cpu.cr3.toString(16)}`,
        gdtFrames: [...v.gdtFrames],
        ldtBase: `0x${v.ldtBase.toString(16)}`,
        ldtEnts: v.ldtEnts,
      })),
    }));
}

function checkFrame(mfn: number, frames: number): void {
  if (!Number.isSafeInteger(mfn) || mfn < 0 || mfn >= frames) {
    throw new RangeError(`frame ${mfn} is outside the ${frames} frames here`);
  }
}

function checkLevel(level: number, levels: number): void {
  if (!Number.isInteger(level) || level < 1 || level > levels) {
    throw new RangeError(`level must be 1 to ${levels}, got ${level}`);
  }
}

/** A host: a scenario being stepped, or a restored image. */
export class HostSource implements Source {
  private cachedMap: Uint8Array | undefined;
  constructor(
    readonly kind: "scenario" | "image",
    readonly name: string,
    private readonly getHost: () => Host,
    readonly scenario?: ScenarioSession,
  ) {}

  get host(): Host {
    return this.getHost();
  }

  meta(): SourceMeta {
    const h = this.host;
    return {
      frames: h.frames.frames,
      domains: domainViews(h),
      roots: hostRoots(h),
      hasFrameTable: true,
      owners: owners(h),
    };
  }

  frameMap(): Uint8Array {
    // A restored image does not change; a scenario's host changes with every step.
    if (this.kind !== "image") return hostFrameMap(this.host);
    if (!this.cachedMap) this.cachedMap = hostFrameMap(this.host);
    return this.cachedMap;
  }

  frameInfo(mfn: number): FrameInfo {
    checkFrame(mfn, this.host.frames.frames);
    return hostFrameInfo(this.host, mfn);
  }

  table(mfn: number, level: number, va: bigint, path: number[]): TableView {
    const h = this.host;
    checkFrame(mfn, h.frames.frames);
    checkLevel(level, 4);
    return tableView(
      { mem: h.mem, levels: 4, host: h, grantPtes: grantPtes(h), grantFrames: grantMappedFrames(h) },
      mfn,
      level,
      va,
      path,
    );
  }

  walk(
    root: number,
    levels: PagingLevels,
    va: bigint,
    access: { kind?: "read" | "write" | "fetch"; user?: boolean },
  ): WalkView {
    checkFrame(root, this.host.frames.frames);
    return walkFrom(this.host.mem, root, levels, va, access);
  }

  close(): void {}
}

/** A memory dump and the CR3 of its tables. */
export class DumpSource implements Source {
  readonly kind = "dump";
  private readonly mem: PhysicalMemory;
  private classes: Uint8Array | undefined;
  constructor(
    readonly name: string,
    private readonly img: MemoryImage,
    readonly root: number,
    readonly levels: PagingLevels,
  ) {
    this.mem = img.memory();
  }

  private classOf(): Uint8Array {
    this.classes ??= dumpFrameClasses(this.mem, this.root, this.levels, (m) => this.img.covers(m * 4096));
    return this.classes;
  }

  meta(): SourceMeta {
    return {
      frames: this.mem.frameCount,
      domains: [],
      roots: [{ label: `CR3 0x${(this.root * 4096).toString(16)}`, mfn: this.root, levels: this.levels }],
      hasFrameTable: false,
      owners: owners(),
    };
  }

  frameMap(): Uint8Array {
    const c = this.classOf();
    return encodeFrameMap(c, new Uint16Array(c.length));
  }

  frameInfo(mfn: number): FrameInfo {
    checkFrame(mfn, this.mem.frameCount);
    return dumpFrameInfo(mfn, FRAME_CLASSES[this.classOf()[mfn]]);
  }

  table(mfn: number, level: number, va: bigint, path: number[]): TableView {
    checkFrame(mfn, this.mem.frameCount);
    checkLevel(level, this.levels);
    const c = this.classOf();
    return tableView(
      { mem: this.mem, levels: this.levels, classOf: (m) => FRAME_CLASSES[c[m] ?? 0] },
      mfn,
      level,
      va,
      path,
    );
  }

  walk(
    root: number,
    levels: PagingLevels,
    va: bigint,
    access: { kind?: "read" | "write" | "fetch"; user?: boolean },
  ): WalkView {
    checkFrame(root, this.mem.frameCount);
    return walkFrom(this.mem, root, levels, va, access);
  }

  close(): void {
    this.img.close();
  }
}

/** A live run, attached through a relay: charts, no frames. */
export class LiveSource implements Source {
  readonly kind = "live";
  constructor(
    readonly name: string,
    readonly live: LiveRelay,
  ) {}

  meta(): SourceMeta {
    return { frames: 0, domains: [], roots: [], hasFrameTable: false, owners: owners(), attach: this.name };
  }

  frameMap(): undefined {
    return undefined;
  }

  frameInfo(): FrameInfo {
    throw new RangeError("a live source has no frames to inspect");
  }

  table(): TableView {
    throw new RangeError("a live source has no page tables to show");
  }

  walk(): WalkView {
    throw new RangeError("a live source has no page tables to walk");
  }

  close(): void {
    this.live.close();
  }
}

// ---- opening files ----

function readText(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (e) {
    throw new OpenError(`cannot read '${path}': ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
}

/** A scenario file, checked and run once (every line's outcome known). */
export function openScenario(path: string): HostSource {
  const text = readText(path);
  let session: ScenarioSession;
  try {
    session = new ScenarioSession(text, basename(path));
  } catch (e) {
    if (e instanceof ScenarioError || e instanceof RangeError) throw new OpenError(`${path}: ${e.message}`);
    throw e;
  }
  // A line that cannot run makes the file malformed, as for `pvmmu replay` (exit code 2).
  if (session.blockedError !== undefined) throw new OpenError(`${path}: ${session.blockedError}`);
  return new HostSource("scenario", basename(path), () => session.host, session);
}

/** Is this file a Xen migration stream (the image header's marker and "XENF")? */
export function isSavedImage(path: string): boolean {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (e) {
    throw new OpenError(`cannot read '${path}': ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  try {
    const b = Buffer.alloc(12);
    const n = readSync(fd, b, 0, 12, 0);
    return (
      n === 12 &&
      b.readUInt32BE(0) === 0xffffffff &&
      b.readUInt32BE(4) === 0xffffffff &&
      b.readUInt32BE(8) === 0x58454e46
    );
  } finally {
    closeSync(fd);
  }
}

/** A saved image restored onto a fresh host (`hostMiB`: its memory, default the guest + 25%). */
export async function openSavedImage(path: string, hostMiB?: number): Promise<HostSource> {
  let bytes: Buffer;
  try {
    if (!statSync(path).isFile()) throw new OpenError(`'${path}' is not a regular file`);
    bytes = readFileSync(path);
  } catch (e) {
    if (e instanceof OpenError) throw e;
    throw new OpenError(`cannot read '${path}': ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  const h = new Host({
    memoryMiB: hostMiB ?? Math.max(128, Math.ceil((bytes.length / 2 ** 20) * 1.25) + 64),
  });
  try {
    await restoreGuest(h, 1, [new Uint8Array(bytes)]);
  } catch (e) {
    if (e instanceof StreamError || e instanceof Error) throw new OpenError(`${path}: ${e.message}`);
    throw e;
  }
  return new HostSource("image", basename(path), () => h);
}

/** A scenario or a saved image, told apart by the file's first bytes. */
export async function openFile(path: string, hostMiB?: number): Promise<HostSource> {
  if (isSavedImage(path)) return openSavedImage(path, hostMiB);
  if (path.endsWith(".jsonl")) return openScenario(path);
  throw new OpenError(
    `'${path}' is neither a scenario (.jsonl) nor a saved image (a Xen migration stream); ` +
      "for a memory dump give --image FILE --cr3 ADDR",
  );
}

/** A memory dump with the physical address of its top-level table. */
export function openDump(
  path: string,
  cr3: bigint,
  levels: PagingLevels,
  format: ImageFormat | "auto" = "auto",
): DumpSource {
  if ((cr3 & 0xfffn) !== 0n) throw new OpenError(`CR3 0x${cr3.toString(16)} is not 4 KiB aligned`);
  if (cr3 >= 1n << 52n)
    throw new OpenError(`CR3 0x${cr3.toString(16)} is above the 52-bit physical address space`);
  let img: MemoryImage;
  try {
    img = MemoryImage.open(path, format);
  } catch (e) {
    if (e instanceof ImageError) throw new OpenError(e.message);
    throw e;
  }
  if (!img.covers(Number(cr3))) {
    img.close();
    throw new OpenError(`CR3 0x${cr3.toString(16)} points outside the image (${img.sizeBytes} bytes)`);
  }
  return new DumpSource(basename(path), img, Number(cr3) / 4096, levels);
}
