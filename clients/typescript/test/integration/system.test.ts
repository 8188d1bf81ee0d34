// Against the real system: `talkwai up` started by crates/talkwai-cli/tests/browser.rs, which
// passes its URLs and tokens in the environment. Skipped (with a message) without them.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { connect } from "@nats-io/transport-node";
import { InvalidTransitionError, TalkwaiClient, UnavailableError, ValidationFailedError, id, inboxPrefixFor } from "../../src/index.js";
import type { Peer, TaskUpdate } from "../../src/index.js";

const env = process.env;
const NATS = env.TALKWAI_NATS_URL;
const TOKEN = env.TALKWAI_TOKEN;
const TENANT = env.TALKWAI_TENANT;
const skip = NATS === undefined || TOKEN === undefined || TENANT === undefined ? "needs TALKWAI_NATS_URL, TALKWAI_TOKEN and TALKWAI_TENANT (run by crates/talkwai-cli/tests/browser.rs)" : false;

async function until<T>(what: string, check: () => T | undefined | false, ms = 5000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const task = (subject: string) => ({ type: "call" as const, priority: "high" as const, fromAddress: "+15550001111", toAddress: "+15550002222", subject });

describe("the TypeScript client against talkwai up", { skip }, () => {
  let db: TalkwaiClient;

  before(async () => {
    db = new TalkwaiClient(await connect({ servers: NATS, token: TOKEN, inboxPrefix: inboxPrefixFor(TOKEN), maxReconnectAttempts: -1, reconnectTimeWait: 100 }), { token: TOKEN });
  });
  after(async () => {
    await db?.close();
  });

  it("answers the seed's tenant dashboard query", async () => {
    const { data, seq } = await db.query<{ tenants: { name: string; tasks: unknown[]; members: unknown[] }[] }>({
      tenants: {
        $: { where: { id: TENANT } },
        members: { $: { where: { status: "active" } } },
        agents: {},
        tasks: { $: { order: { createdAt: "desc" }, limit: 20 }, agent: {}, assignedTo: {} },
      },
    });
    assert.equal(data.tenants[0]?.name, "Acme Corp");
    assert.ok((data.tenants[0]?.tasks.length ?? 0) >= 4);
    assert.ok(seq > 0);
  });

  it("creates, starts and completes a task, reading its own writes, idempotently", async () => {
    const commandId = id();
    const created = await db.createTask(task("ts client"), { commandId });
    const again = await db.createTask({ ...task("ts client"), id: created.id }, { commandId });
    assert.equal(again.seq, created.seq, "the same command id answers the original outcome");
    assert.equal(again.version, 1);
    const { data } = await db.query<{ tasks: { id: string; status: string }[] }>({ tasks: { $: { where: { id: created.id } } } }, { minSeq: created.seq });
    assert.equal(data.tasks[0]?.status, "pending");
    await assert.rejects(db.completeTask({ id: created.id }), InvalidTransitionError);
    await db.startTask({ id: created.id });
    const done = await db.completeTask({ id: created.id });
    assert.equal(done.version, 3);
  });

  it("refuses bad input and other tenants with typed errors", async () => {
    await assert.rejects(db.createTask({ ...task("x"), type: "fax" as never }), (err: unknown) => {
      assert.ok(err instanceof ValidationFailedError);
      assert.equal(err.field, "type");
      return true;
    });
    // Another tenant's subject: nats-server's fence (the token's tenant, from talkwai up's auth
    // callout) refuses the request before any service sees it.
    await assert.rejects(db.query({ tasks: {} }, { scope: "b1000000-0000-4000-8000-00000000ffff" }), (err: unknown) => {
      assert.ok(err instanceof UnavailableError, String(err));
      assert.match(err.message, /Permissions Violation/);
      return true;
    });
  });

  it("delivers live query changes and task updates, also after a reconnect", async () => {
    const room = db.room("tenant", TENANT as string);
    const updates: TaskUpdate[] = [];
    const stop = room.subscribeTopic("taskUpdates", (u) => updates.push(u));
    let latest: { id: string; status: string }[] = [];
    const live = db.subscribeQuery<{ tasks: { id: string; status: string }[] }>(
      { tasks: { $: { where: { status: "pending" }, order: { createdAt: "desc" }, limit: 50 } } },
      ({ data }) => {
        latest = data.tasks;
      },
    );
    await live.ready;
    const first = await db.createTask(task("live 1"));
    await until("the live query to show the new task", () => latest.some((t) => t.id === first.id));
    await until("a taskUpdates message", () => updates.some((u) => u.taskId === first.id && u.action === "created"));

    await (db.connection as unknown as { reconnect(): Promise<void> }).reconnect();
    await until("the live query to subscribe again", () => live.subscriptions >= 2);
    const second = await db.createTask(task("live 2"));
    await until("the live query to show a task created after the reconnect", () => latest.some((t) => t.id === second.id));
    await db.startTask({ id: second.id });
    await until("the started task to leave the pending query", () => !latest.some((t) => t.id === second.id));
    await until("a started update", () => updates.some((u) => u.taskId === second.id && u.status === "in_progress"));
    stop();
    await live.unsubscribe();
  });

  it("joins, lists and leaves the tenant room's presence", async () => {
    const room = db.room("tenant", TENANT as string);
    let peers: Peer[] = [];
    const stop = room.presence.subscribe((list) => {
      peers = list;
    });
    const me = await room.presence.set({ name: "integration" });
    assert.equal(me.sessionId, room.presence.sessionId);
    await until("our own join", () => peers.some((p) => p.sessionId === room.presence.sessionId));
    const listed = await room.presence.get();
    assert.ok(listed.some((p) => p.sessionId === room.presence.sessionId && p.data.name === "integration"));
    await room.presence.set({ page: "tests" });
    await until("the update", () => peers.some((p) => p.sessionId === room.presence.sessionId && p.data.page === "tests"));
    await room.leave();
    assert.ok(!(await room.presence.get()).some((p) => p.sessionId === room.presence.sessionId));
    stop();
  });
});
