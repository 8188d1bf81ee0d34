/**
 * The transport under the client: JSON request/reply with the bearer token, subscriptions,
 * and reconnect notifications, over any NATS connection of `@nats-io/nats-core` (WebSocket in
 * browsers via `wsconnect`, TCP in Node via `@nats-io/transport-node`).
 */
import { headers as natsHeaders } from "@nats-io/nats-core";
import type { Msg, NatsConnection, Subscription } from "@nats-io/nats-core";
import { transportError } from "./errors.js";

/** The part of a NATS connection the client uses (a fake in unit tests). */
export type Transport = Pick<NatsConnection, "request" | "publish" | "subscribe" | "status" | "close" | "isClosed">;

/** The `Authorization` header. */
export const AUTHORIZATION = "Authorization";
/** The idempotency key header of commands. */
export const COMMAND_ID = "Talkwai-Command-Id";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Encodes a value as JSON bytes. */
export function encodeJson(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

/** Decodes JSON bytes; `undefined` when they are not JSON. */
export function decodeJson(data: Uint8Array): unknown {
  try {
    return JSON.parse(decoder.decode(data));
  } catch {
    return undefined;
  }
}

/** Options of one request. */
export interface RequestOptions {
  /** Extra headers (the bearer token is added). */
  headers?: Record<string, string>;
  /** How long to wait for the reply, ms. */
  timeoutMs?: number;
}

/** Request/reply, subscriptions and reconnect listeners over one connection. */
export class Core {
  readonly nc: Transport;
  /** The bearer token sent with every request. */
  token: string | undefined;
  private readonly reconnectListeners = new Set<() => void>();
  private watching = false;

  constructor(nc: Transport, token: string | undefined) {
    this.nc = nc;
    this.token = token;
  }

  /** Sends `body` as JSON and returns the decoded JSON reply; transport failures become `UnavailableError`s. */
  async request(subject: string, body: unknown, options: RequestOptions = {}): Promise<unknown> {
    const h = natsHeaders();
    if (this.token !== undefined) h.set(AUTHORIZATION, `Bearer ${this.token}`);
    for (const [k, v] of Object.entries(options.headers ?? {})) h.set(k, v);
    const timeout = options.timeoutMs ?? 5000;
    let reply: Msg;
    try {
      reply = await this.nc.request(subject, encodeJson(body), { timeout, headers: h });
    } catch (err) {
      throw transportError(describe(err, subject, timeout));
    }
    const decoded = decodeJson(reply.data);
    if (decoded === undefined) {
      throw transportError(`the reply on ${subject} is not JSON`);
    }
    return decoded;
  }

  /** Calls `onMessage` with each message's decoded JSON (non-JSON messages are dropped). */
  subscribe(subject: string, onMessage: (value: unknown, subject: string) => void): Subscription {
    return this.nc.subscribe(subject, {
      callback: (err, msg) => {
        if (err !== null) return;
        const value = decodeJson(msg.data);
        if (value !== undefined) onMessage(value, msg.subject);
      },
    });
  }

  /** Publishes `value` as JSON. */
  publish(subject: string, value: unknown): void {
    this.nc.publish(subject, encodeJson(value));
  }

  /** Calls `listener` after every reconnect; returns a function removing it. */
  onReconnect(listener: () => void): () => void {
    this.reconnectListeners.add(listener);
    this.watchStatus();
    return () => this.reconnectListeners.delete(listener);
  }

  private watchStatus(): void {
    if (this.watching) return;
    this.watching = true;
    void (async () => {
      for await (const status of this.nc.status()) {
        if (status.type === "reconnect") {
          for (const listener of [...this.reconnectListeners]) listener();
        }
      }
    })().catch(() => undefined);
  }
}

function describe(err: unknown, subject: string, timeout: number): string {
  const e = err as { name?: string; message?: string; cause?: { name?: string }; isNoResponders?: () => boolean };
  if (e?.name === "TimeoutError" || e?.cause?.name === "TimeoutError") {
    return `no reply on ${subject} within ${timeout} ms`;
  }
  if (e?.name === "NoRespondersError" || e?.cause?.name === "NoRespondersError" || e?.isNoResponders?.() === true) {
    return `no service answers ${subject}`;
  }
  return `request on ${subject} failed: ${e?.message ?? String(err)}`;
}

/** Waits `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
