// The official openai Node SDK streaming one response through the gateway; run by tests/test_heartbeats.py.
//
//   node openai_stream.mjs <gateway base URL, .../v1> <x-portkey-provider> <request body as JSON>
//
// Prints one JSON object: the event types in order and the text the deltas add up to.

import OpenAI from "openai";

const [baseURL, provider, body] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "sk-node-client", defaultHeaders: { "x-portkey-provider": provider } });
const stream = await client.responses.create({ ...JSON.parse(body), stream: true });
const types = [];
let text = "";
let final = null;
for await (const event of stream) {
  types.push(event.type);
  if (event.type === "response.output_text.delta") text += event.delta;
  if (event.type === "response.completed") final = event.response.output_text ?? null;
}
console.log(JSON.stringify({ types, text, final }));
