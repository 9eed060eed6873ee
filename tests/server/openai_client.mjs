// openai_client.mjs — the official `openai` npm package against `lmx serve` (run by
// openai_client.sh): chat and completions, streamed and not, usage (cached_tokens), models,
// and the SDK's error classes for 400 / 401 / 404. Exits nonzero on the first failed check.
import OpenAI from 'openai';

const baseURL = process.env.LMX_BASE_URL, model = process.env.LMX_MODEL, apiKey = process.env.LMX_KEY;
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60000 });
let checks = 0;
function check(cond, what) {
  checks++;
  if (!cond) { console.error(`FAIL: ${what}`); process.exit(1); }
}
const messages = [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Tell me a story' }];

const models = await client.models.list();
check(models.data.some((m) => m.id === model), 'models.list has the model');

const chat = await client.chat.completions.create({ model, messages, max_tokens: 12, temperature: 0 });
check(chat.object === 'chat.completion', 'chat object');
check(typeof chat.choices[0].message.content === 'string', 'chat content');
check(['stop', 'length'].includes(chat.choices[0].finish_reason), 'chat finish_reason');
check(chat.usage.prompt_tokens > 0 && chat.usage.completion_tokens > 0, 'chat usage');
check(chat.usage.total_tokens === chat.usage.prompt_tokens + chat.usage.completion_tokens, 'chat total_tokens');
check(chat.usage.prompt_tokens_details.cached_tokens === 0, 'chat cached_tokens');

const stream = await client.chat.completions.create({
  model, messages, max_tokens: 12, temperature: 0, stream: true, stream_options: { include_usage: true },
});
let text = '', finish = null, usage = null;
for await (const chunk of stream) {
  check(chunk.object === 'chat.completion.chunk', 'chunk object');
  if (chunk.choices.length) {
    text += chunk.choices[0].delta.content ?? '';
    if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
  }
  if (chunk.usage) usage = chunk.usage;
}
check(text === chat.choices[0].message.content, `streamed chat equals the non-streamed one (${JSON.stringify(text)})`);
check(finish === chat.choices[0].finish_reason, 'streamed finish_reason');
check(usage && usage.completion_tokens === chat.usage.completion_tokens, 'streamed usage');

const cmpl = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 6, temperature: 0 });
check(cmpl.object === 'text_completion' && typeof cmpl.choices[0].text === 'string', 'completion');
check(cmpl.usage.completion_tokens > 0, 'completion usage');
const cstream = await client.completions.create({
  model, prompt: 'Once upon a time', max_tokens: 6, temperature: 0, stream: true,
});
let ctext = '';
for await (const chunk of cstream) ctext += chunk.choices[0]?.text ?? '';
check(ctext === cmpl.choices[0].text, 'streamed completion equals the non-streamed one');

async function status(p) {
  try { await p; return 0; } catch (e) { return e.status ?? -1; }
}
check(await status(client.chat.completions.create({ model: 'no-such-model', messages })) === 404, '404 unknown model');
check(await status(client.chat.completions.create({ model, messages, n: 3 })) === 400, '400 n');
const bad = new OpenAI({ baseURL, apiKey: 'wrong', maxRetries: 0 });
check(await status(bad.models.list()) === 401, '401 wrong key');
console.log(`openai ${OpenAI.VERSION ?? ''}: ${checks} checks passed`);
