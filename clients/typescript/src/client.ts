/**
 * `TalkwaiClient`: one NATS connection, one bearer token, and the seed's calls — `query`,
 * `subscribeQuery` (the seed's `useQuery`), a helper per command (`createTask`, `startTask`,
 * ...), and `room(type, id)` for presence and topics.
 */
import { wsconnect } from "@nats-io/nats-core";
import type { ConnectionOptions } from "@nats-io/nats-core";
import { COMMAND_HELPERS, isPlatformAction } from "./commands.js";
import type { CommandAccepted, CommandAction, CommandHelpers, CommandOptions } from "./commands.js";
import { COMMAND_ID, Core, sleep } from "./core.js";
import type { Transport } from "./core.js";
import { TalkwaiError, ValidationFailedError, errorFromBody } from "./errors.js";
import { COMMAND_SUBJECTS } from "./generated/index.js";
import type { CommandBodies } from "./generated/index.js";
import { LiveQuery, runQuery } from "./query.js";
import type { LiveQueryOptions, Query, QueryOptions, QueryResult } from "./query.js";
import { Room } from "./rooms.js";
import type { RoomType } from "./rooms.js";
import { fill } from "./subjects.js";
import { inboxPrefixFor, readClaims } from "./token.js";
import type { TokenClaims } from "./token.js";

/** A new id for an entity or a command (a random UUID, like the seed's `id()`). */
export function id(): string {
  return crypto.randomUUID();
}

/** How the client is set up. */
export interface ClientOptions {
  /** The bearer token: a member's or admin's JWT (or the platform token, for operators). */
  token?: string;
  /** The default tenant of tenant commands and queries; default: the token's `tenant` claim. */
  tenant?: string;
}

/** Options of {@link TalkwaiClient.connect}. */
export interface ConnectOptions extends ClientOptions {
  /** WebSocket URL(s) of nats-server, e.g. `ws://127.0.0.1:8080`. */
  servers: string | string[];
  /** Extra `@nats-io/nats-core` connection options. */
  nats?: Partial<ConnectionOptions>;
}

/** The client. Command helpers (`createTask`, ...) are listed in `COMMAND_HELPERS`. */
export interface TalkwaiClient extends CommandHelpers {}

export class TalkwaiClient {
  /** The underlying transport. */
  readonly core: Core;
  /** The token's claims (`undefined` for the platform token or none). */
  readonly claims: TokenClaims | undefined;
  /** The default tenant. */
  readonly tenant: string | undefined;

  constructor(nc: Transport, options: ClientOptions = {}) {
    this.core = new Core(nc, options.token);
    this.claims = options.token === undefined ? undefined : readClaims(options.token);
    this.tenant = options.tenant ?? this.claims?.tenant;
    for (const [name, action] of Object.entries(COMMAND_HELPERS)) {
      (this as unknown as Record<string, unknown>)[name] = (body: Record<string, unknown>, opts?: CommandOptions) =>
        this.command(action, withId(action, body) as unknown as CommandBodies[typeof action], opts);
    }
  }

  /** Connects over WebSocket (browsers; Node 22+ has a global WebSocket too). Reconnects forever by default. */
  static async connect(options: ConnectOptions): Promise<TalkwaiClient> {
    const nc = await wsconnect({
      servers: options.servers,
      name: "talkwai-client",
      maxReconnectAttempts: -1,
      reconnectTimeWait: 500,
      // The bearer token also signs in to nats-server (its auth callout fences the connection
      // to what the token may see, a member's replies to its own inbox prefix); `options.nats`
      // may bring other credentials instead.
      ...(options.token === undefined ? {} : { token: options.token, inboxPrefix: inboxPrefixFor(options.token) }),
      ...options.nats,
    });
    return new TalkwaiClient(nc, options);
  }

  /** The underlying connection. */
  get connection(): Transport {
    return this.core.nc;
  }

  private scope(given: string | undefined): string {
    const scope = given ?? this.tenant;
    if (scope === undefined) {
      throw new ValidationFailedError("validation_failed", "no tenant: pass one, or use a member token", "tenant");
    }
    return scope;
  }

  /**
   * Sends a command and resolves with the accepted reply, or rejects with the typed error.
   * A missing reply or a retryable answer (`unavailable`, `conflict`) is sent again with the
   * same command id, so the command is carried out at most once.
   */
  async command<A extends CommandAction>(action: A, body: CommandBodies[A], options: CommandOptions = {}): Promise<CommandAccepted> {
    const template = COMMAND_SUBJECTS[action];
    const subject = isPlatformAction(action) ? template : fill(template, { tenant: this.scope(options.tenant) });
    const commandId = options.commandId ?? id();
    const attempts = Math.max(1, options.attempts ?? 4);
    let last: TalkwaiError | undefined;
    for (let attempt = 0; attempt < attempts; attempt++) {
      if (attempt > 0) await sleep(100 * 2 ** (attempt - 1));
      try {
        const reply = (await this.core.request(subject, body, {
          headers: { [COMMAND_ID]: commandId },
          timeoutMs: options.timeoutMs ?? 5000,
        })) as { ok?: boolean; error?: unknown };
        if (reply?.ok === true) return reply as CommandAccepted;
        last = errorFromBody(reply?.error);
      } catch (err) {
        if (!(err instanceof TalkwaiError)) throw err;
        last = err;
      }
      if (!last.retryable) throw last;
    }
    throw last as TalkwaiError;
  }

  /** Sends an InstaQL-shaped query and returns its answer. */
  query<T = Record<string, unknown[]>>(query: Query, options: QueryOptions = {}): Promise<QueryResult<T>> {
    return runQuery<T>(this.core, this.scope(options.scope), query, options);
  }

  /**
   * A live query (the seed's `useQuery`): `onResult` gets the first answer, then every changed
   * answer, across reconnects. Await `.ready` for the first answer or its error.
   */
  subscribeQuery<T = Record<string, unknown[]>>(
    query: Query,
    onResult: (result: QueryResult<T>) => void,
    options: LiveQueryOptions = {},
  ): LiveQuery<T> {
    return new LiveQuery<T>(this.core, this.scope(options.scope), query, onResult, options);
  }

  /** A room (the seed's `db.room(type, id)`): `tenant` + tenant id, or `admin` + `global`. */
  room(type: RoomType, roomId: string): Room {
    return new Room(this.core, type, roomId);
  }

  /** Closes the connection. */
  async close(): Promise<void> {
    await this.core.nc.close();
  }
}

function withId(action: string, body: Record<string, unknown>): Record<string, unknown> {
  return action.endsWith(".create") && body.id === undefined ? { id: id(), ...body } : body;
}
