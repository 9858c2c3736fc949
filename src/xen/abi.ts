/**
 * Xen's public ABI for PV memory management (xen/include/public/xen.h,
 * errno.h, arch-x86/xen-x86_64.h): hypercall numbers, command numbers, flag
 * bits, domain IDs and error numbers. Names are Xen's.
 */

// ---- errno (public/errno.h); hypercalls return the negative value ----
export const EPERM = 1;
export const ENOENT = 2;
export const ESRCH = 3;
export const EINTR = 4;
export const EAGAIN = 11;
export const ENXIO = 6;
export const E2BIG = 7;
export const ENOMEM = 12;
export const EACCES = 13;
export const EFAULT = 14;
export const EBUSY = 16;
export const EINVAL = 22;
export const ERANGE = 34;
export const ENOSYS = 38;
export const EILSEQ = 84;
export const ERESTART = 85;
export const EOPNOTSUPP = 95;

export const ERRNO_NAMES: Record<number, string> = {
  [EPERM]: "EPERM",
  [ENOENT]: "ENOENT",
  [ESRCH]: "ESRCH",
  [EINTR]: "EINTR",
  [ENXIO]: "ENXIO",
  [ENOMEM]: "ENOMEM",
  [EACCES]: "EACCES",
  [EFAULT]: "EFAULT",
  [EBUSY]: "EBUSY",
  [EINVAL]: "EINVAL",
  [ERANGE]: "ERANGE",
  [ENOSYS]: "ENOSYS",
  [EILSEQ]: "EILSEQ",
  [ERESTART]: "ERESTART",
  [EOPNOTSUPP]: "EOPNOTSUPP",
};

// ---- hypercall numbers ----
export const __HYPERVISOR_mmu_update = 1;
export const __HYPERVISOR_update_va_mapping = 14;
export const __HYPERVISOR_multicall = 13;
export const __HYPERVISOR_vm_assist = 21;
export const __HYPERVISOR_update_va_mapping_otherdomain = 22;
export const __HYPERVISOR_mmuext_op = 26;

// ---- domain IDs ----
export const DOMID_FIRST_RESERVED = 0x7ff0;
export const DOMID_SELF = 0x7ff0;
export const DOMID_IO = 0x7ff1;
export const DOMID_XEN = 0x7ff2;
export const DOMID_COW = 0x7ff3;
export const DOMID_INVALID = 0x7ff4;
export const DOMID_ANY = 0x7ff5;
export const DOMID_IDLE = 0x7fff;

// ---- mmu_update commands (ptr & 7) ----
export const MMU_NORMAL_PT_UPDATE = 0;
export const MMU_MACHPHYS_UPDATE = 1;
export const MMU_PT_UPDATE_PRESERVE_AD = 2;
export const MMU_PT_UPDATE_NO_TRANSLATE = 3;

// ---- mmuext_op commands ----
export const MMUEXT = {
  MMUEXT_PIN_L1_TABLE: 0,
  MMUEXT_PIN_L2_TABLE: 1,
  MMUEXT_PIN_L3_TABLE: 2,
  MMUEXT_PIN_L4_TABLE: 3,
  MMUEXT_UNPIN_TABLE: 4,
  MMUEXT_NEW_BASEPTR: 5,
  MMUEXT_TLB_FLUSH_LOCAL: 6,
  MMUEXT_INVLPG_LOCAL: 7,
  MMUEXT_TLB_FLUSH_MULTI: 8,
  MMUEXT_INVLPG_MULTI: 9,
  MMUEXT_TLB_FLUSH_ALL: 10,
  MMUEXT_INVLPG_ALL: 11,
  MMUEXT_FLUSH_CACHE: 12,
  MMUEXT_SET_LDT: 13,
  MMUEXT_NEW_USER_BASEPTR: 15,
  MMUEXT_CLEAR_PAGE: 16,
  MMUEXT_COPY_PAGE: 17,
  MMUEXT_FLUSH_CACHE_GLOBAL: 18,
  MMUEXT_MARK_SUPER: 19,
  MMUEXT_UNMARK_SUPER: 20,
} as const;
export type MmuextName = keyof typeof MMUEXT;

// ---- update_va_mapping flags ----
export const UVMF_NONE = 0;
export const UVMF_TLB_FLUSH = 1;
export const UVMF_INVLPG = 2;
export const UVMF_FLUSHTYPE_MASK = 3;
export const UVMF_MULTI = 0;
export const UVMF_LOCAL = 0;
export const UVMF_ALL = 4;

// ---- vm_assist ----
export const VMASST_CMD_enable = 0;
export const VMASST_CMD_disable = 1;
export const VMASST_TYPE_4gb_segments = 0;
export const VMASST_TYPE_4gb_segments_notify = 1;
export const VMASST_TYPE_writable_pagetables = 2;
export const VMASST_TYPE_pae_extended_cr3 = 3;
export const VMASST_TYPE_architectural_iopl = 4;
export const VMASST_TYPE_runstate_update_flag = 5;
export const VMASST_TYPE_m2p_strict = 32;

// ---- page types (type_info bits 63..61, as the 3-bit field value) ----
export const PGT_none = 0;
export const PGT_l1_page_table = 1;
export const PGT_l2_page_table = 2;
export const PGT_l3_page_table = 3;
export const PGT_l4_page_table = 4;
export const PGT_seg_desc_page = 5;
export const PGT_shared_page = 6;
export const PGT_writable_page = 7;
export const PGT_NAMES = ["none", "l1", "l2", "l3", "l4", "seg_desc", "shared", "writable"] as const;
export type PageTypeName = (typeof PGT_NAMES)[number];

// ---- Xen's PV address-space layout (x86-64) ----
export const ROOT_PAGETABLE_FIRST_XEN_SLOT = 256;
export const ROOT_PAGETABLE_LAST_XEN_SLOT = 271;
export const RO_MPT_SLOT = 256;
export const LINEAR_PT_SLOT = 258;
export const PERDOMAIN_SLOT = 260;
export const HYPERVISOR_VIRT_START = 0xffff_8000_0000_0000n;
export const HYPERVISOR_VIRT_END = 0xffff_8800_0000_0000n;

/** `_PAGE_GUEST_KERNEL`: PTE bit 52 = high-half bit 20. */
export const HI_GUEST_KERNEL = 1 << 20;
/** `_PAGE_GNTTAB`: PTE bit 62 = high-half bit 30 (debug builds only). */
export const HI_GNTTAB = 1 << 30;

/** `INVALID_M2P_ENTRY`. */
export const INVALID_M2P_ENTRY = 0xffff_ffff_ffff_ffffn;
