// llama_logits.mjs — next-token logits of a GGUF model as llama.cpp computes them.
//
//   node llama_logits.mjs MODEL.gguf IDS.json OUT.bin [LORA.gguf]
//
// IDS.json is a JSON array of token-id sequences. For every sequence the model (plus the
// LoRA adapter, scale 1, when given) evaluates the ids from position 0 in a fresh context
// sequence, through node-llama-cpp's controlledEvaluate, asking for the raw logits after
// every token (F32 KV cache, no flash attention). OUT.bin gets, sequence after sequence, position after position, the
// `vocab` float32 logits (little-endian). CPU only, one thread, so runs are repeatable.
// node-llama-cpp is resolved from NODE_PATH (the test installs it outside the source tree).
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const [modelPath, idsPath, outPath, loraPath] = process.argv.slice(2);
if (!modelPath || !idsPath || !outPath) {
  console.error("usage: node llama_logits.mjs MODEL.gguf IDS.json OUT.bin [LORA.gguf]");
  process.exit(2);
}
// ESM ignores NODE_PATH, so resolve the package through a require rooted there.
const roots = (process.env.NODE_PATH || "").split(path.delimiter).filter(Boolean);
let entry = null;
for (const root of roots) {
  try {
    entry = createRequire(path.join(root, "noop.js")).resolve("node-llama-cpp");
    break;
  } catch { /* next */ }
}
const { getLlama, LlamaLogLevel } = await import(entry ?? "node-llama-cpp");

const sequences = JSON.parse(fs.readFileSync(idsPath, "utf8"));
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
const maxLen = Math.max(...sequences.map((s) => s.length));
const context = await model.createContext({
  contextSize: Math.max(32, maxLen),
  sequences: 1,
  threads: 1,
  batchSize: Math.max(32, maxLen),
  // An F32 KV cache, so an F32 model runs in F32 throughout (llama.cpp's default is F16).
  experimentalKvCacheKeyType: "F32",
  experimentalKvCacheValueType: "F32",
  flashAttention: false,
  ...(loraPath ? { lora: { adapters: [{ filePath: loraPath, scale: 1.0 }] } } : {}),
});
const out = fs.openSync(outPath, "w");
let nVocab = 0;
const sequence = context.getSequence();
for (const ids of sequences) {
  await sequence.clearHistory();
  const input = ids.map((t) => [t, { generateNext: { logits: true } }]);
  const results = await sequence.controlledEvaluate(input);
  for (const r of results) {
    const logits = r?.next?.logits;
    if (!logits) throw new Error("node-llama-cpp returned no logits");
    if (nVocab === 0) nVocab = logits.size;
    const row = new Float32Array(nVocab);
    row.fill(Number.NaN);
    for (const [token, value] of logits) row[token] = value;
    fs.writeSync(out, Buffer.from(row.buffer));
  }
}
sequence.dispose();
fs.closeSync(out);
console.log(JSON.stringify({ vocab: nVocab, sequences: sequences.length }));
await context.dispose();
await model.dispose();
await llama.dispose();
