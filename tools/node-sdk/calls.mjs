// The AWS SDK for JavaScript's Bedrock Runtime client, unchanged: its default request
// handler (NodeHttp2Handler, HTTP/2), pointed at the proxy by AWS_ENDPOINT_URL_BEDROCK_RUNTIME.
// Runs each operation once and prints one JSON line per call: its request id and usage as
// the SDK saw it, for tests/e2e/test_node_sdk.py to compare with what the proxy metered.
//   node calls.mjs <modelId> [operation ...]
import {
  BedrockRuntimeClient,
  ConverseCommand,
  ConverseStreamCommand,
  CountTokensCommand,
  InvokeModelCommand,
  InvokeModelWithResponseStreamCommand,
} from "@aws-sdk/client-bedrock-runtime";

const [modelId, ...wanted] = process.argv.slice(2);
const client = new BedrockRuntimeClient({ region: process.env.AWS_REGION ?? "us-east-1", maxAttempts: 1 });
const messages = [{ role: "user", content: [{ text: "Say hello in five words." }] }];
const claude = modelId.includes("anthropic");
const invokeBody = JSON.stringify(claude
  ? { anthropic_version: "bedrock-2023-05-31", max_tokens: 40, messages: [{ role: "user", content: "Say hello." }] }
  : { schemaVersion: "messages-v1", messages, inferenceConfig: { maxTokens: 40 } });

const operations = {
  async Converse() {
    const out = await client.send(new ConverseCommand({ modelId, messages, inferenceConfig: { maxTokens: 40 } }));
    return { usage: { input: out.usage.inputTokens, output: out.usage.outputTokens }, requestId: out.$metadata.requestId };
  },
  async ConverseStream() {
    const out = await client.send(new ConverseStreamCommand({ modelId, messages, inferenceConfig: { maxTokens: 40 } }));
    let usage = null;
    let text = "";
    for await (const event of out.stream) {
      if (event.contentBlockDelta) text += event.contentBlockDelta.delta?.text ?? "";
      if (event.metadata) usage = { input: event.metadata.usage.inputTokens, output: event.metadata.usage.outputTokens };
    }
    return { usage, text, requestId: out.$metadata.requestId };
  },
  async InvokeModel() {
    const out = await client.send(new InvokeModelCommand({ modelId, body: invokeBody, contentType: "application/json" }));
    const doc = JSON.parse(Buffer.from(out.body).toString());
    const usage = claude ? { input: doc.usage.input_tokens, output: doc.usage.output_tokens }
      : { input: doc.usage.inputTokens, output: doc.usage.outputTokens };
    return { usage, requestId: out.$metadata.requestId };
  },
  async InvokeModelWithResponseStream() {
    const out = await client.send(new InvokeModelWithResponseStreamCommand({ modelId, body: invokeBody, contentType: "application/json" }));
    let usage = null;
    for await (const event of out.body) {
      if (!event.chunk) continue;
      const doc = JSON.parse(Buffer.from(event.chunk.bytes).toString());
      const metrics = doc["amazon-bedrock-invocationMetrics"];
      if (metrics) usage = { input: metrics.inputTokenCount, output: metrics.outputTokenCount };
    }
    return { usage, requestId: out.$metadata.requestId };
  },
  async CountTokens() {
    const out = await client.send(new CountTokensCommand({ modelId, input: { converse: { messages } } }));
    return { usage: { input: out.inputTokens, output: 0 }, requestId: out.$metadata.requestId };
  },
};

for (const name of wanted.length ? wanted : Object.keys(operations)) {
  try {
    const result = await operations[name]();
    console.log(JSON.stringify({ operation: name, ok: true, ...result }));
  } catch (error) {
    console.log(JSON.stringify({ operation: name, ok: false, error: `${error.name}: ${error.message}`, stack: process.env.DEBUG_STACK ? error.stack : undefined,
      status: error.$metadata?.httpStatusCode, requestId: error.$metadata?.requestId }));
  }
}
client.destroy();
