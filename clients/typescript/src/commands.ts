/**
 * Command helpers for every seed operation: `createTask`, `startTask`, ... each sends one
 * command (`talkwai.cmd.<tenant|platform>.<aggregate>.<action>`) and resolves with the typed
 * reply. Bodies are the generated types of `proto/schemas/commands/`; the helper names, the
 * subjects and the accepted reply are generated from `proto/` too (`src/generated/index.ts`).
 */
import { COMMAND_HELPERS, COMMAND_SUBJECTS } from "./generated/index.js";
import type { CommandAccepted, CommandBodies } from "./generated/index.js";

/** A command action, `<aggregate>.<action>`. */
export type CommandAction = keyof CommandBodies;

/** Actions sent on `talkwai.cmd.platform.*` (no tenant): tenant creation, admins and users. */
export function isPlatformAction(action: CommandAction): boolean {
  return !COMMAND_SUBJECTS[action].includes("{tenant}");
}

/** The helper name of every action (generated: `task.create` -> `createTask`, `task.linkAgent` -> `linkTaskAgent`). */
export { COMMAND_HELPERS };

/** The body a helper takes: the action's body, where `create` actions may leave `id` out. */
export type HelperBody<A extends CommandAction> = A extends `${string}.create`
  ? Omit<CommandBodies[A], "id"> & { id?: string }
  : CommandBodies[A];

/** An accepted command: `{"ok": true, "id", "version", "events", "seq"}` (generated). */
export type { CommandAccepted };

/** Per-call options of a command. */
export interface CommandOptions {
  /** The idempotency key; a fresh UUID when absent. Every retry reuses it. */
  commandId?: string;
  /** The tenant of a tenant command; default: the client's tenant (from the token). */
  tenant?: string;
  /** How long to wait for each reply (ms, default 5000). */
  timeoutMs?: number;
  /** How many times to send when no answer comes or the answer is retryable (default 4). */
  attempts?: number;
}

/** One method per seed operation. */
export type CommandHelpers = {
  [K in keyof typeof COMMAND_HELPERS]: (
    body: HelperBody<(typeof COMMAND_HELPERS)[K]>,
    options?: CommandOptions,
  ) => Promise<CommandAccepted>;
};
