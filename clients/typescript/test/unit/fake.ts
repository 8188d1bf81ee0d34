// A scripted stand-in for a NATS connection, for unit tests of the client's protocol logic
// (integration tests use a real nats-server).
import type { Msg, Status } from "@nats-io/nats-core";
import type { Transport } from "../../src/core.js";

export interface SentRequest {
  subject: string;
  body: unknown;
  headers: Record<string, string>;
}

type Handler = (req: SentRequest) => unknown | Promise<unknown>;

const enc = new TextEncoder();
const dec = new TextDecoder();

export class FakeNats {
  readonly requests: SentRequest[] = [];
  readonly published: { subject: string; body: unknown }[] = [];
  readonly subs = new Map<number, { subject: string; cb: (err: Error | null, msg: Msg) => void }>();
  private handlers: [RegExp, Handler][] = [];
  private statusQueue: Status[] = [];
  private statusWake: (() => void) | undefined;
  private nextSub = 1;

  /** Answers requests whose subject matches `pattern`; throw from `handler` to fail them. */
  on(pattern: RegExp, handler: Handler): this {
    this.handlers.unshift([pattern, handler]);
    return this;
  }

  /** Delivers `value` to every subscription whose subject matches `subject`. */
  deliver(subject: string, value: unknown): void {
    for (const { subject: filter, cb } of [...this.subs.values()]) {
      if (matches(filter, subject)) cb(null, msg(subject, value));
    }
  }

  /** Emits a connection status (e.g. `{type: "reconnect"}`). */
  emit(status: Status): void {
    this.statusQueue.push(status);
    this.statusWake?.();
  }

  subscribed(subject: string): boolean {
    return [...this.subs.values()].some((s) => s.subject === subject);
  }

  transport(): Transport {
    const self = this;
    return {
      async request(subject: string, payload?: unknown, opts?: { headers?: { keys(): string[]; get(k: string): string } }) {
        const headers: Record<string, string> = {};
        for (const k of opts?.headers?.keys() ?? []) headers[k] = opts!.headers!.get(k);
        const req = { subject, body: JSON.parse(dec.decode(payload as Uint8Array)), headers };
        self.requests.push(req);
        const found = self.handlers.find(([p]) => p.test(subject));
        if (found === undefined) {
          const err = new Error("no responders");
          err.name = "NoRespondersError";
          throw err;
        }
        return msg(subject, await found[1](req));
      },
      publish(subject: string, payload?: unknown) {
        self.published.push({ subject, body: JSON.parse(dec.decode(payload as Uint8Array)) });
      },
      subscribe(subject: string, opts?: { callback?: (err: Error | null, msg: Msg) => void }) {
        const sid = self.nextSub++;
        self.subs.set(sid, { subject, cb: opts?.callback ?? (() => undefined) });
        return { unsubscribe: () => void self.subs.delete(sid) } as never;
      },
      status() {
        return {
          [Symbol.asyncIterator]: async function* () {
            for (;;) {
              const next = self.statusQueue.shift();
              if (next !== undefined) {
                yield next;
                continue;
              }
              await new Promise<void>((resolve) => {
                self.statusWake = resolve;
              });
            }
          },
        } as never;
      },
      async close() {},
      isClosed: () => false,
    } as unknown as Transport;
  }
}

export function timeout(): never {
  const err = new Error("timeout");
  err.name = "TimeoutError";
  throw err;
}

function msg(subject: string, value: unknown): Msg {
  return { subject, data: enc.encode(JSON.stringify(value)) } as unknown as Msg;
}

function matches(filter: string, subject: string): boolean {
  const f = filter.split(".");
  const s = subject.split(".");
  for (let i = 0; i < f.length; i++) {
    if (f[i] === ">") return s.length > i;
    if (i >= s.length) return false;
    if (f[i] !== "*" && f[i] !== s[i]) return false;
  }
  return f.length === s.length;
}

/** Resolves when `check` holds, polling every 5 ms, or rejects after `ms`. */
export async function until(check: () => boolean, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 5));
  }
}
