import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  CHANNELS,
  COMMAND_ACTIONS,
  COMMAND_HELPERS,
  COMMAND_SUBJECTS,
  ConflictError,
  ForbiddenError,
  InternalError,
  InvalidTransitionError,
  NotFoundError,
  TalkwaiClient,
  TalkwaiError,
  TooManyRowsError,
  UnavailableError,
  ValidationFailedError,
  errorFromBody,
  fill,
  inboxPrefixFor,
  isClientTopic,
  isPlatformAction,
  readClaims,
  subject,
} from "../../src/index.js";
import type { ErrorCode, Peer, TaskActivity, TaskUpdate } from "../../src/index.js";
import { FakeNats, timeout, until } from "./fake.js";

const TENANT = "a0000000-0000-4000-8000-000000000001";

/** An unsigned JWT with these claims (the client reads claims; services verify). */
function jwt(claims: Record<string, unknown>): string {
  const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
  return `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}.c2ln`;
}

const MEMBER = jwt({ sub: "b0000000-0000-4000-8000-000000000001", kind: "member", tenant: TENANT, role: "owner" });

function client(fake: FakeNats, token = MEMBER): TalkwaiClient {
  return new TalkwaiClient(fake.transport(), { token });
}

const accepted = (id = "x") => ({ ok: true, id, version: 1, events: [], seq: 42 });

describe("errors", () => {
  it("maps every wire code to its class, keeping message and field", () => {
    const codes: [ErrorCode, new (...a: never[]) => TalkwaiError][] = [
      ["validation_failed", ValidationFailedError],
      ["not_found", NotFoundError],
      ["conflict", ConflictError],
      ["invalid_transition", InvalidTransitionError],
      ["forbidden", ForbiddenError],
      ["unavailable", UnavailableError],
      ["too_many_rows", TooManyRowsError],
      ["internal", InternalError],
    ];
    for (const [code, cls] of codes) {
      const err = errorFromBody({ code, message: "why", field: "type" });
      assert.ok(err instanceof cls, `${code} -> ${cls.name}`);
      assert.ok(err instanceof TalkwaiError);
      assert.equal(err.code, code);
      assert.equal(err.message, "why");
      assert.equal(err.field, "type");
      assert.equal(err.name, cls.name);
    }
    assert.ok(errorFromBody({ code: "conflict", message: "" }).retryable);
    assert.ok(!errorFromBody({ code: "forbidden", message: "" }).retryable);
    const unknown = errorFromBody({ code: "brand_new", message: "m" });
    assert.ok(unknown instanceof InternalError);
    assert.match(unknown.message, /brand_new/);
  });
});

describe("tokens", () => {
  it("reads a member token's claims and ignores opaque tokens", () => {
    assert.equal(readClaims(MEMBER)?.tenant, TENANT);
    assert.equal(readClaims(MEMBER)?.kind, "member");
    assert.equal(readClaims("platform-token"), undefined);
    assert.equal(new TalkwaiClient(new FakeNats().transport(), { token: MEMBER }).tenant, TENANT);
  });

  it("gives a member's connection its own reply-inbox prefix", () => {
    assert.equal(inboxPrefixFor(MEMBER), `_INBOX.${readClaims(MEMBER)?.sub}`);
    assert.equal(inboxPrefixFor(jwt({ sub: "u-1", kind: "admin", exp: 9999999999 })), "_INBOX");
    assert.equal(inboxPrefixFor("platform-token"), "_INBOX");
    assert.equal(inboxPrefixFor(undefined), "_INBOX");
  });
});

describe("commands", () => {
  it("has a helper for every command action of the contract", () => {
    assert.deepEqual(new Set(Object.values(COMMAND_HELPERS)), new Set(COMMAND_ACTIONS));
    const c = client(new FakeNats());
    for (const name of Object.keys(COMMAND_HELPERS)) {
      assert.equal(typeof (c as unknown as Record<string, unknown>)[name], "function", name);
    }
  });

  it("sends tenant commands on the token's tenant with the token and a command id", async () => {
    const fake = new FakeNats().on(/^talkwai\.cmd\./, () => accepted());
    const reply = await client(fake).createTask({ type: "call", fromAddress: "+15550001111", toAddress: "+15550002222" });
    assert.equal(reply.seq, 42);
    const [req] = fake.requests;
    assert.equal(req?.subject, `talkwai.cmd.${TENANT}.task.create`);
    assert.equal(req?.headers.Authorization, `Bearer ${MEMBER}`);
    assert.match(req?.headers["Talkwai-Command-Id"] ?? "", /^[0-9a-f-]{36}$/);
    assert.match((req?.body as { id: string }).id, /^[0-9a-f-]{36}$/, "create helpers choose the id");
  });

  it("takes helper names, subjects and scopes from the contract", () => {
    // Helper names follow one rule: the verb, the aggregate, the rest.
    assert.equal(COMMAND_HELPERS.createTask, "task.create");
    assert.equal(COMMAND_HELPERS.linkTaskAgent, "task.linkAgent");
    assert.equal(COMMAND_HELPERS.setAdminPermissions, "admin.setPermissions");
    assert.equal(COMMAND_HELPERS.unlinkMemberUser, "member.unlinkUser");
    // Platform actions are tenant creation, admins and users; the others take the tenant.
    for (const action of COMMAND_ACTIONS) {
      const platform = action === "tenant.create" || action.startsWith("admin.") || action.startsWith("user.");
      assert.equal(isPlatformAction(action), platform, action);
      assert.equal(
        COMMAND_SUBJECTS[action],
        platform ? `talkwai.cmd.platform.${action}` : `talkwai.cmd.{tenant}.${action}`,
      );
    }
    assert.equal(subject("qry.subscribe", { tenant: TENANT }), `talkwai.qry.${TENANT}.subscribe`);
    assert.equal(
      subject("room.presence", { roomType: "tenant", roomId: TENANT, op: "join" }),
      `talkwai.room.tenant.${TENANT}.presence.join`,
    );
    assert.equal(CHANNELS["room.topic.taskUpdates"], "talkwai.room.{roomType}.{roomId}.topic.taskUpdates");
    assert.throws(() => fill(CHANNELS.qry, {}), /needs \{tenant\}/);
  });

  it("sends platform commands on talkwai.cmd.platform", async () => {
    const fake = new FakeNats().on(/^talkwai\.cmd\./, () => accepted());
    await client(fake).createTenant({ name: "Beta" });
    await client(fake).createUser({ email: "a@b.c" });
    assert.deepEqual(
      fake.requests.map((r) => r.subject),
      ["talkwai.cmd.platform.tenant.create", "talkwai.cmd.platform.user.create"],
    );
  });

  it("retries a lost reply with the same command id", async () => {
    let calls = 0;
    const fake = new FakeNats().on(/task\.start$/, () => (++calls < 3 ? timeout() : accepted("t1")));
    const reply = await client(fake).startTask({ id: "t1" }, { timeoutMs: 10 });
    assert.equal(reply.id, "t1");
    assert.equal(fake.requests.length, 3);
    const ids = new Set(fake.requests.map((r) => r.headers["Talkwai-Command-Id"]));
    assert.equal(ids.size, 1, "every attempt carries the same command id");
  });

  it("retries conflict and unavailable answers, not refusals", async () => {
    let calls = 0;
    const fake = new FakeNats()
      .on(/task\.complete$/, () => (++calls === 1 ? { ok: false, error: { code: "conflict", message: "raced" } } : accepted()))
      .on(/task\.fail$/, () => ({ ok: false, error: { code: "invalid_transition", message: "pending", field: null } }));
    await client(fake).completeTask({ id: "t" });
    assert.equal(calls, 2);
    await assert.rejects(client(fake).failTask({ id: "t", reason: "x" }), (err: unknown) => {
      assert.ok(err instanceof InvalidTransitionError);
      assert.equal(err.code, "invalid_transition");
      return true;
    });
    assert.equal(fake.requests.filter((r) => r.subject.endsWith("task.fail")).length, 1);
  });

  it("gives up after the attempts with a transport error", async () => {
    const fake = new FakeNats().on(/task\.start$/, () => timeout());
    await assert.rejects(client(fake).startTask({ id: "t" }, { timeoutMs: 5, attempts: 2 }), (err: unknown) => {
      assert.ok(err instanceof UnavailableError);
      assert.equal(err.transport, true);
      return true;
    });
    assert.equal(fake.requests.length, 2);
  });

  it("needs a tenant for tenant commands when the token has none", () => {
    assert.throws(() => new TalkwaiClient(new FakeNats().transport(), { token: "platform" }).query({ tasks: {} }), ValidationFailedError);
  });
});

describe("queries", () => {
  it("sends the query with minSeq and returns the answer", async () => {
    const fake = new FakeNats().on(/^talkwai\.qry\./, () => ({ ok: true, data: { tasks: [{ id: "1" }] }, pageInfo: {}, seq: 7 }));
    const result = await client(fake).query({ tasks: { $: { limit: 1 } } }, { minSeq: 5 });
    assert.deepEqual(result.data, { tasks: [{ id: "1" }] });
    assert.equal(result.seq, 7);
    assert.equal(fake.requests[0]?.subject, `talkwai.qry.${TENANT}`);
    assert.deepEqual(fake.requests[0]?.body, { query: { tasks: { $: { limit: 1 } } }, minSeq: 5 });
  });

  it("turns a refused query into its typed error", async () => {
    const fake = new FakeNats().on(/^talkwai\.qry\./, () => ({
      ok: false,
      error: { code: "validation_failed", message: "unknown field", field: "tasks.$.where.colour" },
    }));
    await assert.rejects(client(fake).query({ tasks: { $: { where: { colour: "red" } } } }), (err: unknown) => {
      assert.ok(err instanceof ValidationFailedError);
      assert.equal(err.field, "tasks.$.where.colour");
      return true;
    });
  });
});

describe("live queries", () => {
  function liveFake() {
    let n = 0;
    const fake = new FakeNats()
      .on(/\.subscribe$/, () => {
        n += 1;
        return {
          ok: true,
          subscription: `s${n}`,
          subject: `talkwai.qry.${TENANT}.live.s${n}`,
          control: `talkwai.qry.${TENANT}.live.s${n}.ctl`,
          ttlMs: 60_000,
          data: { tasks: [`first-${n}`] },
          pageInfo: {},
          seq: 10 * n,
        };
      })
      .on(/\.ctl$/, () => ({ ok: true, ttlMs: 60_000 }));
    return fake;
  }

  it("delivers the first answer, then changes, dropping stale and foreign updates", async () => {
    const fake = liveFake();
    const seen: unknown[] = [];
    const live = client(fake).subscribeQuery({ tasks: {} }, (r) => seen.push(r.data));
    await live.ready;
    assert.deepEqual(seen, [{ tasks: ["first-1"] }]);
    const subject = `talkwai.qry.${TENANT}.live.s1`;
    fake.deliver(subject, { subscription: "s1", data: { tasks: ["a"] }, pageInfo: {}, seq: 12 });
    fake.deliver(subject, { subscription: "s1", data: { tasks: ["old"] }, pageInfo: {}, seq: 11 });
    fake.deliver(subject, { subscription: "other", data: { tasks: ["x"] }, pageInfo: {}, seq: 99 });
    assert.deepEqual(seen, [{ tasks: ["first-1"] }, { tasks: ["a"] }]);
    await live.unsubscribe();
    assert.ok(!fake.subscribed(subject));
    assert.deepEqual(fake.requests.at(-1)?.body, { op: "unsubscribe" });
  });

  it("reports an update the server cannot answer as a typed error, then delivers again", async () => {
    const fake = liveFake();
    const seen: unknown[] = [];
    const errors: TalkwaiError[] = [];
    const live = client(fake).subscribeQuery({ tasks: {} }, (r) => seen.push(r.data), { onError: (e) => errors.push(e) });
    await live.ready;
    const subject = `talkwai.qry.${TENANT}.live.s1`;
    const error = { code: "too_many_rows", message: "the answer would hold more than 10000 rows", field: "tasks" };
    fake.deliver(subject, { subscription: "s1", ok: false, error, seq: 12 });
    assert.deepEqual(seen, [{ tasks: ["first-1"] }], "no data from an error update");
    assert.equal(errors.length, 1);
    assert.ok(errors[0] instanceof TooManyRowsError);
    assert.equal(errors[0]?.field, "tasks");
    // The same answer as before the error is delivered again: the view must leave its error state.
    fake.deliver(subject, { subscription: "s1", ok: true, data: { tasks: ["first-1"] }, pageInfo: {}, seq: 13 });
    assert.deepEqual(seen, [{ tasks: ["first-1"] }, { tasks: ["first-1"] }]);
    await live.unsubscribe();
  });

  it("subscribes again after a reconnect and keeps delivering", async () => {
    const fake = liveFake();
    const seen: unknown[] = [];
    const live = client(fake).subscribeQuery({ tasks: {} }, (r) => seen.push(r.data));
    await live.ready;
    fake.emit({ type: "reconnect", server: "ws://x" });
    await until(() => live.subscriptions === 2);
    assert.ok(!fake.subscribed(`talkwai.qry.${TENANT}.live.s1`), "the old subject is dropped");
    assert.ok(fake.subscribed(`talkwai.qry.${TENANT}.live.s2`));
    fake.deliver(`talkwai.qry.${TENANT}.live.s2`, { subscription: "s2", data: { tasks: ["after"] }, pageInfo: {}, seq: 30 });
    assert.deepEqual(seen, [{ tasks: ["first-1"] }, { tasks: ["first-2"] }, { tasks: ["after"] }]);
    await live.unsubscribe();
  });

  it("subscribes again when a renewal is not answered", async () => {
    const fake = liveFake();
    fake.on(/\.subscribe$/, () => ({
      ok: true,
      subscription: "s9",
      subject: "talkwai.qry.t.live.s9",
      control: "talkwai.qry.t.live.s9.ctl",
      ttlMs: 40,
      data: {},
      pageInfo: {},
      seq: 1,
    }));
    fake.on(/\.ctl$/, () => timeout());
    const live = client(fake).subscribeQuery({ tasks: {} }, () => undefined);
    await live.ready;
    await until(() => live.subscriptions >= 2, 5000);
    await live.unsubscribe();
  });

  it("rejects ready with the typed error of a refused subscription", async () => {
    const fake = new FakeNats().on(/\.subscribe$/, () => ({ ok: false, error: { code: "forbidden", message: "no" } }));
    const live = client(fake).subscribeQuery({ tasks: {} }, () => undefined);
    await assert.rejects(live.ready, ForbiddenError);
    await live.unsubscribe();
  });
});

describe("rooms", () => {
  it("publishes client topics, refuses the service topics, and subscribes dropping repeats", () => {
    const fake = new FakeNats();
    const room = client(fake).room("tenant", TENANT);
    // The seed's notifyTaskUpdate body, typed by proto/schemas/rooms/taskActivity.json.
    const activity: TaskActivity = { taskId: "t", action: "started", userId: "u", timestamp: 1 };
    room.publishTopic("taskActivity", activity);
    room.publishTopic("cursors", { x: 1 });
    assert.deepEqual(
      fake.published.map((p) => p.subject),
      [`talkwai.room.tenant.${TENANT}.topic.taskActivity`, `talkwai.room.tenant.${TENANT}.topic.cursors`],
    );
    for (const topic of ["taskUpdates", "systemAlerts", "notifications", `notifications.${TENANT}`]) {
      // @ts-expect-error service topics take no client message
      assert.throws(() => room.publishTopic(topic as "taskUpdates", activity), (e: unknown) => e instanceof ForbiddenError && e.field === "topic");
    }
    assert.equal(fake.published.length, 2, "nothing is sent on a service topic");
    assert.ok(isClientTopic("taskActivity") && !isClientTopic("taskUpdates"));
    const got: TaskUpdate[] = [];
    const stop = room.subscribeTopic("taskUpdates", (u) => got.push(u));
    const update = { taskId: "t", action: "started", status: "in_progress", userId: null, timestamp: 1, seq: 5 };
    fake.deliver(`talkwai.room.tenant.${TENANT}.topic.taskUpdates`, update);
    fake.deliver(`talkwai.room.tenant.${TENANT}.topic.taskUpdates`, update);
    assert.equal(got.length, 1, "a redelivered seq is dropped");
    fake.deliver(`talkwai.room.tenant.${TENANT}.topic.taskUpdates`, { ...update, seq: 9 });
    fake.deliver(`talkwai.room.tenant.${TENANT}.topic.taskUpdates`, { ...update, seq: 7 });
    assert.deepEqual(got.map((u) => u.seq), [5, 9], "a late repeat below the last taken is dropped");
    const alerts: unknown[] = [];
    const stopAlerts = room.subscribeTopic("systemAlerts", (a) => alerts.push(a));
    const alertsSubject = "talkwai.room.tenant." + TENANT + ".topic.systemAlerts";
    fake.deliver(alertsSubject, { kind: "deadLetter", message: "m", details: {}, timestamp: 1, seq: 50 });
    fake.deliver(alertsSubject, { kind: "tenantSuspended", message: "m", details: {}, timestamp: 1, seq: 40 });
    fake.deliver(alertsSubject, { kind: "projectionLag", message: "m", details: {}, timestamp: 1 });
    assert.equal(alerts.length, 3, "deadLetter alerts count apart; alerts without seq always pass");
    stopAlerts();
    stop();
    fake.deliver(`talkwai.room.tenant.${TENANT}.topic.taskUpdates`, { ...update, seq: 10 });
    assert.equal(got.length, 2, "nothing after stop");
  });

  it("joins on the first set, updates after, heartbeats and joins again when the session is gone", async () => {
    const peer = (data: Record<string, unknown>): Peer => ({ sessionId: "s", userId: "u", kind: "member", data, joinedAt: 1, updatedAt: 1 });
    let heartbeats = 0;
    const fake = new FakeNats()
      .on(/presence\.join$/, (r) => ({ ok: true, peer: peer((r.body as { data: Record<string, unknown> }).data), peers: [], ttlSecs: 0.3 }))
      .on(/presence\.update$/, () => ({ ok: true, peer: peer({ name: "Olive", page: "tasks" }) }))
      .on(/presence\.heartbeat$/, () => (++heartbeats === 1 ? { ok: true } : { ok: false, error: { code: "not_found", message: "join again" } }))
      .on(/presence\.leave$/, () => ({ ok: true }));
    const room = client(fake).room("tenant", TENANT);
    await room.presence.set({ name: "Olive" });
    await room.presence.set({ page: "tasks" });
    const ops = () => fake.requests.map((r) => r.subject.split(".").at(-1));
    assert.deepEqual(ops(), ["join", "update"]);
    assert.equal(fake.requests[0]?.headers.Authorization, `Bearer ${MEMBER}`);
    await until(() => ops().filter((o) => o === "join").length === 2, 3000);
    const rejoin = fake.requests.filter((r) => r.subject.endsWith("join")).at(-1);
    assert.deepEqual((rejoin?.body as { data: unknown }).data, { name: "Olive", page: "tasks" }, "joins again with the merged data");
    await room.leave();
    assert.equal(ops().at(-1), "leave");
  });

  it("keeps the peer list from get and presence events", async () => {
    const p = (sessionId: string): Peer => ({ sessionId, userId: "u", kind: "member", data: {}, joinedAt: 1, updatedAt: 1 });
    const fake = new FakeNats().on(/presence\.get$/, () => ({ ok: true, peers: [p("a")] }));
    const room = client(fake).room("tenant", TENANT);
    let peers: Peer[] = [];
    room.presence.subscribe((list) => {
      peers = list;
    });
    await until(() => peers.length === 1);
    const events = `talkwai.room.tenant.${TENANT}.presence.events`;
    fake.deliver(events, { op: "join", sessionId: "b", peer: p("b"), seq: 3 });
    assert.deepEqual(peers.map((x) => x.sessionId).sort(), ["a", "b"]);
    fake.deliver(events, { op: "leave", sessionId: "a", reason: "expired", seq: 4 });
    assert.deepEqual(peers.map((x) => x.sessionId), ["b"]);
    fake.deliver(events, { op: "join", sessionId: "b", peer: p("b"), seq: 3 });
    fake.deliver(events, { op: "leave", sessionId: "b", reason: "left", seq: 5 });
    fake.deliver(events, { op: "update", sessionId: "b", peer: p("b"), seq: 5 });
    assert.deepEqual(peers, [], "older or repeated revisions are dropped");
    room.presence.close();
  });
});
