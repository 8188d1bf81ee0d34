/**
 * Command helpers for every seed operation: `createTask`, `startTask`, ... each sends one
 * command (`talkwai.cmd.<tenant|platform>.<aggregate>.<action>`) and resolves with the typed
 * reply. Bodies are the generated types of `proto/schemas/commands/`.
 */
import type { CommandBodies } from "./generated/index.js";

/** A command action, `<aggregate>.<action>`. */
export type CommandAction = keyof CommandBodies;

/** Actions sent on `talkwai.cmd.platform.*` (no tenant): tenant creation, admins and users. */
export function isPlatformAction(action: CommandAction): boolean {
  return action === "tenant.create" || action.startsWith("admin.") || action.startsWith("user.");
}

/** The helper name of every action (`task.create` -> `createTask`, `task.linkAgent` -> `linkTaskAgent`). */
export const COMMAND_HELPERS = {
  createTenant: "tenant.create",
  updateTenant: "tenant.update",
  setTenantStatus: "tenant.setStatus",
  deleteTenant: "tenant.delete",
  createMember: "member.create",
  updateMember: "member.update",
  setMemberRole: "member.setRole",
  setMemberStatus: "member.setStatus",
  deleteMember: "member.delete",
  linkMemberUser: "member.linkUser",
  unlinkMemberUser: "member.unlinkUser",
  createAdmin: "admin.create",
  updateAdmin: "admin.update",
  setAdminRole: "admin.setRole",
  setAdminPermissions: "admin.setPermissions",
  setAdminStatus: "admin.setStatus",
  deleteAdmin: "admin.delete",
  linkAdminUser: "admin.linkUser",
  unlinkAdminUser: "admin.unlinkUser",
  createAgent: "agent.create",
  updateAgent: "agent.update",
  configureAgent: "agent.configure",
  setAgentStatus: "agent.setStatus",
  deleteAgent: "agent.delete",
  createTask: "task.create",
  updateTask: "task.update",
  setTaskMetadata: "task.setMetadata",
  startTask: "task.start",
  completeTask: "task.complete",
  failTask: "task.fail",
  cancelTask: "task.cancel",
  retryTask: "task.retry",
  deleteTask: "task.delete",
  assignTask: "task.assign",
  unassignTask: "task.unassign",
  linkTaskAgent: "task.linkAgent",
  unlinkTaskAgent: "task.unlinkAgent",
  createUser: "user.create",
  updateUser: "user.update",
  deleteUser: "user.delete",
} as const satisfies Record<string, CommandAction>;

/** The body a helper takes: the action's body, where `create` actions may leave `id` out. */
export type HelperBody<A extends CommandAction> = A extends `${string}.create`
  ? Omit<CommandBodies[A], "id"> & { id?: string }
  : CommandBodies[A];

/** An accepted command: `{"ok": true, "id", "version", "events", "seq"}`. */
export interface CommandAccepted {
  ok: true;
  /** The addressed entity. */
  id: string;
  /** The aggregate's version after the command. */
  version: number;
  /** The events appended (empty when the command changed nothing). */
  events: { type: string; version: number; data: unknown }[];
  /** Stream sequence to pass as `minSeq` to read your own write. */
  seq: number;
}

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
