/**
 * Child of the migration benchmark: receives one live migration over TCP.
 * `node dist/bench/migration-receiver.js HOST_MIB` listens on 127.0.0.1 (any free port) and
 * prints the port; once the guest has arrived and resumed it prints `{"bytes":…,"ms":…}` and
 * exits (status 1 if the migration failed).
 */

import type net from "node:net";
import { listen } from "../src/migration/tcp.js";
import { Host } from "../src/xen/host.js";

const memoryMiB = Number(process.argv[2]);
if (!Number.isInteger(memoryMiB) || memoryMiB < 64) {
  process.stderr.write("usage: migration-receiver HOST_MIB\n");
  process.exit(2);
}

const done = (line: string, code: number): void => {
  process.stdout.write(`${line}\n`, () => process.exit(code));
};

const server = await listen(
  { host: "127.0.0.1", port: 0 },
  {
    makeHost: () => new Host({ memoryMiB }),
    once: true,
    onArrival: (a) => {
      if (!a.kernel || a.host.domain(a.domid)?.suspended !== false)
        return done(JSON.stringify({ error: "the guest did not resume" }), 1);
      done(JSON.stringify({ bytes: a.bytes, ms: a.ms, pages: a.kernel.pages }), 0);
    },
    onFailure: (e) => {
      process.stderr.write(`migration-receiver: ${e.message}\n`);
      done(JSON.stringify({ error: e.message }), 1);
    },
  },
);
process.stdout.write(`${(server.address() as net.AddressInfo).port}\n`);
// A sender that never comes (it failed before connecting): give up.
setTimeout(() => {
  process.stderr.write("migration-receiver: no migration within 5 minutes\n");
  process.exit(1);
}, 300_000).unref();
