// GET /v1/models through the client: prints the ids, one a line.
import { client, check, main } from './lib.mjs';

main(async () => {
	const ids = [];
	for await (const m of client().models.list()) {
		check(m.object === 'model', 'object is "model"');
		check(typeof m.owned_by === 'string', 'owned_by');
		ids.push(m.id);
	}
	const first = await client().models.retrieve(ids[0]);
	check(first.id === ids[0], 'models.retrieve');
	process.stdout.write(ids.join('\n') + '\n');
});
