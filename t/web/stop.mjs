// stop.mjs: a long reply stopped with the Stop button while it streams;
// writes stop.json ({finish, chars, tries}).
import { launch, open, settings, sendMessage, replyDone, check, writeJson, sleep, main } from './lib.mjs';

main(async () => {
	const browser = await launch();
	try {
		const page = await open(browser, '/#chat');
		let last;
		// a sampled reply may end on its own before the click: then again, with another seed
		for (let tries = 1; tries <= 4; tries++) {
			await page.click('#new-chat');
			// as long as the context allows, so that the server is still at it when Stop is clicked
			await settings(page, { temperature: 1, max_tokens: 2000, seed: 100 + tries });
			await sendMessage(page, 'Tell me the whole story, at length.');
			await page.waitForFunction(() => {
				const m = document.querySelector('.msg[data-role=assistant]:last-child .content');
				return (m && m.textContent.length > 20) || document.getElementById('stop').hidden;
			}, { timeout: 30000, polling: 'mutation' });
			// clicked only if it is still there: checking first and clicking after would race the reply's end
			const still = await page.evaluate(() => {
				const b = document.getElementById('stop');
				if (b.hidden)
					return false;
				b.click();
				return true;
			});
			const conv = await replyDone(page);
			const m = conv.messages[conv.messages.length - 1];
			last = { finish: m.meta.finish, chars: m.content.length, tries, clicked: still };
			if (still)
				break;
			await sleep(100);
		}
		check(last.clicked, 'a reply was still streaming when Stop was clicked');
		writeJson('stop.json', last);
	} finally {
		await browser.close();
	}
});
