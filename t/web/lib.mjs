// Shared by the t6004-web.sh browser scripts: headless Chromium (Debian's)
// driven through puppeteer-core, pointed at the server under test.
import puppeteer from 'puppeteer-core';
import { writeFileSync } from 'node:fs';

export const url = process.env.GM_SERVE_URL;
export const key = process.env.GM_SERVE_KEY || '';
export const shots = process.env.GM_SHOTS || '.';

export async function launch() {
	return puppeteer.launch({
		executablePath: process.env.GM_CHROMIUM || '/usr/bin/chromium',
		headless: true,
		// the test may run as root in a container: no sandbox, no /dev/shm to speak of, no GPU
		args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
			'--disable-extensions', '--disable-background-networking'],
	});
}

// A page at PATH of the server, the API key given in its dialog when it asks.
export async function open(browser, path) {
	const page = await browser.newPage();
	await page.setViewport({ width: 1280, height: 800 });
	page.errors = [];
	page.on('pageerror', (e) => page.errors.push(e.message));
	page.on('console', (m) => {
		// the 401 that makes the page ask for the key is expected
		if (m.type() === 'error' && !/status of 401/.test(m.text()))
			page.errors.push(m.text());
	});
	await page.goto(url + path);
	await login(page);
	return page;
}

export async function login(page) {
	await page.waitForFunction(() => document.getElementById('key-dialog').open ||
		document.getElementById('set-model').options.length > 0, { timeout: 15000 });
	if (await page.evaluate(() => document.getElementById('key-dialog').open)) {
		await page.type('#key-input', key);
		await page.click('#key-save');
	}
	await page.waitForFunction(() => document.getElementById('set-model').options.length > 0, { timeout: 15000 });
}

// Sets chat settings by their field names, as a person would (change events).
export async function settings(page, values) {
	await page.evaluate((v) => {
		for (const [k, x] of Object.entries(v)) {
			const el = document.getElementById('set-' + k);
			el.value = String(x);
			el.dispatchEvent(new Event('change', { bubbles: true }));
		}
	}, values);
}

export async function sendMessage(page, text) {
	await page.click('#prompt');
	await page.type('#prompt', text);
	await page.click('#send');
}

export const generating = (page) => page.evaluate(() => !document.getElementById('stop').hidden);

// Waits for the reply to end; the conversation as the page stored it.
export async function replyDone(page, timeout = 30000) {
	await page.waitForFunction(() => document.getElementById('stop').hidden &&
		document.querySelector('.msg[data-role=assistant]:last-child .actions'), { timeout });
	return stored(page);
}

export const stored = (page) => page.evaluate(() => JSON.parse(localStorage.getItem('gm.chat.v1') || 'null'));

export function check(cond, what) {
	if (!cond)
		throw new Error('assertion failed: ' + what);
}

export function writeJson(file, o) {
	writeFileSync(file, JSON.stringify(o, null, 1) + '\n');
}

export const sleep = (ms) => new Promise((f) => setTimeout(f, ms));

export function main(fn) {
	fn().then(() => process.exit(0), (e) => {
		console.error(e && e.stack || e);
		process.exit(1);
	});
}
