/** The page-table strategies by name. */

import type { PageTableMapper } from "../mapper.js";
import type { StrategyName } from "../report.js";
import { DirectMapper } from "./direct.js";
import { RecursiveMapper } from "./recursive.js";
import { ShadowMapper } from "./shadow.js";

export function makeMapper(name: StrategyName): PageTableMapper {
  switch (name) {
    case "direct-mfn":
    case "direct-pfn":
      return new DirectMapper(name);
    case "shadow":
      return new ShadowMapper();
    case "recursive":
    case "netbsd":
      return new RecursiveMapper(name);
  }
}

export { DirectMapper, RecursiveMapper, ShadowMapper };
