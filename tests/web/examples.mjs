// The protocol's examples: every ```json server``` and ```json client``` block of
// docs/agent-protocol.md, parsed, for the page's unit tests.
import { readFileSync } from "node:fs";

const doc = readFileSync(new URL("../../docs/agent-protocol.md", import.meta.url), "utf8");

/** @param {"server" | "client"} side */
function blocks(side) {
  // Fences may be indented (inside a list item).
  const fence = new RegExp("^[ \\t]*```json " + side + "\\n([\\s\\S]*?)\\n[ \\t]*```", "gm");
  return [...doc.matchAll(fence)].map((m) => ({ text: m[1].trim(), message: JSON.parse(m[1]) }));
}

export const serverExamples = blocks("server");
export const clientExamples = blocks("client");

/** The first server example of `type`. @param {string} type */
export function example(type) {
  const found = serverExamples.find((e) => e.message.type === type);
  if (!found) throw new Error(`docs/agent-protocol.md has no server example of ${type}`);
  return structuredClone(found.message);
}

/** A call object like the protocol's, with `fields` changed. */
export function call(fields) {
  const base = example("call.incoming").call;
  return { ...base, ...fields, prospect: { ...base.prospect, ...(fields.prospect || {}) } };
}
