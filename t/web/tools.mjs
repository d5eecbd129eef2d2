// tools.mjs TOOLS_JSON SCHEMA_FORMAT_JSON: the settings' tools (tool choice
// required) and response_format passed through; writes tools.json.
import { launch, open, settings, sendMessage, replyDone, check, writeJson, main } from './lib.mjs';

main(async () => {
	const [tools, format] = process.argv.slice(2);
	const browser = await launch();
	try {
		const page = await open(browser, '/#chat');
		await page.click('#new-chat');
		await settings(page, { temperature: 0, max_tokens: 100, tools, tool_choice: 'required', response_format: '' });
		await sendMessage(page, 'Weather in Paris?');
		let conv = await replyDone(page);
		const call = conv.messages[conv.messages.length - 1];
		const shown = await page.evaluate(() =>
			[...document.querySelectorAll('.msg[data-role=assistant]:last-child pre.tool')].map((p) => p.textContent));

		await page.click('#new-chat');
		await settings(page, { tools: '', response_format: format, max_tokens: 60 });
		await sendMessage(page, 'Is the sky blue?');
		conv = await replyDone(page);
		const structured = conv.messages[conv.messages.length - 1];
		check(page.errors.length === 0, 'no errors in the page: ' + page.errors.join('; '));
		writeJson('tools.json', { call: call.meta, shown, structured: { content: structured.content, meta: structured.meta } });
	} finally {
		await browser.close();
	}
});
