// The client sees the server's errors as OpenAI's own: the right error
// class, status, code and message.
import OpenAI from 'openai';
import { client, check, equal, main } from './lib.mjs';

async function expectError(what, status, code, fn) {
	try {
		await fn();
	} catch (e) {
		check(e instanceof OpenAI.APIError, `${what}: an APIError, not ${e}`);
		equal(e.status, status, `${what}: status`);
		equal(e.code, code, `${what}: code`);
		check(typeof e.error.message === 'string' && e.error.message.length > 0, `${what}: a message`);
		return e;
	}
	throw new Error(`${what}: no error`);
}

main(async () => {
	const c = client();
	const model = process.env.GM_MODEL;
	let e = await expectError('unknown model', 404, 'model_not_found', () =>
		c.chat.completions.create({ model: 'nope', messages: [{ role: 'user', content: 'hi' }] }));
	check(e instanceof OpenAI.NotFoundError, 'NotFoundError');
	e = await expectError('empty messages', 400, 'invalid_value', () =>
		c.chat.completions.create({ model, messages: [] }));
	check(e instanceof OpenAI.BadRequestError, 'BadRequestError');
	equal(e.param, 'messages', 'param');
	await expectError('max_tokens beyond the context', 400, 'context_length_exceeded', () =>
		c.chat.completions.create({ model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 1000000 }));
	e = await expectError('wrong key', 401, 'invalid_api_key', () =>
		new OpenAI({ baseURL: process.env.GM_SERVE_URL + '/v1', apiKey: 'wrong', maxRetries: 0 }).models.list());
	check(e instanceof OpenAI.AuthenticationError, 'AuthenticationError');
	process.stdout.write('ok\n');
});
