/**
 * `pvmmu tour` (what `npm start` runs): a short, deterministic walk through
 * what pvmmu does. Each capability the project gains adds a section.
 */

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MemoryImage } from "../dump/image.js";
import { synthLinuxImage, writeRawImage } from "../dump/synth.js";
import {
  describeErrorCode,
  formatGva2Gpa,
  formatWalk,
  gva2gpa,
  infoMem,
  infoTlb,
  tlbLines,
  walkView,
} from "../dump/views.js";
import { fuzz } from "../fuzz/engine.js";
import { planDirectMapBoot } from "../guest/boot.js";
import { GuestKernel, Process } from "../guest/grant-teardown.js";
import { bootOnHost, runWorkload } from "../guest/run.js";
import { WorkloadRun } from "../guest/workloads.js";
import { guestMemoryHash, MemorySink, restoreGuest, saveGuest } from "../migration/guest.js";
import { hex64 } from "../x86/address.js";
import { BumpAllocator, PageTableBuilder } from "../x86/builder.js";
import { Cpu, CR4_SMAP, CR4_SMEP } from "../x86/cpu.js";
import { PhysicalMemory } from "../x86/memory.js";
import { describeFlags, HI_NX, LO_A, LO_D, LO_G, LO_P, LO_RW, LO_US } from "../x86/pte.js";
import { ACC_FETCH, ACC_USER, ACC_WRITE, PERM_NX, PERM_U, PERM_W } from "../x86/walk.js";
import { ERRNO_NAMES, MMUEXT, PGT_NAMES, VMASST_TYPE_writable_pagetables } from "../xen/abi.js";
import { Host } from "../xen/host.js";

const GiB = 2 ** 30;
const MiB = 2 ** 20;

function sizeName(bytes: number): string {
  return bytes >= GiB ? `${bytes / GiB} GiB` : bytes >= MiB ? `${bytes / MiB} MiB` : `${bytes / 1024} KiB`;
}

interface Section {
  title: string;
  lines: string[];
}

export async function runTour(out: (s: string) => void, json: boolean): Promise<void> {
  const sections: Section[] = [];
  const section = (title: string): string[] => {
    const lines: string[] = [];
    sections.push({ title, lines });
    return lines;
  };

  // 1. A host far larger than this machine, costing only what is touched.
  const mem = new PhysicalMemory({ sizeBytes: 256 * GiB });
  const tablesFrom = new BumpAllocator((200 * GiB) / 4096);
  const pt = new PageTableBuilder(mem, tablesFrom, 4);
  let s = section("Physical memory and a 4-level page-table tree");
  pt.map(0xffffffff81000000n, 0x100_0000, 2 * MiB, { lo: LO_G, hi: 0 }); // kernel text: 2 MiB, global, RX
  pt.map(0xffff888000000000n, 0, GiB, { lo: LO_RW | LO_G, hi: HI_NX }); // direct map: 1 GiB page
  pt.map(0x0000_4000_0000n, 0x3_0000_0000 + 0x5000, 4096, { lo: LO_RW | LO_US, hi: HI_NX }); // user data
  pt.map(0x0000_4000_1000n, 0x3_0000_0000 + 0x9000, 4096, { lo: LO_US, hi: 0 }); // user code, read-only
  s.push(
    `host RAM: ${mem.sizeBytes / GiB} GiB; frames touched: ${mem.framesTouched} ` +
      `(${pt.tables.length} page tables, allocated from frame 0x${((200 * GiB) / 4096).toString(16)})`,
    "mapped: kernel text ffffffff81000000 (2 MiB page, global), direct map ffff888000000000 (1 GiB page, NX),",
    "        user data 0000000040000000 (4 KiB, RW, NX), user code 0000000040001000 (4 KiB, read-only)",
  );

  // 2. Translation through the CPU model: walks, permissions, faults.
  const cpu = new Cpu(mem);
  cpu.loadRoot(pt.root * 4096);
  s = section("Translating linear addresses (TLB miss -> page walk)");
  const tr = (label: string, va: bigint, access: number): void => {
    const r = cpu.translateVa(va, access);
    if (r.ok) {
      const p = [
        r.perm & PERM_U ? "user" : "supervisor",
        r.perm & PERM_W ? "RW" : "RO",
        r.perm & PERM_NX ? "NX" : "X",
      ];
      s.push(
        `${label.padEnd(34)} ${hex64(va)} -> ${hex64(r.paddr)} (${sizeName(r.pageSize)} page, ${p.join(" ")}${
          r.fromTlb ? ", TLB hit" : ""
        })`,
      );
    } else if (r.vector === 14) {
      s.push(
        `${label.padEnd(34)} ${hex64(va)} -> #PF code 0x${r.errorCode.toString(16)} [${describeErrorCode(r.errorCode).join(", ")}]`,
      );
    } else s.push(`${label.padEnd(34)} ${hex64(va)} -> #GP(0) (non-canonical)`);
  };
  tr("kernel read of kernel text", 0xffffffff81123456n, 0);
  tr("kernel read via direct map", 0xffff888012345678n, 0);
  tr("user write to user data", 0x40000008n, ACC_USER | ACC_WRITE);
  tr("user write to read-only code", 0x40001000n, ACC_USER | ACC_WRITE);
  tr("user read of kernel text", 0xffffffff81000000n, ACC_USER);
  tr("kernel fetch from NX direct map", 0xffff888000001000n, ACC_FETCH);
  tr("read of an unmapped address", 0x7fff00000000n, 0);
  tr("non-canonical address", 0x0000900000000000n, 0);
  cpu.writeCr4(cpu.cr4 | CR4_SMEP | CR4_SMAP);
  tr("kernel read of user page, SMAP on", 0x40000000n, 0);
  cpu.setAc(true);
  tr("same with RFLAGS.AC=1 (stac)", 0x40000000n, 0);
  cpu.setAc(false);

  // 3. Accessed and dirty bits.
  s = section("Accessed and dirty bits, set by the walk as hardware does");
  const l1 = pt.tableAt(0x40000000n, 1);
  const pte = (): string => describeFlags(mem.frame(l1)[0], mem.frame(l1)[1], 1);
  s.push(`user data PTE after the user write: ${pte()}`);

  // 4. The TLB: stale entries until INVLPG, global entries across CR3 loads.
  s = section("The TLB: stale until flushed");
  cpu.translateVa(0x40000000n, ACC_USER);
  tr("user read (cached)", 0x40000000n, ACC_USER);
  const f = mem.frameForWrite(l1);
  f[0] = ((0x3_0000_7000 % 2 ** 32) | LO_P | LO_RW | LO_US | LO_A | LO_D) >>> 0; // retarget the PTE, no flush
  tr("after PTE change, no INVLPG", 0x40000000n, ACC_USER);
  cpu.invlpg(0x40000000n);
  tr("after INVLPG", 0x40000000n, ACC_USER);
  cpu.translateVa(0xffffffff81000000n, 0);
  cpu.loadRoot(pt.root * 4096);
  const live = cpu.tlb.size;
  s.push(
    `CR3 reload: ${live} live TLB ${live === 1 ? "entry" : "entries"} left (the global kernel-text entry survives)`,
  );

  // 5. 5-level paging.
  s = section("5-level paging (LA57)");
  const pt5 = new PageTableBuilder(mem, tablesFrom, 5);
  pt5.map(0xff11000000000000n, 0x1_0000_0000, 2 * MiB, { lo: LO_RW, hi: HI_NX });
  const cpu5 = new Cpu(mem, { la57: true });
  cpu5.loadRoot(pt5.root * 4096);
  const r5 = cpu5.translateVa(0xff11000000012345n, ACC_WRITE);
  s.push(
    `ff11000000012345 -> ${r5.ok ? hex64(r5.paddr) : "fault"} through PML5 -> PML4 -> PDPT -> PD (2 MiB page)`,
  );
  s.push(`frames touched on the 256 GiB host: ${mem.framesTouched}`);

  // 6. Memory dumps.
  s = section("Inspecting a memory dump (QEMU pmemsave format), as `pvmmu dump` does");
  const dir = mkdtempSync(join(tmpdir(), "pvmmu-tour-"));
  try {
    const synth = synthLinuxImage({ ramBytes: 256 * MiB, userMiB: 4, vmallocMiB: 1 });
    const file = join(dir, "linux-256M.raw");
    writeRawImage(synth.mem, file);
    const img = MemoryImage.open(file);
    const imem = img.memory();
    const root = synth.cr3 / 4096;
    const tlb = infoTlb(imem, root, 4).split("\n").filter(Boolean);
    const memv = infoMem(imem, root, 4).split("\n").filter(Boolean);
    s.push(
      `synthetic Linux image: 256 MiB, CR3=0x${synth.cr3.toString(16)}, ${synth.tableFrames} page-table frames`,
    );
    s.push(`info tlb: ${tlb.length} leaf mappings, e.g.`);
    for (const l of [...tlb.slice(0, 3), "...", ...tlb.slice(-3)]) s.push(`  ${l}`);
    s.push(`info mem: ${memv.length} ranges, e.g.`);
    for (const l of [...memv.slice(0, 3), "...", ...memv.slice(-2)]) s.push(`  ${l}`);
    const w = walkView(imem, root, 0xffffffff81001234n, { levels: 4 });
    for (const l of formatWalk(w).trimEnd().split("\n")) s.push(l);
    // Many addresses at once (BatchWalker): every leaf info tlb listed, plus an unmapped one.
    const leaves = tlbLines(imem, root, 4);
    const rows = gva2gpa(imem, root, 4, [...leaves.map((l) => BigInt(`0x${l.va}`) + 0x234n), 0x1000n]);
    const agree = leaves.filter((l, i) => rows[i].gpa === `0x${(BigInt(`0x${l.pa}`) + 0x234n).toString(16)}`);
    s.push(
      `gva2gpa (QEMU's command; pvmmu dump gva2gpa): ${rows.length} addresses in one call, their walks overlapped;`,
      `  ${agree.length} of the ${leaves.length} leaves translate to where info tlb says, e.g.`,
    );
    for (const l of formatGva2Gpa([rows[0], rows[leaves.length - 1], rows[leaves.length]])
      .trimEnd()
      .split("\n")) {
      s.push(`  ${l}`);
    }
    img.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  // 7. The hypervisor: Xen's PV MMU.
  s = section("Xen's PV MMU: a guest builds, pins and uses page tables under the hypervisor's rules");
  {
    const h = new Host({ memoryMiB: 256 * 1024 });
    const d = h.createDomain({ domid: 1, pages: 64 });
    const m = (pfn: number) => d.p2m[pfn];
    const val = (pfn: number, flags: number) => (BigInt(m(pfn)) << 12n) | BigInt(flags);
    const ext = (cmd: number, pfn: number) => h.mmuextOp(1, [{ cmd, arg1: BigInt(m(pfn)) }]);
    const rc = (r: { rc: number }) => (r.rc === 0 ? "0" : `-${ERRNO_NAMES[-r.rc]}`);
    const counts = (pfn: number) => {
      const f = h.frames;
      const x = m(pfn);
      return `mfn 0x${x.toString(16)}: type ${PGT_NAMES[f.type[x]]}, type count ${f.typeCount[x]}, count ${f.count[x]}${
        f.flags[x] & 2 ? ", pinned" : ""
      }`;
    };
    s.push(
      `domain 1: 64 pages on a 256 GiB host; pfns and mfns scattered (pfn 0..3 -> ${[0, 1, 2, 3].map((p) => `0x${m(p).toString(16)}`).join(", ")})`,
    );
    h.poke(1, m(0), 0, val(1, 7));
    h.poke(1, m(1), 0, val(2, 7));
    h.poke(1, m(2), 0, val(3, 7));
    h.poke(1, m(3), 0, val(10, 7));
    s.push(
      `guest writes L4 -> L3 -> L2 -> L1 -> data while they are ordinary pages, then MMUEXT_PIN_L4_TABLE: ${rc(ext(MMUEXT.MMUEXT_PIN_L4_TABLE, 0))}`,
    );
    s.push(`  L4 ${counts(0)}`, `  L1 ${counts(3)}`, `  data ${counts(10)}`);
    s.push(
      `MMUEXT_NEW_BASEPTR: ${rc(ext(MMUEXT.MMUEXT_NEW_BASEPTR, 0))}; the guest writes va 0x8 through its MMU: ${JSON.stringify(h.access(1, 0, 8n, "write", false, 42n))}`,
    );
    const upd = (pfn: number, idx: number, v: bigint) =>
      h.mmuUpdate(1, [{ ptr: BigInt(m(pfn) * 4096 + idx * 8), val: v }]);
    s.push(
      `mmu_update mapping the L1 itself read/write: ${rc(upd(3, 1, val(3, 7)))} (a page table is never writable)`,
    );
    s.push(`mmu_update mapping the L1 itself read-only: ${rc(upd(3, 1, val(3, 5)))}`);
    s.push(
      `mmu_update with PWT in an L1 entry: ${rc(upd(3, 2, val(11, 0xb)))}; in an L4 Xen slot (256): ${rc(upd(0, 256, 0n))}`,
    );
    s.push(
      `L4 self-map, read-only (a linear page table): ${rc(upd(0, 300, val(0, 5)))}; read/write: ${rc(upd(0, 301, val(0, 7)))}`,
    );
    h.vmAssist(1, 0, VMASST_TYPE_writable_pagetables);
    const w = h.access(1, 0, 0x1000n + 5n * 8n, "write", false, val(12, 7));
    s.push(
      `with VMASST writable_pagetables, a kernel store into the read-only L1 mapping is emulated: ${JSON.stringify(w)}; ${counts(12)}`,
    );
    s.push(
      `MMUEXT_PIN_L2_TABLE of the data page (typed writable): ${rc(ext(MMUEXT.MMUEXT_PIN_L2_TABLE, 10))}`,
    );
    const a = h.audit();
    s.push(
      `auditor: ${a.ok ? "every count and invariant holds" : a.problems.map((p) => p.message).join("; ")} (${a.framesChecked} frames)`,
    );
    const had = d.pages.snapshot();
    h.destroyDomain(1);
    s.push(
      `domain destroyed: ${h.checkFree(had).length === 0 ? `all ${had.length} frames free with zero counts` : "frames left!"}`,
    );
    s.push("more: `pvmmu replay scenarios/xen/*.jsonl` runs the 39 behaviours of Xen's PV MMU as scenarios");
  }

  // 8. Grants in a process's page tables (seed 003).
  s = section("Grant mappings in a process's page tables, and who tears them down (seed 003)");
  for (const design of ["none", "tracked", "skip-early-unpin"] as const) {
    const h = new Host({ memoryMiB: 64 });
    h.createDomain({ domid: 1, pages: 64 });
    const g = h.createDomain({ domid: 2, pages: 16 });
    h.grantWrite(2, 8, { to: 1, frame: g.p2m[8] });
    const k = new GuestKernel(h, 1);
    const p = new Process(k, design);
    p.mapPage(0x400000n, k.allocFrame());
    p.activate();
    p.mapGrant(0x7f0000000000n, 2, 8);
    p.exit();
    const st = h.grantState(2, 8)!;
    const revoked = h.grantWrite(2, 8, "revoke");
    s.push(
      `${design.padEnd(17)} process exits -> grant pin 0x${st.pin.toString(16)}, flags 0x${st.flags.toString(16)}; ` +
        `granter can revoke: ${revoked ? "yes" : "no (stuck until the mapper dies)"}; auditor ${h.audit().ok ? "clean" : "NOT clean"}`,
    );
  }

  s = section(
    "Guest kernels: a Linux-style and a NetBSD-style guest run the same workload (seeds 001, 002, 004)",
  );
  const kinds = [
    { name: "Linux-style ", strategy: "direct-pfn", pinning: "linux" },
    { name: "NetBSD-style", strategy: "netbsd", pinning: "eager" },
  ] as const;
  for (const g of kinds) {
    const r = runWorkload({
      strategy: g.strategy,
      pinning: g.pinning,
      workload: "fork-exec-exit",
      memoryBytes: 256 * MiB,
      seed: 1,
      iterations: 3,
      mapped: 4 * MiB,
    });
    const calls = Object.values(r.hypercalls).reduce((a, b) => a + b, 0);
    const pte = r.pteUpdates;
    s.push(
      `${g.name} (${g.strategy}, ${g.pinning} pinning): ${r.tablePages.total} table pages ` +
        `(${(r.tablePages.share * 100).toFixed(3)}% of 256 MiB), ${r.vaSlots} L4 slot(s) of kernel VA`,
      `    boot: ${r.boot.usedPages} tables built from a ${r.boot.reservedPages}-page seed; ` +
        `3 x fork+exec+exit of a 4 MiB process: ${calls} hypercalls ` +
        `(${Object.entries(r.hypercalls)
          .map(([k, v]) => `${k} ${v}`)
          .join(", ")}),`,
      `    PTE writes: ${pte.mmu_update} by mmu_update, ${pte.update_va_mapping} by update_va_mapping, ` +
        `${pte.direct} plain; Xen validated ${r.validatedEntries} entries; ` +
        `TLB flushes ${r.tlbFlushes.full} full + ${r.tlbFlushes.single} single; auditor ${r.audit.ok ? "clean" : "NOT clean"}`,
    );
  }
  for (const method of ["top-down", "linear"] as const) {
    const plan = planDirectMapBoot(2 ** 28, method);
    s.push(
      `1 TiB guest, ${method.padEnd(8)} boot: ${plan.reservedPages} pages reserved up front, ` +
        `${plan.usedPages} tables built, in pfns 0x${plan.lowestTablePfn.toString(16)}–0x${plan.highestTablePfn.toString(16)}` +
        ` (${plan.steps} step${plan.steps === 1 ? "" : "s"})`,
    );
  }
  s.push("(`pvmmu run` and `pvmmu compare` run these and more: every strategy, workload and size.)");

  // 10. Save, restore and live migration in Xen's stream format (seed 001).
  s = section("Save, restore and live migration in Xen's migration stream (seed 001)");
  {
    const o = {
      strategy: "netbsd",
      pinning: "eager",
      workload: "server",
      memoryBytes: 64 * MiB,
      seed: 3,
      iterations: 120,
    } as const;
    const want = runWorkload({ ...o, visitSpaces: 0 }).memoryHash;
    const src = bootOnHost(o);
    const run = new WorkloadRun(src.kernel, o.workload, { seed: o.seed, iterations: o.iterations });
    for (let i = 0; i < 10; i++) run.next();
    const oldL4 = src.kernel.current.l4;
    const sink = new MemorySink();
    const saved = await saveGuest(src.h, src.kernel, run, sink, {
      live: true,
      stepsPerBatch: 2,
    });
    const rounds = saved.rounds.map((r) => `${r.final ? "final " : ""}${r.pages}`).join(", ");
    s.push(
      `NetBSD-style guest (64 MiB, server workload), after 10 steps: saved live while it ran — rounds of ${rounds} pages, ` +
        `${(saved.bytes / MiB).toFixed(1)} MiB of Xen stream (v3: PAGE_DATA, P2M frames, vCPU context, END)`,
      "    before suspending it cleared its alternate and recursive slots in every address space (NetBSD's pmap_xen_suspend)",
    );
    const dst = new Host({ memoryMiB: 200 });
    dst.createDomain({ domid: 5, pages: 1000 });
    const back = await restoreGuest(dst, 7, sink.chunks);
    s.push(
      `restored on another host as domain 7: its L4 was mfn 0x${oldL4.toString(16)}, now 0x${back.kernel.current.l4.toString(16)}; ` +
        "tables localised, pinned ones re-pinned in pfn order, P2M list rewritten, slots put back",
    );
    while (back.run!.next()) {}
    const got = guestMemoryHash(back.kernel);
    s.push(
      `ran the workload to its end there: memory hash ${got.slice(0, 16)}… ${got === want ? "=" : "!="} ` +
        `a run that never moved (${want!.slice(0, 16)}…); auditor ${dst.audit().ok ? "clean" : "NOT clean"}`,
      "(`pvmmu save`, `pvmmu restore`, and `pvmmu host` + `pvmmu run --migrate-to` do this between processes over TCP.)",
    );
  }

  // 11. An adversarial fuzzer against the hypervisor.
  s = section("Hostile guests: fuzzing the hypervisor's invariants");
  {
    const r = fuzz({ seed: 1, steps: 20_000 });
    const byOp = r.coverage.toJSON();
    s.push(
      `${r.steps.toLocaleString("en")} hypercalls from 3 domains (one privileged) in ${r.episodes} episodes: build tables, pin, ` +
        "flip flags, link levels, self- and cross-map, grant, balloon, multicall, write through stale TLBs",
      `after every call the cheap local checks, every 100 calls the full audit: ${r.findings.length === 0 ? "no invariant broken" : `FINDING ${r.findings[0].kind}`}`,
      `${r.coverage.pairs} hypercall × result pairs reached, e.g. mmu_update: ${Object.keys(byOp.mmu_update ?? {}).join(", ")}`,
      "a finding is shrunk with fast-check to a scenario file naming the broken invariant; the real ones found so far",
      "    are fixed and kept in scenarios/regressions/ (a grant table freed under a zombie granter, unmap_and_replace",
      "    onto its own PTE, a grant unmap without Xen's TLB flush, two split-count corner cases, an unmap_and_replace",
      "    that stole an L4's self-map as if it were an L1 entry, a grant-table frame the guest gave back freed under",
      "    its grant table, a grant-table frame pinned as a page table, a zombie forgotten while its grant frame was mapped)",
      "(`pvmmu fuzz --steps 1M --workers 2 --policy split-count` runs more; docs/fuzz.md.)",
    );
  }

  // 12. The web explorer (it serves until stopped, so the tour only says how to open it).
  s = section("Seeing it: the web explorer");
  s.push(
    "`pvmmu serve scenarios/xen/20-linear-one-hop.jsonl` serves http://127.0.0.1:7700/: every machine frame coloured",
    "    by type, the page-table tree from each vCPU's base pointers (self-maps and linear entries as back edges),",
    "    each frame's counts with every reference that holds it, and the scenario stepped line by line, back and forth",
    "`pvmmu serve --image linux.raw --cr3 0x…` does the same for a memory dump; `pvmmu serve saved.img` for a saved guest;",
    "    `pvmmu run … --publish 127.0.0.1:7071` with `pvmmu serve --attach 127.0.0.1:7071` charts a run live (docs/explorer.md)",
  );

  if (json) {
    out(`${JSON.stringify({ sections }, null, 1)}\n`);
    return;
  }
  out("pvmmu tour — an executable model of Xen-style PV x86-64 memory management\n");
  for (const sec of sections) {
    out(`\n== ${sec.title}\n`);
    for (const l of sec.lines) out(`${l}\n`);
  }
  out(
    "\nNext: `pvmmu dump --help` to inspect your own memory dumps; `pvmmu replay --help` for scenarios;\n" +
      "`pvmmu run --help` and `pvmmu compare --help` to measure the guest strategies;\n" +
      "`pvmmu save`, `restore`, `host` and `run --migrate-to` to move guests (docs/migration.md);\n" +
      "`pvmmu fuzz` to attack the hypervisor (docs/fuzz.md); `pvmmu serve` to look at it all (docs/explorer.md).\n",
  );
}
