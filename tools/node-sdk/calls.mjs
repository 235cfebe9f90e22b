// The AWS SDK for JavaScript's Bedrock Runtime client, unchanged: its default request
// handler (NodeHttp2Handler, HTTP/2), pointed at the proxy by AWS_ENDPOINT_URL_BEDROCK_RUNTIME.
// Runs each operation once and prints one JSON line per call: its request id and usage as
// the SDK saw it, for tests/e2e/test_node_sdk.py to compare with what the proxy metered.
//   node calls.mjs <modelId> [operation ...]
// InvokeModelWithBidirectionalStream (a Nova Sonic model) runs only when named.
import { randomUUID } from "node:crypto";
import {
  BedrockRuntimeClient,
  ConverseCommand,
  ConverseStreamCommand,
  CountTokensCommand,
  InvokeModelCommand,
  InvokeModelWithBidirectionalStreamCommand,
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
  // A Nova Sonic session: a system prompt, one spoken turn (0.5 s of silence), and the end once
  // the answer's usage event came. The input is an async generator the SDK signs event by event.
  async InvokeModelWithBidirectionalStream() {
    const promptName = randomUUID();
    let answered;
    const answer = new Promise((resolve) => { answered = resolve; });
    const event = (body) => ({ chunk: { bytes: new TextEncoder().encode(JSON.stringify({ event: body })) } });
    const content = (type, role, config) => {
      const contentName = randomUUID();
      return [contentName, event({ contentStart: { promptName, contentName, type, interactive: true, role, ...config } })];
    };
    async function* input() {
      yield event({ sessionStart: { inferenceConfiguration: { maxTokens: 1024, topP: 0.9, temperature: 0.7 } } });
      yield event({ promptStart: { promptName, textOutputConfiguration: { mediaType: "text/plain" } } });
      const [system, systemStart] = content("TEXT", "SYSTEM", { textInputConfiguration: { mediaType: "text/plain" } });
      yield systemStart;
      yield event({ textInput: { promptName, contentName: system, content: "You are a friendly assistant." } });
      yield event({ contentEnd: { promptName, contentName: system } });
      const [audio, audioStart] = content("AUDIO", "USER", { audioInputConfiguration: {
        mediaType: "audio/lpcm", sampleRateHertz: 16000, sampleSizeBits: 16, channelCount: 1, audioType: "SPEECH",
        encoding: "base64" } });
      yield audioStart;
      for (let i = 0; i < 2; i++) {
        yield event({ audioInput: { promptName, contentName: audio, content: Buffer.alloc(8000).toString("base64") } });
      }
      yield event({ contentEnd: { promptName, contentName: audio } });
      await answer;
      yield event({ promptEnd: { promptName } });
      yield event({ sessionEnd: {} });
    }
    const out = await client.send(new InvokeModelWithBidirectionalStreamCommand({ modelId, body: input() }));
    let usage = null;
    let spoken = false;
    for await (const item of out.body) {
      if (!item.chunk) continue;
      const doc = JSON.parse(Buffer.from(item.chunk.bytes).toString()).event;
      if (doc.audioOutput) spoken = true;
      if (doc.usageEvent) {
        const total = doc.usageEvent.details.total;
        usage = { input: total.input.speechTokens + total.input.textTokens,
                  output: total.output.speechTokens + total.output.textTokens,
                  speechInput: total.input.speechTokens, speechOutput: total.output.speechTokens };
        if (spoken) answered();
      }
    }
    return { usage, spoken, requestId: out.$metadata.requestId };
  },
};

const DEFAULT = ["Converse", "ConverseStream", "InvokeModel", "InvokeModelWithResponseStream", "CountTokens"];
for (const name of wanted.length ? wanted : DEFAULT) {
  try {
    const result = await operations[name]();
    console.log(JSON.stringify({ operation: name, ok: true, ...result }));
  } catch (error) {
    console.log(JSON.stringify({ operation: name, ok: false, error: `${error.name}: ${error.message}`, stack: process.env.DEBUG_STACK ? error.stack : undefined,
      status: error.$metadata?.httpStatusCode, requestId: error.$metadata?.requestId }));
  }
}
client.destroy();
