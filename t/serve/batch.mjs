// batch.mjs REQUESTS.json: sends every request of the list at once (each
// after its own "delay_ms"), streamed or not, with plain fetch (no package
// needed).  For request I: its text in out.I (a stream's deltas put
// together), its HTTP status in status.I, and meta.I.json with the finish
// reason, usage and, for a stream, the number of events and the longest
// gap between two of them (seconds).
import { readFileSync, writeFileSync } from 'node:fs';

const url = process.env.GM_SERVE_URL;
const key = process.env.GM_SERVE_KEY;
const reqs = JSON.parse(readFileSync(process.argv[2], 'utf8'));

async function readStream(res) {
	const dec = new TextDecoder();
	let buf = '', text = '', finish = null, usage = null, events = 0, gap = 0, last = null, done = false;
	for await (const piece of res.body) {
		const now = performance.now() / 1000;
		buf += dec.decode(piece, { stream: true });
		let nl;
		while ((nl = buf.indexOf('\n\n')) >= 0) {
			const ev = buf.slice(0, nl);
			buf = buf.slice(nl + 2);
			if (!ev.startsWith('data: '))
				throw new Error('not an event: ' + ev);
			const data = ev.slice(6);
			if (data === '[DONE]') {
				done = true;
				continue;
			}
			const c = JSON.parse(data);
			if (c.error)
				throw new Error('error event: ' + data);
			if (last !== null && now - last > gap)
				gap = now - last;
			last = now;
			events++;
			if (c.usage)
				usage = c.usage;
			for (const ch of c.choices || []) {
				text += ch.delta ? (ch.delta.content || '') : (ch.text || '');
				if (ch.finish_reason)
					finish = ch.finish_reason;
			}
		}
	}
	if (!done)
		throw new Error('the stream ended without [DONE]');
	return { text, meta: { finish, usage, events, gap } };
}

async function one(r, i) {
	if (r.delay_ms)
		await new Promise((ok) => setTimeout(ok, r.delay_ms));
	const headers = { 'Content-Type': 'application/json' };
	if (key)
		headers.Authorization = 'Bearer ' + key;
	const res = await fetch(url + r.path, { method: 'POST', headers, body: JSON.stringify(r.body) });
	writeFileSync(`status.${i}`, res.status + '\n');
	if (res.status !== 200) {
		writeFileSync(`out.${i}`, await res.text());
		return;
	}
	let got;
	if (r.body.stream) {
		got = await readStream(res);
	} else {
		const j = await res.json();
		const c = j.choices[0];
		got = { text: c.message ? c.message.content : c.text, meta: { finish: c.finish_reason, usage: j.usage } };
	}
	writeFileSync(`out.${i}`, got.text);
	writeFileSync(`meta.${i}.json`, JSON.stringify(got.meta) + '\n');
}

try {
	await Promise.all(reqs.map(one));
} catch (e) {
	console.error(e && e.stack ? e.stack : String(e));
	process.exit(1);
}
