/**
 * pvmmu's public API. Layers point one way: x86 (hardware) ← xen
 * (hypervisor) ← guest kernels and migration ← scenarios, CLI, web.
 */

export * from "./dump/image.js";
export * from "./dump/synth.js";
export * from "./dump/views.js";
export * from "./x86/address.js";
export * from "./x86/builder.js";
export * from "./x86/cpu.js";
export * from "./x86/memory.js";
export * from "./x86/pte.js";
export * from "./x86/tlb.js";
export * from "./x86/walk.js";
