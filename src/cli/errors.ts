/** An error in what the user asked for (bad flag, bad file, bad address): exit code 2. */
export class UsageError extends Error {}
