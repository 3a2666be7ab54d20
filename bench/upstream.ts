import { startFakeOpenAI } from '../test/support/fake-openai.ts';

// The bench's upstream: the tests' fake OpenAI-compatible server in a process of its own, so that
// its CPU time can be read apart from Callboard's. It prints one JSON line with its URL.

const dimensions = Number(process.env.BENCH_EMBEDDING_DIMENSIONS ?? 1536);
const fake = await startFakeOpenAI({ defaultEmbeddingDimensions: dimensions });

// The fake records every request for the tests' assertions; a bench would only grow its heap.
const forget = setInterval(() => fake.requests.splice(0), 1000);

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  clearInterval(forget);
  await fake.close();
  process.exit(0);
};
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
// The bench is the only reader of standard input: when it goes away, so does the upstream.
process.stdin.on('end', () => void stop()).resume();

console.log(JSON.stringify({ url: fake.url, openaiBaseURL: fake.openaiBaseURL }));
