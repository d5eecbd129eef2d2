// chat.mjs PROMPT MAX_TOKENS: a greedy chat in the page; prints the reply as
// streamed (stored), writes chat.json (what the page shows, before and
// after a reload, and after Retry) and the chat screenshot.
import { launch, open, settings, sendMessage, replyDone, stored, check, writeJson, shots, main } from './lib.mjs';

main(async () => {
	const [prompt, maxTokens] = process.argv.slice(2);
	const browser = await launch();
	try {
		const page = await open(browser, '/#chat');
		await settings(page, { temperature: 0, max_tokens: maxTokens, system: '' });
		await sendMessage(page, prompt);
		// tokens appear as they come: the reply is seen while it streams or at its end
		const conv = await replyDone(page);
		const reply = conv.messages[conv.messages.length - 1];
		const shown = () => page.evaluate(() => [...document.querySelectorAll('.msg')].map((m) => ({
			role: m.dataset.role,
			answer: [...m.querySelectorAll('.answer')].map((a) => a.textContent).join(''),
			think: [...m.querySelectorAll('details.think')].map((d) => ({ open: d.open, text: d.textContent })),
		})));
		const before = await shown();
		await page.screenshot({ path: `${shots}/chat.png` });

		// the conversation is kept in the browser: a reload shows it again
		await page.reload();
		await page.waitForFunction(() => document.querySelectorAll('.msg').length >= 2);
		const after = await shown();

		// Retry asks again: greedy, the same reply
		await page.click('.msg[data-role=assistant]:last-child .retry');
		await page.waitForFunction(() => !document.getElementById('stop').hidden ||
			document.querySelector('.msg[data-role=assistant]:last-child .actions'));
		const again = await replyDone(page);

		// thinking blocks are shown folded: a stored reply with one, after a reload
		await page.evaluate(() => {
			const c = JSON.parse(localStorage.getItem('gm.chat.v1'));
			c.messages.push({ role: 'user', content: 'And then?' },
				{ role: 'assistant', content: '<think>\nweighing it up\n</think>\n\nThe answer.', meta: { finish: 'stop' } });
			localStorage.setItem('gm.chat.v1', JSON.stringify(c));
		});
		await page.reload();
		await page.waitForFunction(() => document.querySelectorAll('.msg').length >= 4);
		const thinking = (await shown()).pop();
		check(page.errors.length === 0, 'no errors in the page: ' + page.errors.join('; '));
		writeJson('chat.json', {
			reply: reply.content, finish: reply.meta.finish, tokens: reply.meta.tokens,
			before, after, retry: again.messages[again.messages.length - 1].content,
			retry_count: again.messages.length, thinking,
			stored_after: (await stored(page)).messages.length,
		});
		process.stdout.write(reply.content);
	} finally {
		await browser.close();
	}
});
