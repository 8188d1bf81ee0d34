/**
 * InstaQL-shaped queries (`talkwai.qry.<tenant|platform>`) and live queries
 * (`talkwai.qry.<scope>.subscribe`): the first answer comes with a subject that receives every
 * changed answer and a control subject for `renew` (every `ttlMs`/2) and `unsubscribe`. A
 * live query survives reconnects: after a reconnect, or when a renewal is not answered (the
 * query service restarted, the subscription expired), it subscribes again and delivers the
 * fresh answer.
 */
import type { Subscription } from "@nats-io/nats-core";
import type { Core } from "./core.js";
import { sleep } from "./core.js";
import { TalkwaiError, errorFromBody, transportError } from "./errors.js";
import type {
  LiveControl,
  LiveControlReply,
  LiveUpdate,
  PageInfo,
  Query,
  QueryLevel,
  QueryParams,
  QueryReply,
  QueryRequest,
  SubscribeReply,
} from "./generated/index.js";
import { unref } from "./rooms.js";
import { subject } from "./subjects.js";

/**
/**
 * An InstaQL-shaped query: namespaces (`tenants`, `members`, `agents`, `tasks`, `admins`, `$users`)
 * at the top, each a level with `$` (where, order, paging, fields, aggregate) and nested links.
 * Generated from `proto/schemas/query/QueryRequest.json`. Without `order` a level is sorted by
 * `createdAt` ascending; without `limit`/`first`/`last` it returns every matching row (no default
 * limit, as in InstaQL). An answer over the server's row cap (10,000 by default, all levels
 * together) is refused with a {@link TooManyRowsError}: page with `first` + `after`.
 */
export type { Query, QueryLevel, QueryParams };

/** An answer: the data with the query's nesting, paging info and the checkpoint it was read at. */
export interface QueryResult<T = Record<string, unknown[]>> {
  data: T;
  /** Page facts by namespace (cursors, whether more rows follow or precede). */
  pageInfo: Record<string, PageInfo>;
  /** The projection checkpoint the answer was read at. */
  seq: number;
}

/** Per-call options of a query. */
export interface QueryOptions {
  /** Wait (server-side, ≤ 5 s) until the read models have applied this sequence (a command reply's `seq`). */
  minSeq?: number;
  /** `platform` or a tenant id; default the client's tenant. */
  scope?: string;
  /** How long to wait for the reply (ms, default 10000). */
  timeoutMs?: number;
}

/** Options of a live query. */
export interface LiveQueryOptions extends QueryOptions {
  /**
   * Called when the live query cannot be kept up (it keeps trying), or when the server cannot
   * give a changed answer (a `TooManyRowsError` once it grew past the row cap; the next answer
   * that fits is delivered as usual).
   */
  onError?: (error: TalkwaiError) => void;
}

/** Any query-service reply: a query's, a subscription's or a live-query control request's. */
type Answer = QueryReply | SubscribeReply | LiveControlReply;

/** The fields of an accepted reply, whichever it is. */
type Accepted = Partial<Extract<SubscribeReply, { ok: true }>> & Partial<Extract<QueryReply, { ok: true }>>;

/** The request body: the query itself, or `{query, minSeq}`. */
export function queryBody(query: Query, minSeq?: number): QueryRequest {
  return minSeq === undefined ? query : { query, minSeq };
}

function answer<T>(reply: unknown): QueryResult<T> & Omit<Accepted, "data" | "pageInfo" | "seq"> {
  const a = reply as Answer | undefined;
  if (a?.ok !== true) throw errorFromBody((a as { error?: unknown } | undefined)?.error);
  const accepted = a as Accepted;
  return { ...accepted, data: accepted.data as T, pageInfo: accepted.pageInfo ?? {}, seq: accepted.seq ?? 0 };
}

/** A live-query control request (`renew`, `unsubscribe`). */
function controlRequest(op: LiveControl["op"]): LiveControl {
  return { op };
}

/** Sends one query and returns its answer. */
export async function runQuery<T>(core: Core, scope: string, query: Query, options: QueryOptions = {}): Promise<QueryResult<T>> {
  const reply = await core.request(subject("qry", { tenant: scope }), queryBody(query, options.minSeq), {
    timeoutMs: options.timeoutMs ?? 10_000,
  });
  const { data, pageInfo, seq } = answer<T>(reply);
  return { data, pageInfo, seq };
}

/** A running live query; see {@link LiveQuery.unsubscribe}. */
export class LiveQuery<T = Record<string, unknown[]>> {
  /** Resolves once the first answer was delivered; rejects with its typed error. */
  readonly ready: Promise<void>;
  /** How many times it subscribed (1 + re-subscriptions after reconnects or lost renewals). */
  subscriptions = 0;

  private readonly core: Core;
  private readonly scope: string;
  private readonly query: Query;
  private readonly onResult: (result: QueryResult<T>) => void;
  private readonly options: LiveQueryOptions;
  private current: { id: string; control: string; sub: Subscription } | undefined;
  private renewTimer: ReturnType<typeof setTimeout> | undefined;
  private lastSeq = -1;
  private lastData = "";
  private closed = false;
  private restarting = false;
  private readonly stopReconnect: () => void;

  constructor(core: Core, scope: string, query: Query, onResult: (result: QueryResult<T>) => void, options: LiveQueryOptions = {}) {
    this.core = core;
    this.scope = scope;
    this.query = query;
    this.onResult = onResult;
    this.options = options;
    this.stopReconnect = core.onReconnect(() => void this.restart());
    this.ready = this.start();
    this.ready.catch(() => undefined);
  }

  private deliver(data: unknown, pageInfo: Record<string, PageInfo> | undefined, seq: number): void {
    if (seq < this.lastSeq) return;
    const text = JSON.stringify([data, pageInfo]);
    this.lastSeq = seq;
    if (text === this.lastData) return;
    this.lastData = text;
    this.onResult({ data: data as T, pageInfo: pageInfo ?? {}, seq });
  }

  private async start(): Promise<void> {
    const reply = await this.core.request(subject("qry.subscribe", { tenant: this.scope }), queryBody(this.query, this.options.minSeq), {
      timeoutMs: this.options.timeoutMs ?? 10_000,
    });
    const a = answer<T>(reply);
    if (a.subscription === undefined || a.subject === undefined || a.control === undefined) {
      throw transportError("the subscribe reply has no subscription");
    }
    const id = a.subscription;
    const control = a.control;
    if (this.closed) {
      void this.core.request(control, controlRequest("unsubscribe"), { timeoutMs: 2000 }).catch(() => undefined);
      return;
    }
    const sub = this.core.subscribe(a.subject, (value) => {
      const update = value as LiveUpdate;
      if (this.current?.id !== update.subscription) return;
      if (update.ok === false) {
        // The answer cannot be given (e.g. it grew past the row cap): no data until it can,
        // and the next answer is delivered even if it equals the last one.
        this.lastData = "";
        this.options.onError?.(errorFromBody(update.error));
        return;
      }
      this.deliver(update.data, update.pageInfo, update.seq ?? 0);
    });
    const previous = this.current;
    this.current = { id, control, sub };
    this.subscriptions += 1;
    if (previous !== undefined) {
      previous.sub.unsubscribe();
      void this.core.request(previous.control, controlRequest("unsubscribe"), { timeoutMs: 2000 }).catch(() => undefined);
    }
    this.deliver(a.data, a.pageInfo, a.seq);
    this.scheduleRenew(a.ttlMs ?? 30_000);
  }

  private scheduleRenew(ttlMs: number): void {
    clearTimeout(this.renewTimer);
    if (this.closed) return;
    this.renewTimer = setTimeout(() => void this.renew(ttlMs), Math.max(50, ttlMs / 2));
    unref(this.renewTimer);
  }

  private async renew(ttlMs: number): Promise<void> {
    const current = this.current;
    if (this.closed || current === undefined) return;
    try {
      const reply = (await this.core.request(current.control, controlRequest("renew"), { timeoutMs: 3000 })) as LiveControlReply;
      if (reply?.ok !== true) throw errorFromBody(reply?.error);
      this.scheduleRenew(reply.ttlMs ?? ttlMs);
    } catch {
      // Not answered: the subscription is gone (service restarted, expired while away).
      await this.restart();
    }
  }

  /** Subscribes again (after a reconnect or a lost renewal), retrying until it works or is closed. */
  private async restart(): Promise<void> {
    if (this.closed || this.restarting) return;
    this.restarting = true;
    clearTimeout(this.renewTimer);
    try {
      for (let attempt = 0; !this.closed; attempt++) {
        try {
          await this.start();
          return;
        } catch (err) {
          if (err instanceof TalkwaiError) this.options.onError?.(err);
          await sleep(Math.min(5000, 200 * 2 ** attempt));
        }
      }
    } finally {
      this.restarting = false;
    }
  }

  /** Stops the updates and tells the query service. */
  async unsubscribe(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopReconnect();
    clearTimeout(this.renewTimer);
    const current = this.current;
    this.current = undefined;
    if (current !== undefined) {
      current.sub.unsubscribe();
      await this.core.request(current.control, controlRequest("unsubscribe"), { timeoutMs: 2000 }).catch(() => undefined);
    }
  }
}
