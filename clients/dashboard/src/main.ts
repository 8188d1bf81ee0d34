// The live tenant dashboard: sign in with a dev token (from the URL printed by `talkwai up`,
// `#token=...`, or pasted), then everything on the page is live over NATS WebSocket through
// @talkwai/client: the seed's tenant query and pending-tasks query as live queries, the tenant
// room's presence and taskUpdates, the member's notifications, and task commands. Admin
// tokens get the admin room: its presence and system alerts.
import "./style.css";
import { TalkwaiClient, TalkwaiError } from "@talkwai/client";
import type { Notification, Peer, Room, SystemAlert, TaskOutcome, TaskStatus, TaskUpdate } from "@talkwai/client";
import { ago, byId, fill, h, time } from "./dom.js";

interface Config {
  natsWsUrl: string;
  tenant?: string;
}

/** `erased`: the personal fields are `null` for good (member.erase). */
interface Member { id: string; firstName: string | null; lastName: string | null; email: string | null; role: string; status: string; erased?: boolean }
/** A member's name as shown: `(erased)` once its personal data is erased. */
function memberName(m: Member): string {
  return m.erased ? "(erased)" : `${m.firstName ?? ""} ${m.lastName ?? ""}`.trim();
}

interface Agent { id: string; name: string; type: string; status: string; description?: string | null }
interface Task {
  id: string; type: string; status: TaskStatus; priority: string; subject?: string | null;
  /** `null` once the task's content is erased (`erased: true`). */
  fromAddress: string | null; toAddress: string | null; createdAt: number; updatedAt: number;
  erased?: boolean;
  agent?: Agent | null; assignedTo?: Member | null;
  /** What the agent reported when it completed or failed the task (`null`: nothing). */
  outcome?: TaskOutcome | null;
}
interface Tenant { id: string; name: string; domain?: string | null; status: string; members: Member[]; agents: Agent[]; tasks: Task[] }

const params = new URLSearchParams(location.hash.slice(1));
const app = byId("app");

async function loadConfig(): Promise<Config> {
  const res = await fetch("./config.json", { cache: "no-store" });
  if (!res.ok) throw new Error(`config.json: ${res.status}`);
  return (await res.json()) as Config;
}

function signIn(config: Config, error?: string): void {
  const input = h("textarea", { id: "token-input", rows: 4, placeholder: "eyJhbGciOi… (the TALKWAI_TOKEN line of `talkwai up`)" }) as HTMLTextAreaElement;
  const form = h(
    "form",
    {
      class: "card signin",
      onsubmit: ((e: Event) => {
        e.preventDefault();
        const token = input.value.trim();
        if (token) {
          sessionStorage.setItem("talkwai.token", token);
          void start(config, token);
        }
      }) as EventListener,
    },
    h("h1", {}, "TalkwAI dashboard"),
    h("p", { class: "muted" }, "Sign in with a dev token: a member's (tenant view) or an admin's (admin view)."),
    error ? h("p", { class: "error", "data-testid": "signin-error" }, error) : null,
    input,
    h("button", { type: "submit" }, "Sign in"),
    h("p", { class: "muted small" }, `NATS WebSocket: ${config.natsWsUrl}`),
  );
  fill(app, form);
}

async function start(config: Config, token: string): Promise<void> {
  fill(app, h("p", { class: "muted" }, "Connecting…"));
  let db: TalkwaiClient;
  try {
    db = await TalkwaiClient.connect({ servers: config.natsWsUrl, token, tenant: config.tenant });
  } catch (err) {
    signIn(config, `cannot connect to ${config.natsWsUrl}: ${String(err)}`);
    return;
  }
  (window as unknown as { talkwai: TalkwaiClient }).talkwai = db;
  watchConnection(db);
  if (db.claims?.kind === "admin" || params.get("view") === "admin") await adminView(db);
  else await tenantView(db);
}

function watchConnection(db: TalkwaiClient): void {
  void (async () => {
    for await (const s of db.connection.status()) {
      const el = document.getElementById("connection");
      if (!el) continue;
      if (s.type === "disconnect" || s.type === "reconnecting") {
        el.textContent = "reconnecting…";
        el.className = "pill warn";
      } else if (s.type === "reconnect") {
        el.textContent = "live";
        el.className = "pill ok";
      }
    }
  })();
}

function header(title: string, who: string, session: string): HTMLElement {
  return h(
    "header",
    {},
    h("div", {}, h("h1", { "data-testid": "title" }, title), h("span", { class: "muted" }, who)),
    h(
      "div",
      { class: "right" },
      h("span", { id: "connection", class: "pill ok", "data-testid": "connection" }, "live"),
      h("span", { class: "muted small" }, "session "),
      h("code", { id: "session-id", "data-testid": "session-id" }, session),
      h("button", { class: "ghost", onclick: (() => { sessionStorage.removeItem("talkwai.token"); location.hash = ""; location.reload(); }) as EventListener }, "Sign out"),
    ),
  );
}

function panel(title: string, id: string, extra?: HTMLElement): HTMLElement {
  return h("section", { class: "card" }, h("div", { class: "card-head" }, h("h2", {}, title), extra), h("div", { id, "data-testid": id }));
}

function statusBadge(status: string): HTMLElement {
  return h("span", { class: `badge ${status}` }, status.replace("_", " "));
}

function showError(err: unknown): void {
  const text = err instanceof TalkwaiError ? `${err.code}: ${err.message}${err.field ? ` (${err.field})` : ""}` : String(err);
  const el = document.getElementById("toast");
  if (!el) return;
  el.textContent = text;
  el.className = "toast show";
  setTimeout(() => (el.className = "toast"), 5000);
}

async function tenantView(db: TalkwaiClient): Promise<void> {
  const tenantId = db.tenant;
  if (tenantId === undefined) {
    signIn(await loadConfig(), "this token names no tenant");
    return;
  }
  const memberId = params.get("member") ?? undefined;
  const room = db.room("tenant", tenantId);
  let tenant: Tenant | undefined;
  let peers: Peer[] = [];
  const statusOverride = new Map<string, { status: TaskStatus; seq: number }>();

  const form = h(
    "form",
    { class: "create", "data-testid": "create-task", onsubmit: ((e: Event) => void createTask(e)) as EventListener },
    h("select", { name: "type" }, h("option", {}, "call"), h("option", {}, "email"), h("option", {}, "other")),
    h("select", { name: "priority" }, h("option", {}, "medium"), h("option", {}, "low"), h("option", {}, "high"), h("option", {}, "urgent")),
    h("input", { name: "fromAddress", value: "+15550001111", required: true, "aria-label": "from" }),
    h("input", { name: "toAddress", value: "+15550002222", required: true, "aria-label": "to" }),
    h("input", { name: "subject", placeholder: "Subject", "data-testid": "new-task-subject" }),
    h("button", { type: "submit", "data-testid": "create-task-button" }, "Create task"),
  ) as HTMLFormElement;

  fill(
    app,
    header("…", `signed in as ${db.claims?.role ?? "member"} · tenant ${tenantId}`, room.presence.sessionId),
    h(
      "main",
      { class: "grid" },
      h("div", { class: "col wide" }, panel("Newest tasks", "tasks", form), panel("Pending", "pending")),
      h("div", { class: "col" }, panel("Members", "members"), panel("Online now", "online"), panel("Agents", "agents"), panel("Task activity", "activity"), panel("Notifications", "notifications")),
    ),
    h("div", { id: "toast", class: "toast" }),
  );

  async function createTask(e: Event): Promise<void> {
    e.preventDefault();
    const data = new FormData(form);
    const subject = String(data.get("subject") ?? "").trim();
    try {
      await db.createTask({
        type: String(data.get("type")) as "call",
        priority: String(data.get("priority")) as "medium",
        fromAddress: String(data.get("fromAddress")),
        toAddress: String(data.get("toAddress")),
        subject: subject || null,
      });
      (form.elements.namedItem("subject") as HTMLInputElement).value = "";
    } catch (err) {
      showError(err);
    }
  }

  async function act(action: "startTask" | "completeTask" | "failTask", id: string): Promise<void> {
    try {
      if (action === "failTask") await db.failTask({ id, reason: "failed from the dashboard" });
      else await db[action]({ id });
    } catch (err) {
      showError(err);
    }
  }

  function status(task: Task): TaskStatus {
    const o = statusOverride.get(task.id);
    return o !== undefined ? o.status : task.status;
  }

  function taskRow(task: Task): HTMLElement {
    const s = status(task);
    return h(
      "tr",
      { "data-testid": `task-${task.id}`, "data-status": s },
      h("td", {}, h("div", { class: "subject" }, task.subject ?? h("span", { class: "muted" }, task.erased ? "(erased)" : "(no subject)")), h("div", { class: "muted small" }, task.erased ? `${task.type} · (erased)` : `${task.type} · ${task.fromAddress} → ${task.toAddress}`), outcomeLine(task)),
      h("td", {}, statusBadge(s)),
      h("td", {}, h("span", { class: `prio ${task.priority}` }, task.priority)),
      h("td", { class: "small" }, task.agent?.name ?? "", task.assignedTo ? h("div", { class: "muted" }, memberName(task.assignedTo)) : null),
      h("td", { class: "muted small" }, ago(task.createdAt)),
      h(
        "td",
        { class: "actions" },
        s === "pending" ? h("button", { "data-testid": `start-${task.id}`, onclick: (() => void act("startTask", task.id)) as EventListener }, "Start") : null,
        s === "in_progress" ? h("button", { "data-testid": `complete-${task.id}`, onclick: (() => void act("completeTask", task.id)) as EventListener }, "Complete") : null,
        s === "in_progress" ? h("button", { class: "ghost", onclick: (() => void act("failTask", task.id)) as EventListener }, "Fail") : null,
      ),
    );
  }

  // The reported outcome under a completed or failed task: summary, duration, transcript.
  function outcomeLine(task: Task): HTMLElement | null {
    const o = task.outcome;
    if (!o) return null;
    const details = [o.durationSecs != null ? `${o.durationSecs} s` : null, o.transcriptRef ?? null].filter((d) => d !== null);
    return h(
      "div",
      { class: "outcome small", "data-testid": `outcome-${task.id}` },
      h("span", {}, o.summary),
      details.length > 0 ? h("span", { class: "muted" }, ` · ${details.join(" · ")}`) : null,
    );
  }

  function taskTable(tasks: Task[]): HTMLElement {
    if (tasks.length === 0) return h("p", { class: "muted" }, "No tasks.");
    return h("table", {}, h("tbody", {}, tasks.map(taskRow)));
  }

  function renderTenant(): void {
    if (!tenant) return;
    const title = document.querySelector("[data-testid=title]");
    if (title) title.textContent = tenant.name;
    fill(byId("tasks"), taskTable(tenant.tasks));
    const online = new Set(peers.map((p) => (p.data as { memberId?: string }).memberId).filter(Boolean));
    fill(
      byId("members"),
      h("ul", { class: "list" }, tenant.members.map((m) =>
        h("li", { "data-testid": `member-${m.id}` }, h("span", { class: online.has(m.id) ? "dot on" : "dot" }), memberName(m), h("span", { class: "muted small" }, ` ${m.role}`)))),
    );
    fill(
      byId("agents"),
      h("ul", { class: "list" }, tenant.agents.map((a) => h("li", {}, h("span", { class: `dot ${a.status === "active" ? "on" : ""}` }), a.name, h("span", { class: "muted small" }, ` ${a.type} · ${a.status}`)))),
    );
  }

  function renderPeers(): void {
    fill(
      byId("online"),
      peers.length === 0
        ? h("p", { class: "muted" }, "Nobody.")
        : h("ul", { class: "list" }, peers.map((p) => {
            const d = p.data as { name?: string };
            const me = p.sessionId === room.presence.sessionId;
            return h("li", { "data-testid": `peer-${p.sessionId}` }, h("span", { class: "dot on" }), d.name ?? p.userId, me ? h("span", { class: "muted small" }, " (you)") : null, h("span", { class: "muted small" }, ` ${p.kind} · since ${time(p.joinedAt)}`));
          })),
    );
    renderTenant();
  }

  const tenantQuery = {
    tenants: {
      $: { where: { id: tenantId } },
      members: { $: { where: { status: "active" } } },
      agents: {},
      tasks: { $: { order: { createdAt: "desc" as const }, limit: 20 }, agent: {}, assignedTo: {} },
    },
  };
  const live = db.subscribeQuery<{ tenants: Tenant[] }>(tenantQuery, ({ data }) => {
    tenant = data.tenants[0];
    renderTenant();
  }, { onError: showError });
  const pendingQuery = {
    tasks: {
      $: { where: { and: [{ "tenant.id": tenantId }, { status: "pending" }] }, order: { createdAt: "desc" as const } },
      agent: {},
      assignedTo: {},
    },
  };
  db.subscribeQuery<{ tasks: Task[] }>(pendingQuery, ({ data }) => fill(byId("pending"), taskTable(data.tasks)), { onError: showError });

  const activity: TaskUpdate[] = [];
  room.subscribeTopic("taskUpdates", (u) => {
    const known = statusOverride.get(u.taskId);
    if (u.status && (!known || known.seq < u.seq)) statusOverride.set(u.taskId, { status: u.status, seq: u.seq });
    activity.unshift(u);
    activity.length = Math.min(activity.length, 15);
    fill(byId("activity"), h("ul", { class: "feed" }, activity.map((a) => h("li", { "data-testid": `update-${a.taskId}-${a.action}` }, h("code", {}, a.taskId.slice(0, 8)), ` ${a.action} `, a.status ? statusBadge(a.status) : null, h("span", { class: "muted small" }, ` ${time(a.timestamp)}`)))));
    renderTenant();
  });

  const notifications: Notification[] = [];
  room.subscribeTopic(memberId ? `notifications.${memberId}` : "notifications.*", (n) => {
    notifications.unshift(n);
    notifications.length = Math.min(notifications.length, 10);
    const who = (id: string) => tenant?.members.find((m) => m.id === id)?.firstName ?? id.slice(0, 8);
    fill(byId("notifications"), h("ul", { class: "feed" }, notifications.map((x) => h("li", {}, h("strong", {}, x.kind), ` task ${x.taskId.slice(0, 8)}`, memberId ? null : h("span", { class: "muted small" }, ` for ${who(x.memberId)}`), x.reason ? h("span", { class: "muted" }, ` — ${x.reason}`) : null, h("span", { class: "muted small" }, ` ${time(x.timestamp)}`)))));
  });
  fill(byId("notifications"), h("p", { class: "muted" }, memberId ? "Nothing for you yet." : "Nothing yet (all members of the tenant)."));
  fill(byId("activity"), h("p", { class: "muted" }, "Waiting for task changes…"));

  room.presence.subscribe((list) => {
    peers = list;
    renderPeers();
  });
  const name = params.get("name") ?? (db.claims?.role ? `${db.claims.role} ${db.claims.sub.slice(0, 4)}` : "member");
  await room.presence.set({ name, memberId: memberId ?? null, page: "dashboard" }).catch(showError);
  addEventListener("pagehide", () => void room.presence.leave().catch(() => undefined));
  await live.ready.catch(showError);
}

async function adminView(db: TalkwaiClient): Promise<void> {
  const room: Room = db.room("admin", "global");
  fill(
    app,
    header("Admin room", `signed in as admin ${db.claims?.sub ?? ""}`, room.presence.sessionId),
    h("main", { class: "grid" }, h("div", { class: "col wide" }, panel("System alerts", "alerts")), h("div", { class: "col" }, panel("Admins online", "online"))),
    h("div", { id: "toast", class: "toast" }),
  );
  fill(byId("alerts"), h("p", { class: "muted" }, "No alerts since you opened this page."));
  const alerts: SystemAlert[] = [];
  room.subscribeTopic("systemAlerts", (a) => {
    alerts.unshift(a);
    alerts.length = Math.min(alerts.length, 50);
    fill(byId("alerts"), h("ul", { class: "feed" }, alerts.map((x) => h("li", {}, h("strong", {}, x.kind), ` ${x.message}`, x.tenantId ? h("span", { class: "muted small" }, ` tenant ${x.tenantId}`) : null, h("span", { class: "muted small" }, ` ${time(x.timestamp)}`)))));
  });
  room.presence.subscribe((peers) =>
    fill(byId("online"), h("ul", { class: "list" }, peers.map((p) => h("li", { "data-testid": `peer-${p.sessionId}` }, h("span", { class: "dot on" }), String((p.data as { name?: string }).name ?? p.userId), h("span", { class: "muted small" }, ` since ${time(p.joinedAt)}`))))),
  );
  await room.presence.set({ name: params.get("name") ?? "Admin", page: "admin" }).catch(showError);
  addEventListener("pagehide", () => void room.presence.leave().catch(() => undefined));
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = await loadConfig();
  } catch (err) {
    fill(app, h("p", { class: "error" }, `cannot load the dashboard config: ${String(err)}`));
    return;
  }
  const token = params.get("token") ?? sessionStorage.getItem("talkwai.token");
  if (token) {
    sessionStorage.setItem("talkwai.token", token);
    await start(config, token);
  } else {
    signIn(config);
  }
}

void main();
