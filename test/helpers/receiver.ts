/** A receiving host on loopback whose every outcome a test can read: for the cut tests. */

import type net from "node:net";
import { listen } from "../../src/migration/tcp.js";
import { Host } from "../../src/xen/host.js";

export interface WatchedReceiver {
  server: net.Server;
  port: number;
  /** The host made for the guest that came (once one has). */
  readonly receiver: Host | undefined;
  failures: Error[];
  readonly arrived: boolean;
  /** Wait (up to `ms`) until the receiver has failed or resumed its guest, then stop listening. */
  settle(ms: number): Promise<void>;
}

export async function watchedReceiver(
  memoryMiB: number,
  o: { domid?: number; once?: boolean; warm?: boolean } = {},
): Promise<WatchedReceiver> {
  let receiver: Host | undefined;
  let arrived = false;
  const failures: Error[] = [];
  const server = await listen(
    { host: "127.0.0.1", port: 0 },
    {
      ...o,
      makeHost: () => {
        receiver = new Host({ memoryMiB });
        return receiver;
      },
      onFailure: (e) => failures.push(e),
      onArrival: () => {
        arrived = true;
      },
    },
  );
  return {
    server,
    port: (server.address() as net.AddressInfo).port,
    get receiver() {
      return receiver;
    },
    failures,
    get arrived() {
      return arrived;
    },
    async settle(ms) {
      for (let t = 0; t < ms && !arrived && failures.length === 0; t += 10) {
        await new Promise((r) => setTimeout(r, 10));
      }
      server.close();
    },
  };
}
