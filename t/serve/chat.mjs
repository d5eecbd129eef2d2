// POST /v1/chat/completions, not streamed: prints the reply (choices
// separated by a line "--- N"), writes usage and finish reasons to meta.json.
import { client, check, equal, checkUsage, request, writeMeta, main } from './lib.mjs';

main(async () => {
	const req = request();
	const r = await client().chat.completions.create(req);
	check(r.object === 'chat.completion', 'object');
	check(r.id.startsWith('chatcmpl-'), 'id');
	equal(r.model, req.model, 'model');
	checkUsage(r.usage);
	equal(r.choices.map((c) => c.index), [...Array(req.n || 1).keys()], 'choice indexes');
	for (const c of r.choices) {
		equal(c.message.role, 'assistant', 'role');
		check(['stop', 'length'].includes(c.finish_reason), 'finish_reason');
		if (req.logprobs) {
			// greedy: each token is the most likely one, and the tokens spell the reply
			const lp = c.logprobs.content;
			equal(lp.map((t) => t.token).join(''), c.message.content, 'logprobs tokens spell the content');
			for (const t of lp) {
				check(t.logprob <= 0, 'logprob <= 0');
				equal(t.top_logprobs.length, req.top_logprobs, 'top_logprobs count');
				if (!req.temperature)
					equal(t.top_logprobs[0].token, t.token, 'greedy token is the top one');
				equal(Buffer.from(t.bytes).toString(), t.token, 'bytes');
			}
		}
	}
	process.stdout.write(r.choices.map((c, i) => (i ? `\n--- ${i}\n` : '') + c.message.content).join(''));
	writeMeta({ usage: r.usage, finish: r.choices.map((c) => c.finish_reason) });
});
