// load.mjs SECONDS CONCURRENCY: keeps CONCURRENCY chat requests going
// against GM_SERVE_URL for SECONDS; prints how many finished.  Usable by
// hand to watch the dashboard: GM_SERVE_URL=http://127.0.0.1:8080 node load.mjs 30 4
const url = process.env.GM_SERVE_URL, key = process.env.GM_SERVE_KEY || '';
const [seconds = 5, concurrency = 3] = process.argv.slice(2).map(Number);
const auth = key ? { Authorization: 'Bearer ' + key } : {};
// the requests go round the model and its adapters
const models = (await (await fetch(url + '/v1/models', { headers: auth })).json()).data.map((m) => m.id);
const end = Date.now() + seconds * 1000;
let done = 0, failed = 0;

async function worker(w) {
	for (let i = 0; Date.now() < end; i++) {
		const r = await fetch(url + '/v1/chat/completions', {
			method: 'POST',
			headers: { 'Content-Type': 'application/json', ...auth },
			body: JSON.stringify({ model: models[(w + i) % models.length], messages: [{ role: 'user', content: `Story ${w}.${i}: tell it.` }],
				max_tokens: 48, temperature: 0.9, seed: w * 1000 + i }),
		});
		await r.text();
		if (r.ok)
			done++;
		else
			failed++;
	}
}

await Promise.all([...Array(concurrency).keys()].map(worker));
console.log(JSON.stringify({ done, failed }));
