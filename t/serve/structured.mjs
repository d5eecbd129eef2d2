// Structured output through the openai client: response_format json_schema
// (nested objects, arrays, enums, $ref) with random sampling, not streamed and
// streamed, and json_object.  Every output is written to outputs.jsonl as
// {"schema": NAME, "text": TEXT, "finish": REASON} for the shell to validate
// with an independent validator; an unsupported keyword must be a 400 naming it.
import { client, check, equal, main } from './lib.mjs';
import { writeFileSync, readFileSync } from 'node:fs';

const schemas = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const model = process.env.GM_MODEL;

main(async () => {
	const c = client();
	const out = [];
	const messages = [{ role: 'user', content: 'Describe a person as JSON.' }];
	for (const [name, schema] of Object.entries(schemas)) {
		const response_format = { type: 'json_schema', json_schema: { name, schema, strict: true } };
		for (let seed = 1; seed <= 3; seed++) {
			const r = await c.chat.completions.create({ model, messages, response_format, temperature: 1,
				seed, n: 2, max_tokens: 600 });
			equal(r.choices.length, 2, 'two choices');
			for (const ch of r.choices)
				out.push({ schema: name, text: ch.message.content, finish: ch.finish_reason });
		}
		// streamed: the deltas put together are the output
		const stream = await c.chat.completions.create({ model, messages, response_format, temperature: 1,
			seed: 7, max_tokens: 600, stream: true });
		let text = '', finish = null;
		for await (const chunk of stream) {
			const ch = chunk.choices[0];
			if (!ch)
				continue;
			text += ch.delta.content || '';
			finish = ch.finish_reason || finish;
		}
		out.push({ schema: name, text, finish });
	}
	// json_object: any JSON object
	for (let seed = 1; seed <= 3; seed++) {
		const r = await c.chat.completions.create({ model, messages, response_format: { type: 'json_object' },
			temperature: 1, seed, max_tokens: 40 });
		out.push({ schema: 'json_object', text: r.choices[0].message.content, finish: r.choices[0].finish_reason });
	}
	// a keyword that is not supported: 400 naming it
	let error = null;
	try {
		await c.chat.completions.create({ model, messages, response_format: { type: 'json_schema',
			json_schema: { name: 'bad', schema: { type: 'object', properties: { a: { type: 'string', not: {} } } } } } });
	} catch (e) {
		error = e;
	}
	check(error && error.status === 400, 'an unsupported keyword is a 400');
	check(/keyword 'not' is not supported/.test(error.message) && /properties\.a/.test(error.message),
		'the 400 names the keyword and where: ' + (error && error.message));
	equal(error.param, 'response_format', 'the 400 names the parameter');
	writeFileSync('outputs.jsonl', out.map((o) => JSON.stringify(o)).join('\n') + '\n');
});
