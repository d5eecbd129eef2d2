// Shared by the t6000-serve.sh client scripts: the official openai package
// pointed at the server under test, and small assertions.
import OpenAI from 'openai';
import { writeFileSync } from 'node:fs';

export function client() {
	const baseURL = process.env.GM_SERVE_URL;
	if (!baseURL)
		throw new Error('GM_SERVE_URL is not set');
	// no retries: a 429 must reach the test as it is
	return new OpenAI({ baseURL: baseURL + '/v1', apiKey: process.env.GM_SERVE_KEY || 'none', maxRetries: 0 });
}

export function check(cond, what) {
	if (!cond)
		throw new Error('assertion failed: ' + what);
}

export function equal(got, want, what) {
	if (JSON.stringify(got) !== JSON.stringify(want))
		throw new Error(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
}

// usage has exact counts that add up
export function checkUsage(u) {
	check(u && Number.isInteger(u.prompt_tokens) && u.prompt_tokens > 0, 'usage.prompt_tokens > 0');
	check(Number.isInteger(u.completion_tokens) && u.completion_tokens >= 0, 'usage.completion_tokens');
	equal(u.total_tokens, u.prompt_tokens + u.completion_tokens, 'usage.total_tokens');
}

// The request is the first argument (JSON); what the shell compares goes to
// stdout (the text, exactly) and meta.json (usage, finish reasons...).
export function request() {
	return JSON.parse(process.argv[2]);
}

export function writeMeta(meta) {
	writeFileSync(process.env.GM_META || 'meta.json', JSON.stringify(meta) + '\n');
}

export async function main(fn) {
	try {
		await fn();
	} catch (e) {
		console.error(e && e.stack ? e.stack : String(e));
		process.exit(1);
	}
}
