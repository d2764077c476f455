// Server-sent events and chat-completion chunks, for the console's playground.
// Pure functions and classes (no DOM), so that tests can run them under Node.

// Splits a text/event-stream into events as the WHATWG spec frames them: a blank line ends
// an event; CR, LF and CRLF all end a line, also when a read ends between a CR and its LF.
export class SSEDecoder {
  constructor() {
    this.buffer = "";
    this.data = [];
    this.event = "";
  }

  // Decoded text in, the events it completed out ({event, data}).
  push(text) {
    const events = [];
    const buf = this.buffer + text;
    let pos = 0;
    while (pos < buf.length) {
      let end = pos;
      while (end < buf.length && buf[end] !== "\n" && buf[end] !== "\r") end++;
      if (end >= buf.length) break; // no line end yet
      if (buf[end] === "\r" && end + 1 >= buf.length) break; // a CR last: its LF may follow
      this.line(buf.slice(pos, end), events);
      pos = end + (buf[end] === "\r" && buf[end + 1] === "\n" ? 2 : 1);
    }
    this.buffer = buf.slice(pos);
    return events;
  }

  // The body ended: what is left is a last line, and the event it belongs to ends.
  end() {
    const events = [];
    const rest = this.buffer.endsWith("\r") ? this.buffer.slice(0, -1) : this.buffer;
    this.buffer = "";
    if (rest) this.line(rest, events);
    this.line("", events);
    return events;
  }

  line(line, events) {
    if (line === "") {
      if (this.data.length) events.push({ event: this.event || "message", data: this.data.join("\n") });
      this.data = [];
      this.event = "";
      return;
    }
    if (line.startsWith(":")) return; // a comment (keep-alive)
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
  }
}

// What a streamed chat answer has said so far, built from its chunks.
export function emptyAnswer() {
  return { content: "", reasoning: "", toolCalls: [], finishReason: null, usage: null, model: null };
}

// Folds one chat.completion.chunk (parsed JSON) into ``answer``; an error event throws.
export function applyChunk(answer, chunk) {
  if (chunk.error) throw new Error(chunk.error.message || JSON.stringify(chunk.error));
  if (chunk.model) answer.model = chunk.model;
  if (chunk.usage) answer.usage = chunk.usage;
  for (const choice of chunk.choices || []) {
    if (choice.index !== undefined && choice.index !== 0) continue; // the playground asks for one
    const delta = choice.delta || {};
    if (typeof delta.content === "string") answer.content += delta.content;
    const thinking = delta.reasoning_content ?? delta.reasoning;
    if (typeof thinking === "string") answer.reasoning += thinking;
    for (const call of delta.tool_calls || []) {
      const slot = (answer.toolCalls[call.index ?? 0] ??= { id: "", name: "", arguments: "" });
      if (call.id) slot.id = call.id;
      if (call.function?.name) slot.name += call.function.name;
      if (call.function?.arguments) slot.arguments += call.function.arguments;
    }
    if (choice.finish_reason) answer.finishReason = choice.finish_reason;
  }
  return answer;
}

// The same from a whole (unstreamed) chat.completion.
export function answerOf(completion) {
  const answer = emptyAnswer();
  const choice = (completion.choices || [])[0] || {};
  const message = choice.message || {};
  answer.model = completion.model || null;
  answer.content = typeof message.content === "string" ? message.content : "";
  answer.reasoning = message.reasoning_content || message.reasoning || "";
  answer.toolCalls = (message.tool_calls || []).map((call) => ({
    id: call.id || "", name: call.function?.name || "", arguments: call.function?.arguments || "",
  }));
  answer.finishReason = choice.finish_reason || null;
  answer.usage = completion.usage || null;
  return answer;
}

// An error response's message, from the OpenAI or the Anthropic envelope.
export function errorMessage(status, text) {
  try {
    const body = JSON.parse(text);
    const error = body.error || {};
    if (error.message) return `${status}: ${error.message}`;
  } catch {
    // not JSON: show the text itself
  }
  return `${status}: ${text.slice(0, 300) || "no body"}`;
}
