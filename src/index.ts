/**
 * pvmmu's public API. Layers point one way: x86 (hardware) ← xen
 * (hypervisor) ← guest kernels and migration ← scenarios, CLI, web.
 */

export * from "./dump/image.js";
export * from "./dump/synth.js";
export * from "./dump/views.js";
export * from "./guest/boot.js";
export { type GrantTeardown, GuestKernel, Process as GrantProcess } from "./guest/grant-teardown.js";
export * from "./guest/hypercalls.js";
export * from "./guest/kernel.js";
export * from "./guest/layout.js";
export type { PageTableMapper } from "./guest/mapper.js";
export * from "./guest/mappers/index.js";
export * from "./guest/process.js";
export * from "./guest/report.js";
export * from "./guest/run.js";
export * from "./guest/workloads.js";
export * from "./scenario/parse.js";
export * from "./scenario/run.js";
export * from "./x86/address.js";
export * from "./x86/builder.js";
export * from "./x86/cpu.js";
export * from "./x86/memory.js";
export * from "./x86/pte.js";
export * from "./x86/tlb.js";
export * from "./x86/walk.js";
export * from "./x86/walk-many.js";
export * from "./xen/abi.js";
export * from "./xen/access.js";
export * from "./xen/audit.js";
export * from "./xen/domain.js";
export * from "./xen/frametable.js";
export * from "./xen/gdt.js";
export * from "./xen/grant.js";
export * from "./xen/host.js";
export * from "./xen/memory.js";
export * from "./xen/mm.js";
export * from "./xen/mmu.js";
export * from "./xen/mmuext.js";
export * from "./xen/multicall.js";
export * from "./xen/teardown.js";
