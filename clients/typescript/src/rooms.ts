/**
 * Rooms, the seed's real-time calls one to one: `room(type, id)` with
 * `presence.set/get/subscribe/leave`, `publishTopic` and `subscribeTopic`.
 *
 * - Topics are plain NATS subjects `talkwai.room.<type>.<id>.topic.<name>`. The service topics
 *   `taskUpdates`, `notifications.<memberId>` and `systemAlerts` come from the backbone only
 *   (at-least-once and in log order per subject, with `seq`: repeats are dropped here) and `publishTopic` refuses them (so do
 *   the NATS permissions); clients publish `taskActivity` (the seed's `notifyTaskUpdate` shape)
 *   and their own topics directly.
 * - Presence is request/reply on `talkwai.room.<type>.<id>.presence.<op>` with the bearer
 *   token; a joined session is refreshed every `ttlSecs`/3 and joined again after a reconnect
 *   or when the server no longer knows it. Changes arrive on `presence.events`.
 */
import type { Subscription } from "@nats-io/nats-core";
import type { Core } from "./core.js";
import { ForbiddenError, TalkwaiError, errorFromBody } from "./errors.js";
import { subject as channelSubject } from "./subjects.js";
import type { Channel } from "./subjects.js";
import type {
  ClientTopic,
  Notification,
  Peer,
  PresenceEvent,
  PresenceReply,
  SystemAlert,
  TaskActivity,
  TaskUpdate,
} from "./generated/index.js";

/** `tenant` (id: the tenant id) or `admin` (id: `global`). */
export type RoomType = "tenant" | "admin";

/** The message type of each named topic. */
export interface TopicMessages {
  taskUpdates: TaskUpdate;
  systemAlerts: SystemAlert;
  notifications: Notification;
  taskActivity: TaskActivity;
}

/** Topics only the backbone publishes (`notifications.<memberId>` too). */
export const SERVICE_TOPICS = ["taskUpdates", "notifications", "systemAlerts"] as const;

/** A service topic's name. */
export type ServiceTopic = (typeof SERVICE_TOPICS)[number] | `notifications.${string}`;

/** Whether clients may publish on `topic` (every topic but the service topics). */
export function isClientTopic(topic: string): boolean {
  const first = topic.split(".")[0] ?? topic;
  return topic.length > 0 && !(SERVICE_TOPICS as readonly string[]).includes(first);
}

/** The message type of a topic name (`notifications.<memberId>` carries notifications). */
export type TopicMessage<N extends string> = N extends keyof TopicMessages
  ? TopicMessages[N]
  : N extends `notifications.${string}`
    ? Notification
    : unknown;

/** What a client may publish on a topic: `taskActivity` is typed, service topics never. */
export type ClientTopicMessage<N extends string> = N extends ServiceTopic
  ? never
  : N extends "taskActivity"
    ? TaskActivity
    : ClientTopic | unknown;

/** A fresh session id (`[A-Za-z0-9_-]`, as the presence service requires). */
export function sessionId(): string {
  return crypto.randomUUID();
}

/** A room's presence: this client's session in it and the room's peers. */
export class Presence {
  /** This client's session in the room. */
  readonly sessionId: string;
  private readonly room: Room;
  private data: Record<string, unknown> | undefined;
  private heartbeat: ReturnType<typeof setInterval> | undefined;
  private readonly peers = new Map<string, Peer>();
  private readonly seqs = new Map<string, number>();
  /** Sessions changed by a join reply or an event while a `get` was in flight. */
  private readonly touched = new Set<string>();
  private readonly listeners = new Set<(peers: Peer[]) => void>();
  private events: Subscription | undefined;
  private stopReconnect: (() => void) | undefined;

  constructor(room: Room, session: string) {
    this.room = room;
    this.sessionId = session;
  }

  private async call(op: string, body: unknown): Promise<PresenceReply> {
    const reply = (await this.room.core.request(this.room.subject("room.presence", { op }), body)) as PresenceReply;
    if (reply?.ok !== true) throw errorFromBody(reply?.error);
    return reply;
  }

  /**
   * Sets this session's data: joins the room the first time (the seed's presence `publishPresence`),
   * then merges shallowly (`null` removes a key). Resolves with this peer.
   */
  async set(data: Record<string, unknown>): Promise<Peer> {
    if (this.data === undefined) {
      this.data = { ...data };
      return this.join();
    }
    for (const [k, v] of Object.entries(data)) {
      if (v === null) delete this.data[k];
      else this.data[k] = v;
    }
    try {
      const reply = await this.call("update", { sessionId: this.sessionId, data });
      return reply.peer as Peer;
    } catch (err) {
      if (err instanceof TalkwaiError && err.code === "not_found") return this.join();
      throw err;
    }
  }

  private async join(): Promise<Peer> {
    const reply = await this.call("join", { sessionId: this.sessionId, data: this.data ?? {} });
    for (const peer of reply.peers ?? []) this.peers.set(peer.sessionId, peer);
    if (reply.peer) {
      this.peers.set(reply.peer.sessionId, reply.peer);
      this.touched.add(reply.peer.sessionId);
    }
    this.emit();
    const ttlMs = (reply.ttlSecs ?? 15) * 1000;
    clearInterval(this.heartbeat);
    this.heartbeat = setInterval(() => void this.beat(), Math.max(200, ttlMs / 3));
    unref(this.heartbeat);
    this.stopReconnect ??= this.room.core.onReconnect(() => void this.resume());
    return reply.peer as Peer;
  }

  private async beat(): Promise<void> {
    if (this.data === undefined) return;
    try {
      await this.call("heartbeat", { sessionId: this.sessionId });
    } catch {
      // Expired while we could not reach it, or the service moved: join again.
      await this.join().catch(() => undefined);
    }
  }

  private async resume(): Promise<void> {
    if (this.data !== undefined) await this.join().catch(() => undefined);
    if (this.listeners.size > 0) await this.refresh().catch(() => undefined);
  }

  /** The room's peers now. */
  async get(): Promise<Peer[]> {
    const reply = await this.call("get", {});
    return reply.peers ?? [];
  }

  /** Reads every peer; what joins, events announced meanwhile win over the (older) list. */
  private async refresh(): Promise<void> {
    this.touched.clear();
    const peers = await this.get();
    const listed = new Set(peers.map((p) => p.sessionId));
    for (const peer of peers) if (!this.touched.has(peer.sessionId)) this.peers.set(peer.sessionId, peer);
    for (const session of [...this.peers.keys()]) {
      if (!listed.has(session) && !this.touched.has(session)) this.peers.delete(session);
    }
    this.emit();
  }

  private emit(): void {
    if (this.listeners.size === 0) return;
    const peers = [...this.peers.values()].sort((a, b) => a.joinedAt - b.joinedAt);
    for (const listener of [...this.listeners]) listener(peers);
  }

  /** Applies one `presence.events` message (repeats and older revisions are dropped). */
  apply(event: PresenceEvent): void {
    const last = this.seqs.get(event.sessionId) ?? -1;
    if (event.seq <= last) return;
    this.seqs.set(event.sessionId, event.seq);
    this.touched.add(event.sessionId);
    if (event.op === "leave") this.peers.delete(event.sessionId);
    else if (event.peer) this.peers.set(event.sessionId, event.peer);
    this.emit();
  }

  /**
   * Calls `listener` with every peer of the room now and after each change (the seed's
   * `usePresence(room).peers`); returns a function that stops it.
   */
  subscribe(listener: (peers: Peer[]) => void): () => void {
    this.listeners.add(listener);
    if (this.events === undefined) {
      this.events = this.room.core.subscribe(this.room.subject("room.presenceEvents"), (value) => this.apply(value as PresenceEvent));
      this.stopReconnect ??= this.room.core.onReconnect(() => void this.resume());
      void this.refresh().catch(() => undefined);
    } else {
      listener([...this.peers.values()]);
    }
    return () => {
      this.listeners.delete(listener);
      if (this.listeners.size === 0) {
        this.events?.unsubscribe();
        this.events = undefined;
      }
    };
  }

  /** Leaves the room (others see a `leave`); stops the heartbeat. */
  async leave(): Promise<void> {
    clearInterval(this.heartbeat);
    this.heartbeat = undefined;
    if (this.data === undefined) return;
    this.data = undefined;
    await this.call("leave", { sessionId: this.sessionId }).catch((err: unknown) => {
      if (!(err instanceof TalkwaiError && err.code === "not_found")) throw err;
    });
  }

  /** Stops everything without telling the server (the entry expires after its TTL). */
  close(): void {
    clearInterval(this.heartbeat);
    this.heartbeat = undefined;
    this.events?.unsubscribe();
    this.events = undefined;
    this.listeners.clear();
    this.stopReconnect?.();
  }
}

/** A room: `tenant.<tenantId>` or `admin.global`. */
export class Room {
  readonly type: RoomType;
  readonly id: string;
  readonly presence: Presence;
  /** @internal */
  readonly core: Core;
  private readonly subs = new Set<Subscription>();

  constructor(core: Core, type: RoomType, id: string, session: string = sessionId()) {
    this.core = core;
    this.type = type;
    this.id = id;
    this.presence = new Presence(this, session);
  }

  /** The subject of a room channel in this room (`room.presence`, `room.topic.clientTopic`...). */
  subject(channel: Channel & `room.${string}`, params: Record<string, string> = {}): string {
    return channelSubject(channel, { ...params, roomType: this.type, roomId: this.id });
  }

  /**
   * Publishes a client topic message (the seed's `publishTopic(room, topic, data)`):
   * `taskActivity` ({@link TaskActivity}, the seed's `notifyTaskUpdate` body) or a topic of your
   * own. The service topics (`taskUpdates`, `notifications.*`, `systemAlerts`) are the
   * backbone's, derived from the event log: a {@link ForbiddenError} (field `topic`) is thrown
   * and nothing is sent. A task's changes reach `taskUpdates` by themselves once its command is
   * accepted.
   */
  publishTopic<N extends string>(topic: N, data: ClientTopicMessage<N>): void {
    if (!isClientTopic(topic)) {
      throw new ForbiddenError(
        "forbidden",
        `${topic} is published by the backbone only; publish taskActivity or a topic of your own`,
        "topic",
      );
    }
    this.core.publish(this.subject("room.topic.clientTopic", { topic }), data);
  }

  /**
   * Calls `handler` with every message of a topic (the seed's `useTopicEffect`): `taskUpdates`,
   * `notifications.<memberId>` (or `notifications.*`), `systemAlerts`, or any client topic.
   * The backbone's messages come at least once and in log order per subject, each with its
   * `seq`: one whose `seq` is not above the last taken on its subject is a repeat and dropped
   * (the projector's `deadLetter` alerts count apart from the notifier's). Returns a function
   * that stops it.
   */
  subscribeTopic<N extends string>(topic: N, handler: (message: TopicMessage<N>, subject: string) => void): () => void {
    const last = new Map<string, number>();
    const sub = this.core.subscribe(this.subject("room.topic.clientTopic", { topic }), (value, subject) => {
      const { seq, kind } = (value ?? {}) as { seq?: unknown; kind?: unknown };
      if (typeof seq === "number") {
        const key = kind === "deadLetter" ? `${subject} deadLetter` : subject;
        if (seq <= (last.get(key) ?? 0)) return;
        last.set(key, seq);
      }
      handler(value as TopicMessage<N>, subject);
    });
    this.subs.add(sub);
    return () => {
      sub.unsubscribe();
      this.subs.delete(sub);
    };
  }

  /** Leaves the room's presence and stops every topic subscription. */
  async leave(): Promise<void> {
    for (const sub of this.subs) sub.unsubscribe();
    this.subs.clear();
    await this.presence.leave().finally(() => this.presence.close());
  }
}

/** Lets Node exit while a timer is pending (browsers' timers are numbers: nothing to do). */
export function unref(timer: unknown): void {
  (timer as { unref?: () => void })?.unref?.();
}
