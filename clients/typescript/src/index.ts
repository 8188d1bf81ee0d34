/**
 * `@talkwai/client`: the TalkwAI backbone from a browser or Node over NATS.
 *
 * ```ts
 * const db = await TalkwaiClient.connect({ servers: "ws://127.0.0.1:8080", token });
 * db.subscribeQuery({ tasks: { $: { order: { createdAt: "desc" }, limit: 20 } } }, ({ data }) => render(data));
 * db.room("tenant", db.tenant!).publishTopic("cursor", { x: 1 });
 * ```
 */
export { TalkwaiClient, id } from "./client.js";
export type { ClientOptions, ConnectOptions } from "./client.js";
export { COMMAND_HELPERS, isPlatformAction } from "./commands.js";
export type { CommandAccepted, CommandAction, CommandHelpers, CommandOptions, HelperBody } from "./commands.js";
export { AUTHORIZATION, COMMAND_ID, Core } from "./core.js";
export type { Transport } from "./core.js";
export * from "./errors.js";
export { CHANNELS, COMMAND_ACTIONS, COMMAND_SUBJECTS } from "./generated/index.js";
export type * from "./generated/index.js";
export { LiveQuery, queryBody } from "./query.js";
export type { LiveQueryOptions, QueryOptions, QueryResult } from "./query.js";
export { Presence, Room, SERVICE_TOPICS, isClientTopic, sessionId } from "./rooms.js";
export type { ClientTopicMessage, RoomType, ServiceTopic, TopicMessage, TopicMessages } from "./rooms.js";
export { fill, subject } from "./subjects.js";
export type { Channel } from "./subjects.js";
export { inboxPrefixFor, readClaims } from "./token.js";
export type { TokenClaims } from "./token.js";
