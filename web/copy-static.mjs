// Copies the explorer's static files (the page and its styles) next to its compiled scripts
// in dist/web (`npm run build`). tsc compiles web/*.ts there; it does not copy other files.
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const web = dirname(fileURLToPath(import.meta.url));
const out = join(web, "..", "dist", "web");
mkdirSync(out, { recursive: true });
for (const f of ["index.html", "style.css"]) copyFileSync(join(web, f), join(out, f));
