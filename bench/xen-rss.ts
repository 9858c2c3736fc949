/** Child of the benchmark: prints the RSS (MiB) of a 256 GiB host with a 64 GiB guest mapped and pinned. */

import { MMUEXT } from "../src/xen/abi.js";
import { Host } from "../src/xen/host.js";
import { buildGuestTables } from "./xen.js";

const data = 16 << 20; // 64 GiB of 4 KiB pages
const h = new Host({ memoryMiB: 256 * 1024 });
const d = h.createDomain({ domid: 1, pages: data + 2 + 64 + 32768 });
buildGuestTables(h, d, data);
const r = h.mmuextOp(1, [{ cmd: MMUEXT.MMUEXT_PIN_L4_TABLE, arg1: BigInt(d.p2m[0]) }]);
if (r.rc !== 0) throw new Error(`pin failed: ${r.rc}`);
if (h.frames.typeCount[d.p2m[2]] !== 1) throw new Error("L2 not validated");
process.stdout.write(`${Math.round(process.memoryUsage().rss / 2 ** 20)}\n`);
