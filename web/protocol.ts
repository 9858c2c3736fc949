/**
 * The explorer's wire protocol: what `pvmmu serve` (src/web/server.ts) sends the page
 * (web/main.ts). Types and constants only, no DOM and no Node, so both sides compile it:
 * the server imports it from here, the page from its own build (dist/web/protocol.js).
 * Every route and event is described in docs/explorer.md.
 */

/** Frame classes of the frame map, one byte per frame: the code is the index. */
export const FRAME_CLASSES = [
  "free",
  "none",
  "writable",
  "l1",
  "l2",
  "l3",
  "l4",
  "seg_desc",
  "shared",
  "grant",
  "xen",
  "io",
  "mapped",
  "l5",
] as const;
export type FrameClass = (typeof FRAME_CLASSES)[number];

export const CLASS_CODE: Record<FrameClass, number> = Object.fromEntries(
  FRAME_CLASSES.map((c, i) => [c, i]),
) as Record<FrameClass, number>;

/**
 * The binary frame map (`GET /api/frames`), little-endian:
 *  - header, 4 × u32: magic "PVMF" (0x464d5650), version (1), frame count, reserved (0);
 *  - classes: u8 per frame (FRAME_CLASSES code), padded with zeros to a multiple of 4 bytes;
 *  - owners: u16 per frame, the owning domid + 1 (0: none; DOMID_IO/DOMID_XEN + 1 for theirs).
 */
export const FRAME_MAP_MAGIC = 0x464d5650;
export const FRAME_MAP_VERSION = 1;
export const FRAME_MAP_HEADER_BYTES = 16;

export interface FrameMapLayout {
  frames: number;
  classesOffset: number;
  ownersOffset: number;
  bytes: number;
}

export function frameMapLayout(frames: number): FrameMapLayout {
  const classesOffset = FRAME_MAP_HEADER_BYTES;
  const ownersOffset = classesOffset + Math.ceil(frames / 4) * 4;
  return { frames, classesOffset, ownersOffset, bytes: ownersOffset + frames * 2 };
}

export interface FrameMap {
  frames: number;
  classes: Uint8Array;
  owners: Uint16Array;
}

/** Read a frame map; throws on a buffer that is not one. */
export function decodeFrameMap(buf: ArrayBuffer): FrameMap {
  if (buf.byteLength < FRAME_MAP_HEADER_BYTES) throw new Error("frame map: too short");
  const head = new Uint32Array(buf, 0, 4);
  if (head[0] !== FRAME_MAP_MAGIC) throw new Error("frame map: bad magic");
  if (head[1] !== FRAME_MAP_VERSION) throw new Error(`frame map: version ${head[1]}`);
  const l = frameMapLayout(head[2]);
  if (buf.byteLength !== l.bytes) throw new Error("frame map: wrong length");
  return {
    frames: l.frames,
    classes: new Uint8Array(buf, l.classesOffset, l.frames),
    owners: new Uint16Array(buf, l.ownersOffset, l.frames),
  };
}

export type SourceKind = "scenario" | "image" | "dump" | "live";

export interface SourceSummary {
  index: number;
  kind: SourceKind;
  name: string;
}

/** A page-table root the tree can start from. */
export interface RootView {
  label: string;
  mfn: number;
  levels: 4 | 5;
  domid?: number;
  vcpu?: number;
  mode?: "kernel" | "user";
}

export interface VcpuView {
  vcpu: number;
  kernelBase: number;
  userBase: number;
  kernelMode: boolean;
  cr3: string;
  gdtFrames: number[];
  ldtBase: string;
  ldtEnts: number;
}

export interface DomainView {
  domid: number;
  pages: number;
  privileged: boolean;
  dying: boolean;
  crashed: boolean;
  nrL4Pages: number;
  vcpus: VcpuView[];
}

/** `GET /api/meta`: what is open. */
export interface Meta {
  sources: SourceSummary[];
  source: SourceSummary;
  /** Machine frames of the host (or of the dump's physical address space); 0 when there are none. */
  frames: number;
  domains: DomainView[];
  roots: RootView[];
  /** Where a live source is attached. */
  attach?: string;
  /** Counts are the hypervisor's (scenario, image) or there is no frame table (dump). */
  hasFrameTable: boolean;
  owners: Record<string, string>;
}

/** A live grant mapping (the mapper's maptrack entry). */
export interface GrantView {
  mapper: number;
  handle: number;
  granter: number;
  ref: number;
  readonly: boolean;
  host: boolean;
  device: boolean;
}

export type EntryKind = "table" | "leaf" | "self" | "back" | "linear" | "xen-slot" | "io";

/** One present entry of a table, decoded. */
export interface EntryView {
  index: number;
  /** The raw 64-bit entry, 16 hex digits. */
  raw: string;
  flags: string;
  /** The frame the entry points to. */
  target: number;
  /** First linear address the entry covers (canonical, 16 hex digits) and how many bytes. */
  va: string;
  span: number;
  kind: EntryKind;
  /** Leaf: the page size; table: the level of the table it points to. */
  pageSize?: number;
  childLevel?: number;
  targetClass?: FrameClass;
  targetOwner?: number;
  grant?: GrantView;
  /** What Xen rewrote or installed in this entry. */
  xen: string[];
}

/** `GET /api/table`: one table frame at a level. */
export interface TableView {
  mfn: number;
  level: number;
  va: string;
  class: FrameClass;
  owner: number;
  validated: boolean;
  pinned: boolean;
  count: number;
  typeCount: number;
  present: number;
  entries: EntryView[];
}

export interface WalkStepView {
  level: number;
  name: string;
  table: number;
  index: number;
  entryAddress: string;
  entry: string;
  flags: string;
}

/** `GET /api/walk`: one address's walk. */
export interface WalkView {
  va: string;
  levels: number;
  access: string;
  steps: WalkStepView[];
  ok: boolean;
  pa?: string;
  pageSize?: number;
  permissions?: { write: boolean; user: boolean; execute: boolean };
  fault?: string;
  errorCode?: number;
  errorBits?: string[];
}

export interface ReferenceView {
  kind: string;
  general: number;
  type: number;
  text: string;
  domid?: number;
  vcpu?: number;
  table?: number;
  level?: number;
  index?: number;
  entry?: string;
  grant?: GrantView;
}

/** `GET /api/frame`: the frame inspector. */
export interface FrameInfo {
  mfn: number;
  class: FrameClass;
  owner: number;
  ownerName: string;
  hasFrameTable: boolean;
  type?: string;
  count?: number;
  typeCount?: number;
  allocated?: boolean;
  validated?: boolean;
  pinned?: boolean;
  partial?: boolean;
  linear?: number;
  tableUses?: number;
  m2p?: string;
  grantPins?: { granter: number; ref: number; pin: string; to: number }[];
  refs: ReferenceView[];
  /** What the references add up to, and whether they explain the counts. */
  totals?: { general: number; type: number; linear: number; tableUses: number };
  explained?: boolean;
}

export interface TlbEntryText {
  va: string;
  pa: string;
  size: number;
  perm: string;
}

export interface TlbView {
  domid: number;
  vcpu: number;
  entries: TlbEntryText[];
}

export interface FrameChange {
  mfn: number;
  field: string;
  before: number | string | boolean;
  after: number | string | boolean;
}

export interface EntryChange {
  mfn: number;
  index: number;
  before: string;
  after: string;
  class: FrameClass;
}

export interface TlbChange {
  domid: number;
  vcpu: number;
  added: TlbEntryText[];
  removed: TlbEntryText[];
}

export interface FieldChange {
  domid: number;
  vcpu?: number;
  field: string;
  before: number | string | boolean;
  after: number | string | boolean;
}

/** What one step changed. */
export interface StateDiff {
  frames: FrameChange[];
  entries: EntryChange[];
  tlb: TlbChange[];
  vcpus: FieldChange[];
  domains: FieldChange[];
  /** Frames whose metadata or contents changed (for highlighting on the map). */
  changedFrames: number[];
  /** Some lists were cut at their limit. */
  truncated: boolean;
}

export type LineStatus = "pending" | "ok" | "fail" | "error";

export interface ScenarioLineView {
  /** Line number in the file (1-based). */
  line: number;
  text: string;
  op: string;
  status: LineStatus;
}

/** `GET /api/scenario`, `POST /api/scenario/goto`: where the stepper is and what the last step did. */
export interface StepView {
  /** Lines run (0 … total). */
  position: number;
  total: number;
  lines: ScenarioLineView[];
  /** The last line run: its result against its expectation. */
  last?: {
    line: number;
    op: string;
    ok: boolean;
    expected?: unknown;
    actual?: unknown;
    error?: string;
  };
  diff?: StateDiff;
  tlb: TlbView[];
  audit: { ok: boolean; problems: string[] };
  /** A line that could not run (a malformed reference found while running): stepping stops before it. */
  blockedAt?: number;
}

/** Live events (`GET /api/live`, and the publisher's `GET /events`), as Server-Sent Events. */
export interface LiveHello {
  type: "hello";
  command: string;
  strategy?: string;
  workload?: string;
  memoryBytes?: number;
  steps?: number;
  migrateTo?: string;
}

export interface LiveSample {
  type: "sample";
  /** Milliseconds since the run began. */
  t: number;
  phase: "boot" | "run" | "migrate" | "done";
  step: number;
  steps: number;
  /** Hypercalls (guest → hypervisor transitions) so far. */
  hypercalls: number;
  /** Page-table frames the guest holds now. */
  tableFrames: number;
}

export interface LiveRound {
  type: "round";
  t: number;
  round: number;
  final: boolean;
  pages: number;
  bytes: number;
  ms: number;
}

export interface LiveEnd {
  type: "end";
  t: number;
  ok: boolean;
  message: string;
}

/** The relay's own state (serve --attach): connected or waiting for the publisher. */
export interface LiveStatus {
  type: "status";
  connected: boolean;
  message: string;
}

export type LiveEvent = LiveHello | LiveSample | LiveRound | LiveEnd | LiveStatus;

export interface ApiError {
  error: string;
}
