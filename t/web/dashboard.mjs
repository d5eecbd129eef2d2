// dashboard.mjs: the dashboard watched while load.mjs runs beside it;
// writes dashboard.json (the numbers before, during and after) and the
// dashboard screenshot.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { launch, open, check, writeJson, sleep, shots, main } from './lib.mjs';

const read = (page) => page.evaluate(() => {
	const v = (id) => {
		const s = document.getElementById(id).dataset.value;
		return s === undefined || s === '' ? null : Number(s);
	};
	// pixels drawn on a chart: its lines and grid
	const inked = (id) => {
		const c = document.getElementById(id);
		const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
		let n = 0;
		for (let i = 3; i < d.length; i += 4)
			n += d[i] > 0;
		return n;
	};
	return { running: v('dash-running'), queued: v('dash-queued'), rate: v('dash-completion-rate'),
		prompt_rate: v('dash-prompt-rate'), total: v('dash-completion-total'), finished: v('dash-finished'),
		cancelled: v('dash-cancelled'), kv: v('dash-kv'), tpot: v('dash-tpot'), ttft: v('dash-ttft'),
		ink: inked('chart-tokens'),
		adapters: [...document.querySelectorAll('#adapters-body tr')].map((r) => r.cells[0].textContent)
			.filter((x) => x.includes(':')) };
});

main(async () => {
	const browser = await launch();
	try {
		const page = await open(browser, '/#dashboard');
		// tall enough for every chart and the adapters in the screenshot
		await page.setViewport({ width: 1280, height: 1180 });
		await page.waitForFunction(() => document.getElementById('dash-finished').dataset.value !== undefined,
			{ timeout: 15000 });
		const before = await read(page);
		const load = spawn(process.execPath, [fileURLToPath(new URL('./load.mjs', import.meta.url)), '6', '3'],
			{ stdio: ['ignore', 'pipe', 'inherit'] });
		let out = '';
		load.stdout.on('data', (d) => (out += d));
		const ended = new Promise((f) => load.on('exit', f));
		let finished = false, shot = false;
		ended.then(() => (finished = true));
		const during = [];
		const t0 = Date.now();
		while (!finished) {
			const x = await read(page);
			during.push(x);
			if (!shot && Date.now() - t0 > 3500 && x.running > 0 && x.rate > 0) {
				await page.screenshot({ path: `${shots}/dashboard.png` });
				shot = true;
			}
			await sleep(250);
		}
		check((await ended) === 0, 'load.mjs succeeded');
		const result = JSON.parse(out);
		// the sample after the last request, and the event that carries it
		await sleep(2300);
		const after = await read(page);
		if (!shot)
			await page.screenshot({ path: `${shots}/dashboard.png` });
		// an adapter that learns while serving (not in the server yet): its version, examples and loss curve
		const learning = await page.evaluate(() => {
			renderAdapters([{ id: 'm:live', name: 'live', kind: 'lora', requests_total: 4, completion_tokens_total: 9,
				learning: { version: 3, examples_seen: 120, loss: [2.5, 2.1, 1.7, 1.6] } }]);
			const row = document.querySelector('#adapters-body tr');
			return { cells: [...row.cells].slice(0, 6).map((c) => c.textContent), curve: !!row.querySelector('canvas') };
		});
		check(page.errors.length === 0, 'no errors in the page: ' + page.errors.join('; '));
		writeJson('dashboard.json', {
			learning,
			before, after, load: result,
			max_running: Math.max(...during.map((x) => x.running || 0)),
			max_rate: Math.max(...during.map((x) => x.rate || 0)),
			max_prompt_rate: Math.max(...during.map((x) => x.prompt_rate || 0)),
			totals: [...new Set(during.map((x) => x.total))].length,
			adapters: after.adapters,
		});
	} finally {
		await browser.close();
	}
});
