// llmport's console: a playground for the /v1 API, the caller's files, batches and vector
// stores, and an admin view of tenants, keys, usage and deployments. No framework and no
// build step; every value from the server is shown with textContent (never parsed as HTML).
// The key lives in sessionStorage: this tab only.
import { SSEDecoder, answerOf, applyChunk, emptyAnswer, errorMessage } from "./sse.mjs";

const $ = (selector) => document.querySelector(selector);

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// -- the API ------------------------------------------------------------------------------
function key() {
  return sessionStorage.getItem("llmport.key") || "";
}

function headers(extra = {}) {
  const out = { ...extra };
  if (key()) out.authorization = `Bearer ${key()}`;
  return out;
}

class APIError extends Error {
  constructor(status, message, code = null) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function errorCode(text) {
  try {
    return JSON.parse(text).error?.code ?? null;
  } catch {
    return null;
  }
}

// Every call the console makes goes through here (tests check each path exists).
async function api(method, path, body, { raw = false, signal } = {}) {
  const init = { method, headers: headers(), signal };
  if (body instanceof FormData) {
    init.body = body; // multipart: the browser writes its content-type and boundary
  } else if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (raw) return response;
  const text = await response.text();
  if (!response.ok) throw new APIError(response.status, errorMessage(response.status, text), errorCode(text));
  return text ? JSON.parse(text) : null;
}

function show(target, error) {
  target.replaceChildren(el("p", { class: "error" }, error.message || String(error)));
}

function status(text, kind = "") {
  const line = $("#status");
  line.textContent = text;
  line.className = kind;
}

// -- tables and forms ---------------------------------------------------------------------
function cell(value) {
  if (value === null || value === undefined || value === "") return "—";
  if (Array.isArray(value)) return value.join(", ") || "—";
  if (typeof value === "object") return JSON.stringify(value);
  if (typeof value === "number" && !Number.isInteger(value)) return value.toFixed(6).replace(/\.?0+$/, "");
  return String(value);
}

function table(rows, columns, actions) {
  if (!rows.length) return el("p", { class: "muted" }, "Nothing yet.");
  return el("table", {},
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", {}, c)), actions ? el("th") : null)),
    el("tbody", {}, rows.map((row) => el("tr", {},
      columns.map((c) => el("td", {}, cell(row[c]))),
      actions ? el("td", { class: "actions" }, actions(row)) : null))));
}

// The form's filled-in fields as a request body: numbers as numbers, lists split at commas.
function formBody(form) {
  const body = {};
  for (const input of form.querySelectorAll("[name]")) {
    const value = input.value.trim();
    if (!value) continue;
    if (input.dataset.type === "number") body[input.name] = Number(value);
    else if (input.dataset.type === "list") body[input.name] = value.split(",").map((v) => v.trim()).filter(Boolean);
    else if (input.dataset.type === "time") body[input.name] = new Date(value).toISOString();
    else body[input.name] = value;
  }
  return body;
}

function field(name, label, type = "text", options = {}) {
  if (type === "select") {
    return el("label", {}, label, el("select", { name }, el("option", { value: "" }, "—"),
      options.choices.map((c) => el("option", { value: c }, c))));
  }
  const kind = { number: "number", list: "text", time: "datetime-local" }[type] || "text";
  return el("label", {}, label, el("input", {
    name, type: kind, "data-type": type, placeholder: options.placeholder, step: type === "number" ? "any" : undefined,
  }));
}

const LIMIT_FIELDS = () => [
  field("models", "models (comma-separated)", "list"),
  field("rpm_limit", "requests/min", "number"), field("tpm_limit", "tokens/min", "number"),
  field("max_parallel_requests", "parallel", "number"), field("max_budget", "budget US$", "number"),
  field("budget_period", "period", "select", { choices: ["daily", "weekly", "monthly", "total"] }),
];

// A form to change a key's or tenant's limits in place: filled with what it has; a field
// emptied is sent as null, which removes that limit.
function limitsEditor(kind, row, target, reload) {
  const form = el("form", { class: "create" }, el("h3", {}, `Limits of ${row.name || row.id}`),
    ...LIMIT_FIELDS(), el("button", { type: "submit" }, "Save"),
    el("button", { type: "button", onclick: () => target.replaceChildren() }, "Cancel"));
  for (const input of form.querySelectorAll("[name]")) {
    const value = row[input.name];
    input.value = value === null || value === undefined ? "" : Array.isArray(value) ? value.join(", ") : String(value);
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = formBody(form);
    for (const input of form.querySelectorAll("[name]")) body[input.name] ??= null;
    try {
      await api("PATCH", `/admin/${kind}/${row.id}`, body);
      target.replaceChildren();
      await reload();
    } catch (error) {
      show(target, error);
    }
  });
  target.replaceChildren(form);
}

// A raw response's body, saved as a download named `name`.
async function save(response, name) {
  if (!response.ok) throw new APIError(response.status, errorMessage(response.status, await response.text()));
  const link = el("a", { href: URL.createObjectURL(await response.blob()), download: name });
  link.click();
  URL.revokeObjectURL(link.href);
}

// -- tabs ---------------------------------------------------------------------------------
const TABS = {};

function openTab(name) {
  for (const button of document.querySelectorAll("nav button")) {
    button.classList.toggle("active", button.dataset.tab === name);
  }
  const panel = $("#panel");
  panel.replaceChildren();
  TABS[name](panel);
}

// -- playground ---------------------------------------------------------------------------
const conversation = [];
let running = null; // the AbortController of the request in flight

TABS.playground = async (panel) => {
  const models = el("select", { id: "model" });
  const system = el("textarea", { id: "system", rows: 2, placeholder: "system prompt (optional)" });
  const transcript = el("div", { id: "transcript" });
  const prompt = el("textarea", { id: "prompt", rows: 3, placeholder: "Message (Ctrl+Enter sends)" });
  const stream = el("input", { type: "checkbox", id: "stream", checked: "" });
  const temperature = el("input", { type: "number", id: "temperature", min: 0, max: 2, step: 0.1, placeholder: "default" });
  const maxTokens = el("input", { type: "number", id: "max-tokens", min: 1, placeholder: "default" });
  const stats = el("p", { id: "stats", class: "muted" });
  const send = el("button", { type: "submit" }, "Send");
  const stop = el("button", { type: "button", disabled: "", onclick: () => running?.abort() }, "Stop");
  const clear = el("button", {
    type: "button", onclick: () => { conversation.length = 0; transcript.replaceChildren(); stats.textContent = ""; },
  }, "Clear");
  const form = el("form", { class: "playground" },
    el("div", { class: "row" }, el("label", {}, "model ", models),
      el("label", {}, stream, " stream"), el("label", {}, "temperature ", temperature),
      el("label", {}, "max tokens ", maxTokens)),
    system, transcript, prompt, el("div", { class: "row" }, send, stop, clear), stats);
  panel.append(form);
  for (const turn of conversation) transcript.append(bubble(turn.role, turn.content));
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = prompt.value.trim();
    if (!text || running) return;
    conversation.push({ role: "user", content: text });
    transcript.append(bubble("user", text));
    prompt.value = "";
    const body = { model: models.value, messages: [...conversation], stream: stream.checked };
    if (system.value.trim()) body.messages.unshift({ role: "system", content: system.value.trim() });
    if (temperature.value) body.temperature = Number(temperature.value);
    if (maxTokens.value) body.max_tokens = Number(maxTokens.value);
    if (stream.checked) body.stream_options = { include_usage: true };
    const reply = bubble("assistant", "");
    transcript.append(reply);
    running = new AbortController();
    send.disabled = true;
    stop.disabled = false;
    try {
      const answer = await chat(body, reply, stats, running.signal);
      conversation.push({ role: "assistant", content: answer.content });
    } catch (error) {
      const said = reply.querySelector(".text");
      if (error.name === "AbortError") said.append(" (stopped)");
      else {
        reply.classList.add("error");
        said.textContent = error.message;
      }
      conversation.pop(); // the question went unanswered: it is not history
    } finally {
      running = null;
      send.disabled = false;
      stop.disabled = true;
    }
  });
  try {
    const listed = await api("GET", "/v1/models");
    const names = listed.data.map((m) => m.id);
    models.replaceChildren(...names.map((id) => el("option", { value: id }, id)));
    const remembered = sessionStorage.getItem("llmport.model");
    if (names.includes(remembered)) models.value = remembered;
    models.addEventListener("change", () => sessionStorage.setItem("llmport.model", models.value));
  } catch (error) {
    show(transcript, error);
  }
};

function bubble(role, text) {
  return el("div", { class: `turn ${role}` }, el("span", { class: "role" }, role), el("div", { class: "text" }, text));
}

// One chat request; the reply bubble fills in as the answer arrives.
async function chat(body, reply, stats, signal) {
  const began = performance.now();
  const response = await api("POST", "/v1/chat/completions", body, { raw: true, signal });
  const requestId = response.headers.get("x-request-id") || "";
  const overhead = response.headers.get("x-llmport-overhead-ms");
  if (!response.ok) throw new APIError(response.status, errorMessage(response.status, await response.text()));
  const text = reply.querySelector(".text");
  let answer;
  let firstToken = null;
  if (!body.stream) {
    answer = answerOf(await response.json());
  } else {
    answer = emptyAnswer();
    const decoder = new SSEDecoder();
    const utf8 = new TextDecoder();
    const reader = response.body.getReader();
    const take = (events) => {
      for (const event of events) {
        if (event.data === "[DONE]") continue;
        applyChunk(answer, JSON.parse(event.data));
        if (firstToken === null && answer.content) firstToken = performance.now() - began;
      }
      text.textContent = answer.content;
    };
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        take(decoder.push(utf8.decode(value, { stream: true })));
      }
    } catch (error) {
      reader.cancel().catch(() => {}); // an error event: what follows is not read
      throw error;
    }
    take(decoder.push(utf8.decode()));
    take(decoder.end());
  }
  text.textContent = answer.content;
  if (answer.reasoning) reply.prepend(el("details", {}, el("summary", {}, "reasoning"), answer.reasoning));
  for (const call of answer.toolCalls) reply.append(el("pre", {}, `${call.name}(${call.arguments})`));
  const usage = answer.usage;
  stats.textContent = [
    answer.model && `model ${answer.model}`,
    `${Math.round(performance.now() - began)} ms`,
    firstToken !== null && `first token ${Math.round(firstToken)} ms`,
    overhead && `gateway ${overhead} ms`,
    usage && `${usage.prompt_tokens} → ${usage.completion_tokens} tokens`,
    answer.finishReason && `finish: ${answer.finishReason}`,
    requestId && `request ${requestId}`,
  ].filter(Boolean).join(" · ");
  return answer;
}

// -- admin: keys, tenants, usage ----------------------------------------------------------
TABS.keys = async (panel) => {
  const list = el("div");
  const secret = el("div");
  const form = el("form", { class: "create" }, el("h3", {}, "New key"),
    field("name", "name"), field("org_id", "org id"), field("team_id", "team id"),
    field("user_id", "user id"), ...LIMIT_FIELDS(), field("expires_at", "expires", "time"),
    el("button", { type: "submit" }, "Create"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const created = await api("POST", "/admin/keys", formBody(form));
      secret.replaceChildren(el("p", { class: "secret" }, "The key (shown once): ",
        el("code", {}, created.key)));
      form.reset();
      await load();
    } catch (error) {
      show(secret, error);
    }
  });
  const editor = el("div");
  panel.append(el("h2", {}, "API keys"), secret, list, editor, form);
  async function load() {
    try {
      const rows = (await api("GET", "/admin/keys?limit=1000")).data;
      list.replaceChildren(table(rows, ["prefix", "name", "org_id", "team_id", "user_id", "models",
        "rpm_limit", "tpm_limit", "max_budget", "budget_period", "expires_at", "revoked_at", "last_used_at"],
      (row) => [
        el("button", { onclick: () => spendOf(row, secret) }, "spend"),
        row.revoked_at ? null : el("button", { onclick: () => limitsEditor("keys", row, editor, load) }, "limits"),
        row.revoked_at ? null : el("button", {
          onclick: async () => {
            const grace = prompt(`Rotate key ${row.prefix}…: seconds the old secret keeps working `
              + "(0: revoked at once)", "0");
            if (grace === null) return;
            try {
              const rotated = await api("POST", `/admin/keys/${row.id}/rotate`, { grace_seconds: Number(grace) });
              secret.replaceChildren(el("p", { class: "secret" }, `The new key for ${row.prefix}… (shown once): `,
                el("code", {}, rotated.key)));
              await load();
            } catch (error) {
              show(secret, error);
            }
          },
        }, "rotate"),
        row.revoked_at ? null : el("button", {
          onclick: async () => {
            if (!confirm(`Revoke key ${row.prefix}…? Every replica refuses it within a second.`)) return;
            try { await api("DELETE", `/admin/keys/${row.id}`); await load(); } catch (error) { show(secret, error); }
          },
        }, "revoke"),
      ]));
    } catch (error) {
      show(list, error);
    }
  }
  await load();
};

async function spendOf(row, target) {
  try {
    const found = await api("GET", `/admin/keys/${row.id}`);
    target.replaceChildren(el("p", {}, `Key ${row.prefix}…: US$ ${cell(found.spend)} spent in its `
      + `current budget period${found.max_budget !== null ? ` of US$ ${found.max_budget}` : ""}.`));
  } catch (error) {
    show(target, error);
  }
}

TABS.tenants = async (panel) => {
  panel.append(el("h2", {}, "Organisations, teams and users"));
  const sections = { orgs: ["name"], teams: ["name", "org_id"], users: ["name", "email", "org_id", "team_id"] };
  for (const [kind, own] of Object.entries(sections)) {
    const list = el("div");
    const note = el("div");
    const form = el("form", { class: "create" }, el("h3", {}, `New ${kind.slice(0, -1)}`),
      own.map((name) => field(name, name.replace("_", " "))), ...LIMIT_FIELDS(),
      el("button", { type: "submit" }, "Create"));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try { await api("POST", `/admin/${kind}`, formBody(form)); form.reset(); note.replaceChildren(); await load(); } catch (error) { show(note, error); }
    });
    const editor = el("div");
    panel.append(el("h3", {}, kind), note, list, editor, form);
    const load = async () => {
      try {
        const rows = (await api("GET", `/admin/${kind}?limit=1000`)).data;
        list.replaceChildren(table(rows, ["id", ...own, "models", "rpm_limit", "tpm_limit", "max_budget", "budget_period"],
          (row) => [
            el("button", { onclick: () => limitsEditor(kind, row, editor, load) }, "limits"),
            el("button", {
              onclick: async () => {
                if (!confirm(`Delete ${row.id} and everything it owns (its keys included)?`)) return;
                try { await api("DELETE", `/admin/${kind}/${row.id}`); await load(); } catch (error) { show(note, error); }
              },
            }, "delete"),
          ]));
      } catch (error) {
        show(list, error);
      }
    };
    await load();
  }
};

const GROUPS = ["model", "day", "org_id", "team_id", "user_id", "key_id", "deployment"];

TABS.usage = async (panel) => {
  const result = el("div");
  const form = el("form", { class: "filters" },
    field("org_id", "org id"), field("key_id", "key id"), field("model", "model"),
    field("start", "from", "time"), field("end", "until", "time"),
    el("fieldset", {}, el("legend", {}, "group by"), GROUPS.map((g) => el("label", {},
      el("input", { type: "checkbox", value: g, checked: g === "model" ? "" : undefined }), ` ${g}`))),
    el("button", { type: "submit" }, "Report"));
  const query = () => {
    const params = new URLSearchParams(formBody(form));
    const groups = [...form.querySelectorAll("fieldset input:checked")].map((i) => i.value);
    if (groups.length) params.set("group_by", groups.join(","));
    return params;
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const report = await api("GET", `/admin/usage?${query()}`);
      const totals = el("p", {}, `${report.requests} requests · ${report.prompt_tokens} prompt and `
        + `${report.completion_tokens} completion tokens · US$ ${cell(report.cost)} · errors: ${report.errors}`
        + ` · cache hits: ${report.cache_hits}`);
      result.replaceChildren(totals, report.data ? table(report.data, [...report.group_by, "requests",
        "prompt_tokens", "completion_tokens", "cost", "errors"]) : "");
    } catch (error) {
      show(result, error);
    }
  });
  const csv = el("button", {
    type: "button",
    onclick: async () => {
      try {
        const params = query();
        params.set("format", "csv");
        await save(await api("GET", `/admin/usage?${params}`, undefined, { raw: true }), "llmport-usage.csv");
      } catch (error) {
        show(result, error);
      }
    },
  }, "Download CSV");
  panel.append(el("h2", {}, "Usage"), form, csv, result);
  form.requestSubmit();
};

// -- files, batches and vector stores: the caller's own (any key) -------------------------
const when = (seconds) => (seconds ? new Date(seconds * 1000).toISOString().slice(0, 19).replace("T", " ") : null);
const PURPOSES = ["assistants", "batch", "user_data", "vision", "evals", "fine-tune"];
const RUNNING = ["validating", "in_progress", "finalizing"];

TABS.files = async (panel) => {
  const note = el("div");
  const files = el("div");
  const batches = el("div");
  const upload = el("form", { class: "create" }, el("h3", {}, "Upload a file"),
    el("label", {}, "file", el("input", { type: "file", name: "file", id: "upload-file" })),
    field("purpose", "purpose", "select", { choices: PURPOSES }),
    field("hours", "expires after (hours)", "number"),
    el("button", { type: "submit" }, "Upload"));
  upload.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData();
    const chosen = upload.querySelector("#upload-file").files[0];
    if (chosen) data.append("file", chosen);
    data.append("purpose", upload.querySelector("[name=purpose]").value);
    const hours = upload.querySelector("[name=hours]").value;
    if (hours) {
      data.append("expires_after[anchor]", "created_at");
      data.append("expires_after[seconds]", String(Math.round(Number(hours) * 3600)));
    }
    try { await api("POST", "/v1/files", data); upload.reset(); note.replaceChildren(); await load(); } catch (error) { show(note, error); }
  });
  const refresh = el("button", { type: "button", onclick: () => load() }, "Refresh");
  panel.append(el("h2", {}, "Files"), note, files, upload, el("h2", {}, "Batches ", refresh), batches);
  async function load() {
    try {
      const rows = (await api("GET", "/v1/files")).data;
      files.replaceChildren(table(rows.map((r) => ({ ...r, created: when(r.created_at), expires: when(r.expires_at) })),
        ["id", "filename", "purpose", "bytes", "created", "expires"], (row) => [
          el("button", {
            onclick: async () => {
              try { await save(await api("GET", `/v1/files/${row.id}/content`, undefined, { raw: true }), row.filename); } catch (error) { show(note, error); }
            },
          }, "download"),
          row.purpose === "batch" ? el("button", {
            onclick: async () => {
              const endpoint = prompt("Run its lines against which endpoint?", "/v1/chat/completions");
              if (endpoint === null) return;
              try { await api("POST", "/v1/batches", { input_file_id: row.id, endpoint, completion_window: "24h" }); await load(); } catch (error) { show(note, error); }
            },
          }, "run batch") : null,
          el("button", {
            onclick: async () => {
              if (!confirm(`Delete ${row.filename}?`)) return;
              try { await api("DELETE", `/v1/files/${row.id}`); await load(); } catch (error) { show(note, error); }
            },
          }, "delete"),
        ]));
      const listed = (await api("GET", "/v1/batches?limit=100")).data;
      batches.replaceChildren(table(listed.map((b) => ({
        ...b, created: when(b.created_at), done: `${b.request_counts.completed} of ${b.request_counts.total}`,
        failed: b.request_counts.failed })),
      ["id", "status", "endpoint", "done", "failed", "created", "output_file_id", "error_file_id"], (row) => [
        RUNNING.includes(row.status) ? el("button", {
          onclick: async () => {
            try { await api("POST", `/v1/batches/${row.id}/cancel`); await load(); } catch (error) { show(note, error); }
          },
        }, "cancel") : null,
      ]));
    } catch (error) {
      show(files, error);
    }
  }
  await load();
};

TABS.stores = async (panel) => {
  const note = el("div");
  const list = el("div");
  const found = el("div", { id: "hits" });
  const create = el("form", { class: "create" }, el("h3", {}, "New vector store"),
    field("name", "name"), field("file_ids", "file ids (comma-separated)", "list"),
    el("button", { type: "submit" }, "Create"));
  create.addEventListener("submit", async (event) => {
    event.preventDefault();
    try { await api("POST", "/v1/vector_stores", formBody(create)); create.reset(); note.replaceChildren(); await load(); } catch (error) { show(note, error); }
  });
  const stores = el("select", { name: "store" });
  const search = el("form", { class: "filters" }, el("h3", {}, "Search"),
    el("label", {}, "store", stores), field("query", "query"),
    el("button", { type: "submit" }, "Search"));
  search.addEventListener("submit", async (event) => {
    event.preventDefault();
    const query = search.querySelector("[name=query]").value.trim();
    if (!stores.value || !query) return;
    try {
      const page = await api("POST", `/v1/vector_stores/${stores.value}/search`, { query, max_num_results: 5 });
      found.replaceChildren(table(page.data.map((hit) => ({
        ...hit, score: Number(hit.score.toFixed(3)), text: hit.content.map((c) => c.text).join(" ").slice(0, 300) })),
      ["filename", "score", "text"]));
    } catch (error) {
      show(found, error);
    }
  });
  const refresh = el("button", { type: "button", onclick: () => load() }, "Refresh");
  panel.append(el("h2", {}, "Vector stores ", refresh), note, list, create, search, found);
  async function load() {
    try {
      const rows = (await api("GET", "/v1/vector_stores?limit=100")).data;
      list.replaceChildren(table(rows.map((r) => ({
        ...r, files: `${r.file_counts.completed} of ${r.file_counts.total}`, failed: r.file_counts.failed,
        active: when(r.last_active_at), expires: when(r.expires_at) })),
      ["id", "name", "status", "files", "failed", "usage_bytes", "active", "expires"], (row) => [
        el("button", {
          onclick: async () => {
            if (!confirm(`Delete the vector store ${row.name || row.id} (not its files)?`)) return;
            try { await api("DELETE", `/v1/vector_stores/${row.id}`); await load(); } catch (error) { show(note, error); }
          },
        }, "delete"),
      ]));
      const chosen = stores.value;
      stores.replaceChildren(...rows.map((r) => el("option", { value: r.id }, r.name || r.id)));
      if (rows.some((r) => r.id === chosen)) stores.value = chosen;
    } catch (error) {
      show(list, error);
    }
  }
  await load();
};

TABS.health = async (panel) => {
  const body = el("div");
  panel.append(el("h2", {}, "Deployments"), body);
  let ready;
  try {
    ready = await (await api("GET", "/readyz", undefined, { raw: true })).json();
  } catch (error) {
    show(body, error);
    return;
  }
  body.replaceChildren(
    el("p", {}, `status: ${ready.status}`, Object.entries(ready.stores || {}).map(([name, ok]) => ` · ${name} ${ok ? "up" : "DOWN"}`)),
    table(ready.deployments || [], ["name", "model", "priority", "breaker", "in_flight", "queued",
      "latency_ms", "ttft_ms", "last_error", "last_error_seconds_ago"]));
};

// -- start --------------------------------------------------------------------------------
async function checkKey() {
  try {
    await api("GET", "/admin/orgs?limit=1");
    status("admin", "ok");
  } catch (error) {
    if (error.code === "admin_disabled") status("playground only (this gateway has no master key, so no admin API)", "muted");
    else if (error.status === 401 && !key()) status("no key: type one above (any will do if the gateway has no master key)", "muted");
    else if (error.status === 401) status(`key refused: ${error.message}`, "error");
    else if (error.status === 403) status("playground only (the admin tabs need the master key or an admin key)", "muted");
    else status(`admin API: ${error.message}`, "muted");
  }
}

function start() {
  const input = $("#key");
  input.value = key();
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("llmport.key", input.value.trim());
    checkKey();
    openTab(document.querySelector("nav button.active")?.dataset.tab || "playground");
  });
  for (const button of document.querySelectorAll("nav button")) {
    button.addEventListener("click", () => openTab(button.dataset.tab));
  }
  checkKey();
  openTab("playground");
}

start();
