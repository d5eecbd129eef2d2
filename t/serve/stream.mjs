// POST /v1/chat/completions with "stream": true and include_usage: checks
// the order of the events (role first, content deltas, finish_reason, then
// the usage chunk), prints the reply put together from the deltas.
import { client, check, equal, checkUsage, request, writeMeta, main } from './lib.mjs';

main(async () => {
	const req = { ...request(), stream: true, stream_options: { include_usage: true } };
	const stream = await client().chat.completions.create(req);
	let text = '', first = true, finish = null, usage = null, n = 0, id = null;
	for await (const chunk of stream) {
		check(chunk.object === 'chat.completion.chunk', 'object');
		id = id || chunk.id;
		equal(chunk.id, id, 'one id for the stream');
		check(usage === null, 'nothing after the usage chunk');
		if (chunk.usage) {
			equal(chunk.choices, [], 'the usage chunk has no choices');
			usage = chunk.usage;
			continue;
		}
		equal(chunk.choices.length, 1, 'one choice a chunk');
		const c = chunk.choices[0];
		check(finish === null, 'nothing after finish_reason but usage');
		if (first) {
			equal(c.delta.role, 'assistant', 'the first delta has the role');
			first = false;
		} else {
			check(c.delta.role === undefined, 'role only in the first delta');
		}
		if (c.finish_reason) {
			finish = c.finish_reason;
			continue;
		}
		if (c.delta.content) {
			check(!c.delta.content.includes('\ufffd'), 'whole characters in each delta');
			text += c.delta.content;
			n++;
		}
	}
	check(['stop', 'length'].includes(finish), 'a finish_reason');
	checkUsage(usage);
	process.stdout.write(text);
	writeMeta({ usage, finish: [finish], deltas: n });
});
