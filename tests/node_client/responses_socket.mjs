// The official openai Node SDK's WebSocket mode (ResponsesWS, on the `ws` package) through the gateway; run by
// tests/test_websocket.py.
//
//   node responses_socket.mjs <gateway base URL, .../v1> <x-portkey-provider>
//
// Two turns on one socket, the second continuing the first by previous_response_id with store: false, then a
// previous_response_id the socket does not hold. Prints one JSON object: each turn's event types and text.

import OpenAI from "openai";
import { ResponsesWS } from "openai/resources/responses/ws";

const [baseURL, provider] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "sk-node-client", defaultHeaders: { "x-portkey-provider": provider } });
const socket = new ResponsesWS(client);
const turns = [];
let current = null;
let waiting = null;

socket.on("event", (event) => {
  current.types.push(event.type);
  if (event.type === "response.completed") {
    current.text = event.response.output.flatMap((item) => item.content ?? []).map((part) => part.text).join("");
  }
  if (event.type === "response.completed" || event.type === "error") {
    if (event.type === "error") current.error = event.error?.code ?? null;
    else current.id = event.response.id;
    waiting();
  }
});
socket.on("error", () => {}); // error events are read above; without a listener the SDK throws

async function turn(body) {
  current = { types: [] };
  turns.push(current);
  const done = new Promise((resolve) => (waiting = resolve));
  socket.send({ type: "response.create", model: "m", store: false, ...body });
  await done;
  return current;
}

const first = await turn({ input: "remember the number seven" });
await turn({ input: "which number?", previous_response_id: first.id });
await turn({ input: "and now?", previous_response_id: "resp_never_made_here" });
socket.close({ code: 1000, reason: "done" });
console.log(JSON.stringify({ turns }));
