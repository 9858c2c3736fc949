/**
 * How the explorer's browser tests and benchmark start Debian's Chromium (playwright-core's
 * `launchPersistentContext`): headless, and without the background connections this machine's
 * closed network refuses. Plain data, so nothing here needs playwright-core at run time.
 */

export const CHROMIUM = "/usr/bin/chromium";

export function chromiumLaunchOptions(viewport: { width: number; height: number }) {
  return {
    executablePath: CHROMIUM,
    headless: true,
    viewport,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  };
}
