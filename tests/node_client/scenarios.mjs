// The Vercel AI SDK (`ai` with `@ai-sdk/openai`, Responses API) driving the gateway; run by tests/test_real_clients.py.
//
//   node scenarios.mjs <gateway base URL, .../v1> <x-portkey-provider> <scenario> <ai6|ai7>
//
// Prints one JSON object: what the SDK made of the run, and every answer the gateway sent (status, content
// type, raw body), so that the Python test can validate each one strictly against the openai SDK types.

import { z } from "zod";

const [baseURL, provider, scenario, sdk = "ai6"] = process.argv.slice(2);
// ai 7 (with @ai-sdk/openai 4) is installed under aliases beside ai 6 (with @ai-sdk/openai 3).
const { createOpenAI } = await import(sdk === "ai7" ? "@ai-sdk/openai-v4" : "@ai-sdk/openai");
const { generateText, stepCountIs, streamText, tool } = await import(sdk === "ai7" ? "ai-v7" : "ai");

const answers = [];
async function recordingFetch(url, init) {
  const res = await fetch(url, init);
  const copy = res.clone();
  answers.push(
    copy.text().then((text) => ({
      url: String(url),
      method: init?.method ?? "GET",
      status: res.status,
      contentType: res.headers.get("content-type"),
      text,
    })),
  );
  return res;
}

const openai = createOpenAI({
  baseURL,
  apiKey: "sk-node-client",
  headers: { "x-portkey-provider": provider },
  fetch: recordingFetch,
});
const model = openai.responses("scripted-1");

const tools = {
  get_weather: tool({
    description: "The weather in a city",
    inputSchema: z.object({ city: z.string() }),
    execute: async ({ city }) => `sunny in ${city}`,
  }),
  get_time: tool({
    description: "The local time in a city",
    inputSchema: z.object({ city: z.string() }),
    execute: async ({ city }) => `noon in ${city}`,
  }),
};
const mcpTools = (requireApproval = "never") => ({
  tests: openai.tools.mcp({
    serverLabel: "tests",
    serverUrl: process.env.MCP_URL,
    allowedTools: ["add"],
    requireApproval,
  }),
});
const common = { model, tools, stopWhen: stepCountIs(6), maxRetries: 0 };

function summary(result) {
  return {
    text: result.text,
    steps: result.steps.map((s) => ({
      text: s.text,
      toolCalls: s.toolCalls.map((c) => ({ name: c.toolName, input: c.input })),
      toolResults: s.toolResults.map((r) => r.output),
      finishReason: s.finishReason,
      responseId: s.response?.id,
    })),
  };
}

async function streamed(options) {
  const result = streamText({ ...common, ...options, onError: () => {} });
  const parts = [];
  for await (const part of result.fullStream) {
    if (part.type === "error") throw part.error;
    parts.push(part.type);
  }
  const steps = await result.steps;
  return summary({ text: await result.text, steps });
}

const scenarios = {
  // Two tools, one step each, then the answer.
  generate: async () => summary(await generateText({ ...common, prompt: "What is the weather and the time?" })),
  // Both tools in one step (their argument chunks interleaved by a Chat Completions provider), streamed.
  stream: async () => streamed({ prompt: "parallel: what is the weather and the time?" }),
  // Text beside the calls: with store on, the SDK refers to that text by item_reference in the next step.
  narrate: async () => summary(await generateText({ ...common, prompt: "narrate: what is the weather and the time?" })),
  // A chat loop: the second turn appends response.messages (item_reference for text with store on).
  multiturn: async () => {
    const messages = [{ role: "user", content: "What is the weather?" }];
    const first = await generateText({ ...common, messages });
    messages.push(...first.response.messages, { role: "user", content: "And tomorrow?" });
    const second = await generateText({ ...common, messages });
    return { first: summary(first), second: summary(second) };
  },
  // A remote MCP server the gateway runs (its URL in MCP_URL): one call, then the answer, in one step.
  mcp: async () => summary(await generateText({ ...common, tools: mcpTools(), prompt: "add" })),
  "mcp-stream": async () => streamed({ tools: mcpTools(), prompt: "add" }),
  // Approval over three turns: the call is asked for, approved, run; then a new question asks again.
  "mcp-approve": async () => {
    const tools = mcpTools("always");
    const messages = [{ role: "user", content: "add please" }];
    const first = await generateText({ ...common, tools, messages });
    const asked = first.content.filter((p) => p.type === "tool-approval-request");
    messages.push(...first.response.messages, {
      role: "tool",
      content: asked.map((a) => ({
        type: "tool-approval-response",
        approvalId: a.approvalId,
        approved: true,
        providerExecuted: true, // an MCP call: the platform (here the gateway) runs it
      })),
    });
    const second = await generateText({ ...common, tools, messages });
    messages.push(...second.response.messages, { role: "user", content: "and again" });
    const third = await generateText({ ...common, tools, messages });
    return { asked: asked.length, first: summary(first), second: summary(second), third: summary(third) };
  },
  "multiturn-stream": async () => {
    const messages = [{ role: "user", content: "What is the weather?" }];
    const first = streamText({ ...common, messages, onError: () => {} });
    await first.consumeStream();
    messages.push(...(await first.response).messages, { role: "user", content: "And tomorrow?" });
    return { first: { text: await first.text }, second: await streamed({ messages }) };
  },
};

let outcome;
try {
  outcome = { ok: true, result: await scenarios[scenario]() };
} catch (error) {
  outcome = { ok: false, error: String(error?.message ?? error), data: error?.responseBody ?? null };
}
outcome.answers = await Promise.all(answers);
process.stdout.write(JSON.stringify(outcome));
