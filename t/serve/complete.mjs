// POST /v1/completions: prints each choice's text (choices separated by a
// line "--- N"), writes usage and finish reasons to meta.json.
import { client, check, equal, checkUsage, request, writeMeta, main } from './lib.mjs';

main(async () => {
	const req = request();
	const r = await client().completions.create(req);
	check(r.object === 'text_completion', 'object');
	check(r.id.startsWith('cmpl-'), 'id');
	equal(r.model, req.model, 'model');
	checkUsage(r.usage);
	equal(r.choices.map((c) => c.index), [...Array(req.n || 1).keys()], 'choice indexes');
	process.stdout.write(r.choices.map((c, i) => (i ? `\n--- ${i}\n` : '') + c.text).join(''));
	writeMeta({ usage: r.usage, finish: r.choices.map((c) => c.finish_reason), logprobs: r.choices[0].logprobs });
});
