/**
 * What a bearer token says, read without verifying it (the services verify; the client only
 * needs the tenant and kind to pick subjects): HS256 JWTs minted by `talkwai token mint` or
 * `talkwai up`, or an opaque platform token.
 */

/** The claims the client uses. */
export interface TokenClaims {
  /** The `$users` id. */
  sub: string;
  /** `member` or `admin`. */
  kind: "member" | "admin";
  /** A member's tenant. */
  tenant?: string;
  /** The role at minting time (informational: roles are read from the log). */
  role?: string;
  /** Expiry, epoch seconds. */
  exp?: number;
}

function base64UrlDecode(text: string): string {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(text.length / 4) * 4, "=");
  const binary = atob(b64);
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}

/** The claims of a JWT, or `undefined` for anything else (e.g. the platform token). */
export function readClaims(token: string): TokenClaims | undefined {
  const parts = token.split(".");
  if (parts.length !== 3 || parts[1] === undefined) return undefined;
  try {
    const claims = JSON.parse(base64UrlDecode(parts[1])) as Partial<TokenClaims>;
    if (typeof claims.sub !== "string" || (claims.kind !== "member" && claims.kind !== "admin")) {
      return undefined;
    }
    return claims as TokenClaims;
  } catch {
    return undefined;
  }
}

/**
 * The reply-inbox prefix a connection signed in with `token` must use: `_INBOX.<sub>` for a
 * member token (nats-server lets a member read only its own inboxes, so no one reads another's
 * replies), the default `_INBOX` otherwise. Pass it as `inboxPrefix` when you make the NATS
 * connection yourself; `TalkwaiClient.connect` does.
 */
export function inboxPrefixFor(token: string | undefined): string {
  const claims = token === undefined ? undefined : readClaims(token);
  return claims?.kind === "member" ? `_INBOX.${claims.sub}` : "_INBOX";
}
