// Tool calling through the official openai client (t6003-serve-tools.sh):
//   tools.mjs roundtrip | stream | named | seeds
// Every call's arguments are checked against its function's JSON Schema
// by Ajv, a validator independent of the server.
import Ajv from 'ajv';
import { client, check, equal, checkUsage, main } from './lib.mjs';

const model = process.env.GM_MODEL;

export const tools = [
	{
		type: 'function',
		function: {
			name: 'get_weather',
			description: 'The weather of a city for the next days',
			parameters: {
				type: 'object',
				properties: {
					city: { type: 'string', enum: ['Paris', 'London', 'Tokyo'] },
					days: { type: 'integer', minimum: 1, maximum: 7 },
				},
				required: ['city', 'days'],
				additionalProperties: false,
			},
		},
	},
	{
		type: 'function',
		function: {
			name: 'get_time',
			description: 'The time in a time zone',
			parameters: {
				type: 'object',
				properties: { zone: { type: 'string', enum: ['UTC', 'CET', 'JST'] } },
				required: ['zone'],
				additionalProperties: false,
			},
		},
	},
];

const ajv = new Ajv({ strict: true });
const validators = Object.fromEntries(tools.map((t) => [t.function.name, ajv.compile(t.function.parameters)]));

// one call as the API returns it: an id, a known function, arguments valid for its schema
function checkCall(c, what) {
	check(typeof c.id === 'string' && c.id.length > 0, `${what}: an id`);
	equal(c.type, 'function', `${what}: type`);
	const v = validators[c.function.name];
	check(v, `${what}: a known function (${c.function.name})`);
	let args;
	try {
		args = JSON.parse(c.function.arguments);
	} catch (e) {
		throw new Error(`${what}: arguments are not JSON: ${c.function.arguments}`);
	}
	if (!v(args))
		throw new Error(`${what}: arguments ${c.function.arguments} do not match the schema: ` +
				ajv.errorsText(v.errors));
	return args;
}

const ask = [{ role: 'user', content: 'What is the weather in Paris for 3 days?' }];

async function roundtrip() {
	const api = client();
	const r = await api.chat.completions.create({
		model, messages: ask, tools, tool_choice: 'required', parallel_tool_calls: false,
		max_tokens: 200, temperature: 0,
	});
	const m = r.choices[0].message;
	equal(r.choices[0].finish_reason, 'tool_calls', 'finish_reason');
	check(Array.isArray(m.tool_calls) && m.tool_calls.length === 1, 'one call (parallel_tool_calls false)');
	check(m.content === null, 'no content beside the call');
	checkCall(m.tool_calls[0], 'the call');
	checkUsage(r.usage);
	// the call goes back with its result; the model answers in text
	const history = [
		...ask,
		{ role: 'assistant', content: null, tool_calls: m.tool_calls },
		{ role: 'tool', tool_call_id: m.tool_calls[0].id, content: '{"forecast": "sunny, 21 C"}' },
	];
	const r2 = await api.chat.completions.create({
		model, messages: history, tools, tool_choice: 'none', max_tokens: 16, temperature: 0,
	});
	const m2 = r2.choices[0].message;
	check(typeof m2.content === 'string', 'an answer in text');
	check(m2.tool_calls === undefined, 'no calls with tool_choice none');
	check(['stop', 'length'].includes(r2.choices[0].finish_reason), 'the answer\'s finish_reason');
	// the history was read: the prompt holds the call and its result
	check(r2.usage.prompt_tokens > r.usage.prompt_tokens + 10, 'the call and its result are in the prompt');
	console.log(JSON.stringify({ call: m.tool_calls[0].function, answer_finish: r2.choices[0].finish_reason }));
}

// streamed delta.tool_calls put together equal the calls of the same request not streamed
async function stream() {
	const api = client();
	// parallel calls: the random model goes on until max_tokens, the last call cut short
	const req = { model, messages: ask, tools, tool_choice: 'required', max_tokens: 300, seed: 5, temperature: 0.8 };
	const whole = await api.chat.completions.create(req);
	const s = await api.chat.completions.create({ ...req, stream: true, stream_options: { include_usage: true } });
	const calls = [];
	let finish = null, content = '', usage = null;
	for await (const chunk of s) {
		if (chunk.usage) {
			usage = chunk.usage;
			continue;
		}
		const c = chunk.choices[0];
		if (c.finish_reason)
			finish = c.finish_reason;
		if (c.delta.content)
			content += c.delta.content;
		for (const d of c.delta.tool_calls || []) {
			check(Number.isInteger(d.index), 'a delta has an index');
			if (d.index === calls.length) {
				check(d.id && d.type === 'function' && d.function.name, 'a call\'s first delta: id, type, name');
				calls.push({ id: d.id, type: d.type, function: { name: d.function.name, arguments: '' } });
			} else {
				check(d.index < calls.length && d.id === undefined && d.function.name === undefined,
				      'later deltas: arguments only');
			}
			calls[d.index].function.arguments += d.function.arguments || '';
		}
	}
	checkUsage(usage);
	const w = whole.choices[0];
	equal(finish, w.finish_reason, 'finish_reason streamed and not');
	equal(content, w.message.content || '', 'content streamed and not');
	equal(calls.map((c) => c.function), (w.message.tool_calls || []).map((c) => c.function),
	      'calls streamed and not');
	// every call but one cut short by max_tokens is whole and valid
	calls.forEach((c, i) => {
		if (finish === 'tool_calls' || i < calls.length - 1)
			checkCall(c, `streamed call ${i}`);
	});
	check(calls.length >= 1, 'at least one call');
	console.log(JSON.stringify({ calls: calls.length, finish }));
}

async function named() {
	const api = client();
	for (const q of ['What is the weather in Paris for 3 days?', 'What time is it in Tokyo?', 'Hello!']) {
		const r = await api.chat.completions.create({
			model, messages: [{ role: 'user', content: q }], tools,
			tool_choice: { type: 'function', function: { name: 'get_time' } }, parallel_tool_calls: false,
			max_tokens: 300, temperature: 0,
		});
		const m = r.choices[0].message;
		equal(r.choices[0].finish_reason, 'tool_calls', 'finish_reason');
		equal(m.tool_calls.length, 1, 'one call (parallel_tool_calls false)');
		for (const c of m.tool_calls) {
			equal(c.function.name, 'get_time', 'only the named function');
			checkCall(c, 'a named call');
		}
	}
	console.log('named ok');
}

// required, sampled at temperature 1 with several seeds: every call valid
async function seeds() {
	const api = client();
	const n = Number(process.argv[3] || 10);
	let nc = 0;
	for (let seed = 1; seed <= n; seed++) {
		const r = await api.chat.completions.create({
			model, messages: ask, tools, tool_choice: 'required', parallel_tool_calls: false, max_tokens: 400,
			seed, temperature: 1, top_p: 1,
		});
		const c = r.choices[0];
		equal(c.finish_reason, 'tool_calls', `seed ${seed}: finish_reason`);
		c.message.tool_calls.forEach((t, i) => checkCall(t, `seed ${seed} call ${i}`));
		nc += c.message.tool_calls.length;
	}
	console.log(JSON.stringify({ seeds: n, calls: nc }));
}

main(async () => {
	const modes = { roundtrip, stream, named, seeds };
	const f = modes[process.argv[2]];
	if (!f)
		throw new Error('tools.mjs roundtrip|stream|named|seeds');
	await f();
});
