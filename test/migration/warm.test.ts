/** Warming a receiving host (src/migration/warm.ts): throwaway restores that leave nothing behind. */

import type net from "node:net";
import { describe, expect, it } from "vitest";
import { listen } from "../../src/migration/tcp.js";
import { warmRestorePath } from "../../src/migration/warm.js";
import { Host } from "../../src/xen/host.js";

describe("warming a receiving host", () => {
  it("restores its own small guest and keeps no host, domain or listener", async () => {
    const made: Host[] = [];
    await warmRestorePath();
    // The receiving host is made only when a guest arrives: warming never calls makeHost.
    const server = await listen(
      { host: "127.0.0.1", port: 0 },
      {
        makeHost: () => {
          const h = new Host({ memoryMiB: 64 });
          made.push(h);
          return h;
        },
        onArrival: () => {},
      },
    );
    try {
      expect((server.address() as net.AddressInfo).port).toBeGreaterThan(0);
      expect(made).toEqual([]);
    } finally {
      server.close();
    }
  });

  it("can be skipped", async () => {
    const server = await listen(
      { host: "127.0.0.1", port: 0 },
      { makeHost: () => new Host({ memoryMiB: 64 }), onArrival: () => {}, warm: false },
    );
    expect(server.listening).toBe(true);
    server.close();
  });
});
