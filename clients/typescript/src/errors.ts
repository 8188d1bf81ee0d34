/**
 * Typed errors: every `{"ok": false, "error": {"code", "message", "field"}}` reply becomes a
 * {@link TalkwaiError} subclass chosen by its stable wire code, so callers can `instanceof` or
 * `switch (err.code)`. Transport failures (no reply in time, nobody listening, connection
 * closed) are {@link UnavailableError}s with `transport: true`: safe to retry with the same
 * command id.
 */
import type { ErrorBody, ErrorCode } from "./generated/index.js";

export type { ErrorBody, ErrorCode };

/** An error the system answered (or a transport failure, `code: "unavailable"`). */
export class TalkwaiError extends Error {
  /** The stable wire code. */
  readonly code: ErrorCode;
  /** The camelCase body field it is about, dotted for nested fields. */
  readonly field: string | null;
  /** True when no answer came (timeout, no responders, closed connection). */
  readonly transport: boolean;

  constructor(code: ErrorCode, message: string, field?: string | null, transport = false) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.field = field ?? null;
    this.transport = transport;
  }

  /** Whether sending the same request again (same command id) may succeed. */
  get retryable(): boolean {
    return this.code === "unavailable" || this.code === "conflict";
  }
}

/** Malformed JSON, unknown field, wrong enum or invalid value; `field` names it. */
export class ValidationFailedError extends TalkwaiError {}
/** The entity (or a referenced one) does not exist for this caller. */
export class NotFoundError extends TalkwaiError {}
/** The id or a unique value (email, user link) is taken. */
export class AlreadyExistsError extends TalkwaiError {}
/** Concurrent writers won every retry; send again. */
export class ConflictError extends TalkwaiError {}
/** Not allowed in the entity's current status (e.g. complete a pending task). */
export class InvalidTransitionError extends TalkwaiError {}
/** A referenced entity exists but cannot be used (inactive assignee or agent). */
export class InvalidReferenceError extends TalkwaiError {}
/** The caller's role, status or tenant does not allow this. */
export class ForbiddenError extends TalkwaiError {}
/** Missing, malformed, expired or forged token. */
export class UnauthenticatedError extends TalkwaiError {}
/** Too much, too fast. */
export class RateLimitedError extends TalkwaiError {}
/** A dependency is unreachable, or no answer came; send again with the same command id. */
export class UnavailableError extends TalkwaiError {}
/** The body is larger than the endpoint accepts. */
export class PayloadTooLargeError extends TalkwaiError {}
/**
 * A query's answer would pass the server's row cap (all levels together); `field` names the
 * level. Ask for pages: `first` + `after` (the level's `pageInfo` `endCursor`), or `limit` + `offset`.
 */
export class TooManyRowsError extends TalkwaiError {}
/** A bug on the server's side (logged there). */
export class InternalError extends TalkwaiError {}
/** The command id already names another command; send this one with a new command id. */
export class CommandIdReusedError extends TalkwaiError {}
/** No command is served on the subject (unknown aggregate or action). */
export class UnknownCommandError extends TalkwaiError {}
/** The tenant was erased (offboarded): nothing of it can be changed or read any more. */
export class TenantErasedError extends TalkwaiError {}

const CLASSES: Record<ErrorCode, new (code: ErrorCode, message: string, field?: string | null) => TalkwaiError> = {
  validation_failed: ValidationFailedError,
  not_found: NotFoundError,
  already_exists: AlreadyExistsError,
  conflict: ConflictError,
  invalid_transition: InvalidTransitionError,
  invalid_reference: InvalidReferenceError,
  forbidden: ForbiddenError,
  unauthenticated: UnauthenticatedError,
  rate_limited: RateLimitedError,
  unavailable: UnavailableError,
  payload_too_large: PayloadTooLargeError,
  too_many_rows: TooManyRowsError,
  internal: InternalError,
  command_id_reused: CommandIdReusedError,
  unknown_command: UnknownCommandError,
  tenant_erased: TenantErasedError,
};

/** The error class of a wire error body; an unknown code becomes an {@link InternalError}. */
export function errorFromBody(body: unknown): TalkwaiError {
  const b = (body ?? {}) as Partial<ErrorBody>;
  const code = typeof b.code === "string" && b.code in CLASSES ? (b.code as ErrorCode) : undefined;
  const message = typeof b.message === "string" ? b.message : "the server refused the request";
  if (code === undefined) {
    return new InternalError("internal", `unknown error code ${String(b.code)}: ${message}`, b.field);
  }
  return new CLASSES[code](code, message, b.field);
}

/** A transport failure as an {@link UnavailableError} (`transport: true`). */
export function transportError(message: string): UnavailableError {
  return new UnavailableError("unavailable", message, null, true);
}
