// The dashboard in headless Debian Chromium (playwright-core, no browser download) against a
// real `talkwai up`, run by crates/talkwai-cli/tests/browser.rs, which passes the URLs and
// tokens in the environment:
//   1. a task created from this process (over NATS, not the page) appears on the page and
//      changes status there within a second, command by command;
//   2. a page of another tenant sees nothing of it;
//   3. two pages of the same tenant see each other in presence, and a closed one disappears
//      within the presence TTL;
//   4. the page creates and starts a task itself; the admin view shows the admin room.
// Screenshots go to $TALKWAI_ARTIFACTS (and the README's to $TALKWAI_DOCS_SCREENSHOT when set).
import { mkdir, copyFile } from "node:fs/promises";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { chromium } from "playwright-core";
import { TalkwaiClient } from "@talkwai/client";

const env = process.env;
function need(name) {
  const value = env[name];
  if (!value) throw new Error(`${name} is not set (this script is run by crates/talkwai-cli/tests/browser.rs)`);
  return value;
}
const NATS = need("TALKWAI_NATS_URL");
const DASHBOARD = need("TALKWAI_DASHBOARD_URL");
const OWNER = need("TALKWAI_TOKEN");
const OWNER_MEMBER = need("TALKWAI_OWNER_MEMBER");
const OTHER = need("TALKWAI_OTHER_TOKEN");
const OTHER_TENANT = need("TALKWAI_OTHER_TENANT");
const OTHER_USER = need("TALKWAI_OTHER_USER");
const PLATFORM = need("TALKWAI_PLATFORM_TOKEN");
const ADMIN = need("TALKWAI_ADMIN_TOKEN");
const TTL_MS = Number(need("TALKWAI_PRESENCE_TTL_SECS")) * 1000;
const ARTIFACTS = need("TALKWAI_ARTIFACTS");
const LIVE_MS = 1000;

const figures = {};
// A hung step fails the run with what it has rather than running into the caller's limit.
setTimeout(() => {
  console.error("browser: FAILED: still running after 100 s", JSON.stringify(figures));
  process.exit(1);
}, 100_000).unref();
const log = (...args) => console.log("browser:", ...args);

async function timed(what, fn, limitMs) {
  const start = performance.now();
  await fn();
  const ms = Math.round(performance.now() - start);
  figures[what] = ms;
  log(`${what}: ${ms} ms`);
  if (limitMs !== undefined && ms > limitMs) throw new Error(`${what} took ${ms} ms, more than ${limitMs} ms`);
  return ms;
}

// The platform token signs in to nats-server too (its auth callout lets it reach every
// tenant's commands, queries and rooms, as the other tenant's setup below needs).
const nc = await connect({ servers: NATS, token: PLATFORM });
const ops = new TalkwaiClient(nc, { token: OWNER });
const platform = new TalkwaiClient(nc, { token: PLATFORM });

// Another tenant with one member, whose dev token the Rust side minted.
await platform.createTenant({ id: OTHER_TENANT, name: "Beta Inc" });
await platform.createUser({ id: OTHER_USER, email: "bea@beta.example" });
const member = await platform.createMember(
  { firstName: "Bea", lastName: "Beta", email: "bea@beta.example", role: "owner", user: OTHER_USER },
  { tenant: OTHER_TENANT },
);
const other = new TalkwaiClient(nc, { token: OTHER });
await other.query({ members: {} }, { minSeq: member.seq });

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
await mkdir(ARTIFACTS, { recursive: true });
const shot = async (page, name) => {
  const path = join(ARTIFACTS, name);
  await page.screenshot({ path, fullPage: true });
  log(`screenshot ${path}`);
  return path;
};

const errors = [];
async function open(fragment, size = { width: 1280, height: 900 }) {
  const context = await browser.newContext({ viewport: size });
  const page = await context.newPage();
  page.on("pageerror", (err) => errors.push(String(err)));
  page.on("console", (msg) => {
    if (msg.type() === "error") errors.push(msg.text());
  });
  await page.goto(`${DASHBOARD}#${fragment}`);
  const session = await page.getByTestId("session-id").textContent({ timeout: 15_000 });
  return { context, page, session };
}
const sel = (id, status) => `[data-testid="task-${id}"]${status ? `[data-status="${status}"]` : ""}`;

let failed = false;
try {
  const a1 = await open(`token=${OWNER}&member=${OWNER_MEMBER}&name=Olive%20Owner`);
  await a1.page.getByTestId("title").filter({ hasText: "Acme Corp" }).waitFor({ timeout: 15_000 });
  await a1.page.locator('[data-testid^="task-"]').first().waitFor({ timeout: 15_000 });
  const b = await open(`token=${OTHER}&name=Bea%20Beta`);
  await b.page.getByTestId("title").filter({ hasText: "Beta Inc" }).waitFor({ timeout: 15_000 });

  // 1. A task created by another process appears, then changes status, live.
  let task;
  await timed("created -> row on the page", async () => {
    task = await ops.createTask({ type: "call", priority: "urgent", fromAddress: "+15550009999", toAddress: "+15550008888", subject: "Call from the browser test" });
    await a1.page.locator(sel(task.id, "pending")).first().waitFor({ timeout: LIVE_MS });
  }, LIVE_MS);
  await timed("started -> in progress on the page", async () => {
    await ops.startTask({ id: task.id });
    await a1.page.locator(sel(task.id, "in_progress")).first().waitFor({ timeout: LIVE_MS });
  }, LIVE_MS);
  await timed("completed -> completed on the page", async () => {
    await ops.completeTask({ id: task.id });
    await a1.page.locator(sel(task.id, "completed")).first().waitFor({ timeout: LIVE_MS });
  }, LIVE_MS);
  await a1.page.getByTestId(`update-${task.id}-completed`).waitFor({ timeout: LIVE_MS });
  // The outcome an agent reports shows under the task (task.completed v2).
  const done = await ops.createTask({ type: "call", priority: "low", fromAddress: "+15550009999", toAddress: "+15550008888", subject: "Outcome from the browser test" });
  await ops.startTask({ id: done.id });
  await ops.completeTask({ id: done.id, outcome: { summary: "Booked for Tuesday", durationSecs: 42, transcriptRef: "t/browser.json" } });
  await a1.page.getByTestId(`outcome-${done.id}`).filter({ hasText: "Booked for Tuesday" }).waitFor({ timeout: LIVE_MS });

  // The page sends commands itself.
  const subject = `Made on the page ${Date.now()}`;
  await a1.page.getByTestId("new-task-subject").fill(subject);
  await a1.page.getByTestId("create-task-button").click();
  const made = a1.page.locator("[data-testid=tasks] tr", { hasText: subject });
  await made.waitFor({ timeout: 3000 });
  const madeId = (await made.getAttribute("data-testid")).slice("task-".length);
  await a1.page.getByTestId(`start-${madeId}`).first().click();
  await a1.page.locator(sel(madeId, "in_progress")).first().waitFor({ timeout: 3000 });

  // 2. Another tenant's page sees none of it.
  await b.page.waitForTimeout(300);
  const leaked = await b.page.evaluate(
    ([ids, texts]) => ids.some((id) => document.body.innerHTML.includes(id)) || texts.some((t) => document.body.innerText.includes(t)),
    [[task.id, madeId], ["Call from the browser test", subject, "Acme Corp", "Olive"]],
  );
  if (leaked) throw new Error("the other tenant's page shows Acme's task, name or presence");
  if ((await b.page.locator("[data-testid=tasks] tr").count()) !== 0) throw new Error("the other tenant's page lists tasks it does not have");

  // 3. Presence: a second page of the same tenant; both see each other, the other tenant neither.
  const a2 = await open(`token=${OWNER}&member=${OWNER_MEMBER}&name=Second%20Tab`, { width: 1000, height: 700 });
  await a1.page.getByTestId(`peer-${a2.session}`).waitFor({ timeout: 3000 });
  await a2.page.getByTestId(`peer-${a1.session}`).waitFor({ timeout: 3000 });
  if ((await b.page.getByTestId(`peer-${a1.session}`).count()) + (await b.page.getByTestId(`peer-${a2.session}`).count()) > 0) {
    throw new Error("the other tenant sees Acme's presence");
  }
  await a1.page.getByTestId(`member-${OWNER_MEMBER}`).locator(".dot.on").waitFor({ timeout: 3000 });
  await shot(a1.page, "dashboard.png");
  if (env.TALKWAI_DOCS_SCREENSHOT) await copyFile(join(ARTIFACTS, "dashboard.png"), env.TALKWAI_DOCS_SCREENSHOT);
  await shot(b.page, "dashboard-other-tenant.png");

  // A page that closes leaves at once (pagehide); a crashed one (no leave sent) expires.
  await timed("closed page -> gone from presence", async () => {
    await a2.context.close();
    await a1.page.getByTestId(`peer-${a2.session}`).waitFor({ state: "detached", timeout: TTL_MS + 3000 });
  }, TTL_MS + 3000);
  const a3 = await open(`token=${OWNER}&member=${OWNER_MEMBER}&name=Third%20Tab`, { width: 800, height: 600 });
  await a1.page.getByTestId(`peer-${a3.session}`).waitFor({ timeout: 3000 });
  await timed("crashed page -> expired from presence", async () => {
    const cdp = await a3.context.newCDPSession(a3.page);
    // The crash never answers: do not wait for it.
    void cdp.send("Page.crash").catch(() => undefined);
    await a1.page.getByTestId(`peer-${a3.session}`).waitFor({ state: "detached", timeout: TTL_MS + 3000 });
  }, TTL_MS + 3000);
  if (figures["crashed page -> expired from presence"] < TTL_MS / 3) {
    throw new Error("a crashed page cannot leave: it must expire, not vanish at once");
  }
  errors.splice(0, errors.length, ...errors.filter((e) => !/crash/i.test(e)));
  await a3.context.close();

  // 4. The admin view: the admin room's presence and system alerts.
  const admin = await open(`token=${ADMIN}&view=admin&name=Demo%20Admin`);
  await admin.page.getByTestId(`peer-${admin.session}`).waitFor({ timeout: 5000 });
  await admin.page.getByTestId("alerts").waitFor();
  await platform.setTenantStatus({ id: OTHER_TENANT, status: "suspended", reason: "browser test" }, { tenant: OTHER_TENANT });
  await admin.page.getByTestId("alerts").getByText("tenantSuspended").waitFor({ timeout: 3000 });
  await shot(admin.page, "admin.png");

  if (errors.length > 0) throw new Error(`the pages logged errors:\n${errors.join("\n")}`);
  log("figures", JSON.stringify(figures));
  log("ok");
} catch (err) {
  failed = true;
  console.error("browser: FAILED:", err);
  for (const [i, context] of browser.contexts().entries()) {
    for (const [j, page] of context.pages().entries()) await shot(page, `failure-${i}-${j}.png`).catch(() => undefined);
  }
} finally {
  await browser.close();
  await nc.close();
}
process.exit(failed ? 1 : 0);
