/**
 * Subjects from the contract's channels (`CHANNELS`, generated from `proto/asyncapi.yaml`):
 * `subject("qry", { tenant })` fills the channel's `{name}` parameters.
 */
import { CHANNELS } from "./generated/index.js";

/** An AsyncAPI channel id (`qry`, `room.presence`, `cmd.task.create`...). */
export type Channel = keyof typeof CHANNELS;

/** The subject of `channel`, its `{name}` parameters filled from `params`. */
export function subject(channel: Channel, params: Record<string, string> = {}): string {
  return fill(CHANNELS[channel], params);
}

/** `template` with each `{name}` replaced by `params[name]`; throws when one is missing. */
export function fill(template: string, params: Record<string, string>): string {
  return template.replace(/\{([A-Za-z]+)\}/g, (_, name: string) => {
    const value = params[name];
    if (value === undefined) throw new Error(`the subject ${template} needs {${name}}`);
    return value;
  });
}
