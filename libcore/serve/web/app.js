// git-model's web page: a chat with the served model and a live dashboard.
// Plain JavaScript, no library, nothing fetched but this server's own API
// (the Content-Security-Policy allows nothing else).  Text from the model
// or the server is only ever put in the page as text (textContent), never
// as HTML.
'use strict';

const $ = (id) => document.getElementById(id);
const KEY_STORE = 'gm.key';              // sessionStorage: this tab only
const CHAT_STORE = 'gm.chat.v1';         // localStorage: the conversation
const SETTINGS_STORE = 'gm.settings.v1'; // localStorage: sampling settings and the rest
const NUMERIC = ['temperature', 'top_p', 'top_k', 'min_p', 'max_tokens', 'seed', 'repetition_penalty',
	'presence_penalty'];
const INTEGER = ['top_k', 'max_tokens', 'seed'];

// ------------------------------------------------------------------ the API key and requests

function apiKey() {
	return sessionStorage.getItem(KEY_STORE) || '';
}

function headers(json) {
	const h = {};
	if (json)
		h['Content-Type'] = 'application/json';
	const k = apiKey();
	if (k)
		h.Authorization = 'Bearer ' + k;
	return h;
}

let keyWaiters = [];

// The key dialog; resolves when a key was entered (or the dialog closed).
function askKey(why) {
	const d = $('key-dialog');
	if (why)
		d.querySelector('p').textContent = why;
	$('key-input').value = apiKey();
	if (!d.open)
		d.showModal();
	$('key-input').focus();
	return new Promise((resolve) => keyWaiters.push(resolve));
}

function keyDone() {
	$('key-dialog').close();
	const w = keyWaiters;
	keyWaiters = [];
	w.forEach((f) => f());
}

// fetch with the key; a 401 asks for the key once and tries again.
async function api(path, opts = {}) {
	for (let attempt = 0; ; attempt++) {
		const r = await fetch(path, { ...opts, headers: { ...headers(opts.body !== undefined), ...(opts.headers || {}) } });
		if (r.status !== 401 || attempt > 0)
			return r;
		await askKey('This server asks for an API key. It is kept in this tab only (session storage) and sent to this server alone.');
		if (!apiKey())
			return r;
	}
}

async function errorText(r) {
	try {
		const j = await r.json();
		if (j && j.error && j.error.message)
			return `${r.status}: ${j.error.message}`;
	} catch (e) { /* not JSON */ }
	return `HTTP ${r.status} ${r.statusText}`;
}

// Reads a text/event-stream body: onEvent(name, data) for each event.
async function readEvents(body, onEvent) {
	const reader = body.getReader();
	const dec = new TextDecoder();
	let buf = '';
	for (;;) {
		const { value, done } = await reader.read();
		if (done)
			break;
		buf += dec.decode(value, { stream: true });
		let end;
		while ((end = buf.search(/\r?\n\r?\n/)) >= 0) {
			const block = buf.slice(0, end);
			buf = buf.slice(end).replace(/^\r?\n\r?\n/, '');
			let name = 'message';
			const data = [];
			for (const line of block.split(/\r?\n/)) {
				if (line.startsWith('data:'))
					data.push(line.slice(5).replace(/^ /, ''));
				else if (line.startsWith('event:'))
					name = line.slice(6).trim();
			}
			if (data.length && onEvent(name, data.join('\n')) === false)
				return;
		}
	}
}

// ------------------------------------------------------------------ server status, models

const state = {
	models: [],
	generating: null,   // { controller, msg } while a reply streams
};

function setStatus(kind, text) {
	$('server-status').className = 'dot ' + kind;
	$('server-status-text').textContent = text;
}

async function loadModels() {
	let r;
	try {
		r = await api('/v1/models');
	} catch (e) {
		setStatus('bad', 'unreachable');
		return false;
	}
	if (r.status === 503) {
		setStatus('warn', 'loading');
		return false;
	}
	if (!r.ok) {
		setStatus('bad', r.status === 401 ? 'key needed' : 'error ' + r.status);
		return false;
	}
	const j = await r.json();
	state.models = j.data || [];
	const sel = $('set-model');
	const want = settings.model || sel.value;
	sel.textContent = '';
	for (const m of state.models) {
		const o = document.createElement('option');
		o.value = m.id;
		o.textContent = m.parent ? `${m.parent} + adapter ${m.id.slice(m.parent.length + 1)}` : `${m.id} (base)`;
		sel.appendChild(o);
	}
	if (state.models.some((m) => m.id === want))
		sel.value = want;
	const base = state.models.find((m) => !m.parent);
	$('model-name').textContent = base ? base.id : '';
	document.title = base ? `git-model: ${base.id}` : 'git-model';
	if (!dash.controller)
		setStatus('ok', 'ready');
	return true;
}

async function waitForServer() {
	for (let delay = 500; !(await loadModels()); delay = Math.min(delay * 2, 5000))
		await new Promise((f) => setTimeout(f, delay));
}

// ------------------------------------------------------------------ settings

let settings = {};

function loadSettings() {
	try {
		settings = JSON.parse(localStorage.getItem(SETTINGS_STORE) || '{}') || {};
	} catch (e) {
		settings = {};
	}
	for (const k of NUMERIC)
		$('set-' + k).value = settings[k] ?? '';
	$('set-system').value = settings.system || '';
	$('set-stop').value = settings.stop || '';
	$('set-tools').value = settings.tools || '';
	$('set-response_format').value = settings.response_format || '';
	$('set-tool_choice').value = settings.tool_choice || '';
}

function saveSettings() {
	settings = { model: $('set-model').value };
	for (const k of NUMERIC)
		if ($('set-' + k).value !== '')
			settings[k] = $('set-' + k).value;
	for (const k of ['system', 'stop', 'tools', 'response_format', 'tool_choice'])
		if ($('set-' + k).value.trim() !== '')
			settings[k] = $('set-' + k).value;
	localStorage.setItem(SETTINGS_STORE, JSON.stringify(settings));
}

// The request's fields from the settings; throws with a message on bad JSON.
function requestFields() {
	const f = {};
	for (const k of NUMERIC) {
		const v = $('set-' + k).value.trim();
		if (v === '')
			continue;
		const n = Number(v);
		if (!Number.isFinite(n) || (INTEGER.includes(k) && !Number.isInteger(n)))
			throw new Error(`${k}: '${v}' is not a${INTEGER.includes(k) ? 'n integer' : ' number'}`);
		f[k] = n;
	}
	const stop = $('set-stop').value.split(',').map((s) => s.trim()).filter((s) => s);
	if (stop.length)
		f.stop = stop;
	for (const k of ['tools', 'response_format']) {
		const v = $('set-' + k).value.trim();
		if (!v)
			continue;
		try {
			f[k] = JSON.parse(v);
		} catch (e) {
			throw new Error(`${k}: not JSON (${e.message})`);
		}
	}
	if (f.tools && $('set-tool_choice').value)
		f.tool_choice = $('set-tool_choice').value;
	return f;
}

// ------------------------------------------------------------------ the conversation

// messages: [{ role, content, meta: { finish, tokens, ms, ttft_ms, tool_calls, error, model } }]
let chat = { messages: [] };

function loadChat() {
	try {
		chat = JSON.parse(localStorage.getItem(CHAT_STORE) || '{"messages":[]}');
		if (!Array.isArray(chat.messages))
			chat = { messages: [] };
	} catch (e) {
		chat = { messages: [] };
	}
	// a reply the page was streaming when it was closed ended there
	for (const m of chat.messages)
		if (m.meta && m.meta.streaming) {
			delete m.meta.streaming;
			m.meta.finish = m.meta.finish || 'interrupted';
		}
}

let saveTimer = null;
function saveChat(now) {
	clearTimeout(saveTimer);
	const write = () => {
		try {
			localStorage.setItem(CHAT_STORE, JSON.stringify(chat));
		} catch (e) { /* full: the conversation lives on in the page */ }
	};
	if (now)
		write();
	else
		saveTimer = setTimeout(write, 250);
}

// Splits a reply into its thinking blocks and its answer: [{ think: bool, text, open: bool }].
function splitThinking(text) {
	const parts = [];
	let rest = text;
	for (;;) {
		const a = rest.indexOf('<think>');
		if (a < 0)
			break;
		if (a > 0)
			parts.push({ think: false, text: rest.slice(0, a) });
		const b = rest.indexOf('</think>', a + 7);
		if (b < 0) {
			parts.push({ think: true, text: rest.slice(a + 7), open: true });
			return parts;
		}
		parts.push({ think: true, text: rest.slice(a + 7, b), open: false });
		rest = rest.slice(b + 8).replace(/^\n+/, '');
	}
	if (rest)
		parts.push({ think: false, text: rest });
	return parts;
}

function fmtMs(ms) {
	return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

async function copyText(text, button) {
	try {
		await navigator.clipboard.writeText(text);
	} catch (e) {
		// no clipboard API (an insecure origin): the old way
		const t = document.createElement('textarea');
		t.value = text;
		document.body.appendChild(t);
		t.select();
		document.execCommand('copy');
		t.remove();
	}
	const old = button.textContent;
	button.textContent = 'Copied';
	setTimeout(() => (button.textContent = old), 1200);
}

function renderContent(el, m, streaming) {
	el.textContent = '';
	const parts = m.role === 'assistant' ? splitThinking(m.content) : [{ think: false, text: m.content }];
	for (const p of parts) {
		if (p.think) {
			const d = document.createElement('details');
			d.className = 'think';
			const s = document.createElement('summary');
			s.textContent = p.open && streaming ? 'Thinking...' : 'Thought';
			const t = document.createElement('div');
			t.className = 'think-text';
			t.textContent = p.text.trim();
			d.append(s, t);
			el.appendChild(d);
		} else {
			const span = document.createElement('span');
			span.className = 'answer';
			span.textContent = p.text;
			el.appendChild(span);
		}
	}
	if (m.meta && m.meta.tool_calls && m.meta.tool_calls.length) {
		for (const tc of m.meta.tool_calls) {
			const pre = document.createElement('pre');
			pre.className = 'tool';
			let args = tc.arguments || '';
			try {
				args = JSON.stringify(JSON.parse(args), null, 2);
			} catch (e) { /* as it came */ }
			pre.textContent = `tool call: ${tc.name || '?'}(${args})`;
			el.appendChild(pre);
		}
	}
	if (streaming) {
		const c = document.createElement('span');
		c.className = 'cursor';
		el.appendChild(c);
	}
}

function metaText(m) {
	const x = m.meta || {};
	const bits = [];
	if (x.model)
		bits.push(x.model);
	if (x.tokens)
		bits.push(`${x.tokens} tokens`);
	if (x.ttft_ms !== undefined)
		bits.push(`first token ${fmtMs(x.ttft_ms)}`);
	if (x.tokens && x.ms)
		bits.push(`${(x.tokens / (x.ms / 1000)).toFixed(1)} tokens/s`);
	return bits.join(' \u00b7 ');
}

function renderMessage(m, i) {
	const div = document.createElement('div');
	div.className = 'msg ' + m.role + (m.meta && m.meta.error ? ' error-msg' : '');
	div.dataset.index = i;
	div.dataset.role = m.role;
	const role = document.createElement('div');
	role.className = 'role';
	const name = document.createElement('span');
	name.textContent = m.role === 'user' ? 'You' : 'Model';
	const meta = document.createElement('span');
	meta.className = 'meta';
	meta.textContent = metaText(m);
	role.append(name, meta);
	const content = document.createElement('div');
	content.className = 'content';
	const streaming = !!(m.meta && m.meta.streaming);
	renderContent(content, m, streaming);
	div.append(role, content);
	if (m.meta && (m.meta.finish || m.meta.error)) {
		const f = document.createElement('div');
		f.className = 'finish';
		f.textContent = m.meta.error ? `error: ${m.meta.error}`
			: m.meta.finish === 'stop' ? '' : `finish: ${m.meta.finish}`;
		if (f.textContent)
			div.appendChild(f);
	}
	if (!streaming) {
		const actions = document.createElement('div');
		actions.className = 'actions';
		const copy = document.createElement('button');
		copy.type = 'button';
		copy.className = 'small ghost copy';
		copy.textContent = 'Copy';
		copy.addEventListener('click', () => copyText(m.content, copy));
		actions.appendChild(copy);
		if (m.role === 'assistant' && i === chat.messages.length - 1) {
			const retry = document.createElement('button');
			retry.type = 'button';
			retry.className = 'small ghost retry';
			retry.textContent = 'Retry';
			retry.addEventListener('click', () => retryLast());
			actions.appendChild(retry);
		}
		div.appendChild(actions);
	}
	return div;
}

function renderChat() {
	const box = $('messages');
	const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
	box.textContent = '';
	if (!chat.messages.length) {
		const p = document.createElement('p');
		p.className = 'empty';
		p.id = 'empty-hint';
		p.textContent = 'Say something to the model. Conversations stay in this browser.';
		box.appendChild(p);
	}
	chat.messages.forEach((m, i) => box.appendChild(renderMessage(m, i)));
	if (atBottom || state.generating)
		box.scrollTop = box.scrollHeight;
}

// Updates the streaming message in place (a full re-render per token would be wasteful).
function updateStreaming(m) {
	const el = $('messages').lastElementChild;
	if (!el || !el.classList.contains('msg'))
		return renderChat();
	renderContent(el.querySelector('.content'), m, true);
	el.querySelector('.meta').textContent = metaText(m);
	const box = $('messages');
	if (box.scrollHeight - box.scrollTop - box.clientHeight < 120)
		box.scrollTop = box.scrollHeight;
}

function showError(text) {
	const e = $('chat-error');
	e.textContent = text || '';
	e.hidden = !text;
}

function setGenerating(on) {
	$('send').hidden = on;
	$('stop').hidden = !on;
	$('prompt').disabled = false;
}

// Streams the model's reply to the conversation so far.
async function generate() {
	let fields;
	try {
		fields = requestFields();
	} catch (e) {
		showError(e.message);
		return;
	}
	showError('');
	saveSettings();
	const model = $('set-model').value || (state.models[0] && state.models[0].id);
	const messages = [];
	const system = $('set-system').value.trim();
	if (system)
		messages.push({ role: 'system', content: system });
	for (const m of chat.messages) {
		if (m.meta && m.meta.error)
			continue;
		const x = { role: m.role, content: m.content };
		if (m.meta && m.meta.tool_calls && m.meta.tool_calls.length)
			x.tool_calls = m.meta.tool_calls.map((c, i) => ({ id: c.id || `call_${i}`, type: 'function',
				function: { name: c.name, arguments: c.arguments } }));
		messages.push(x);
	}
	const body = { model, messages, stream: true, stream_options: { include_usage: true }, ...fields };
	const msg = { role: 'assistant', content: '', meta: { streaming: true, model } };
	chat.messages.push(msg);
	const controller = new AbortController();
	state.generating = { controller, msg };
	setGenerating(true);
	renderChat();
	const t0 = performance.now();
	let tokens = 0;
	const calls = [];
	try {
		const r = await api('/v1/chat/completions', { method: 'POST', body: JSON.stringify(body), signal: controller.signal });
		if (!r.ok)
			throw new Error(await errorText(r));
		await readEvents(r.body, (name, data) => {
			if (data === '[DONE]')
				return false;
			const j = JSON.parse(data);
			if (j.error)
				throw new Error(j.error.message || 'the server reported an error');
			if (j.usage)
				msg.meta.tokens = j.usage.completion_tokens;
			for (const c of j.choices || []) {
				const d = c.delta || {};
				if (typeof d.content === 'string' && d.content) {
					if (msg.meta.ttft_ms === undefined)
						msg.meta.ttft_ms = performance.now() - t0;
					msg.content += d.content;
					tokens++;
				}
				for (const tc of d.tool_calls || []) {
					const k = tc.index ?? calls.length;
					calls[k] = calls[k] || { id: '', name: '', arguments: '' };
					if (tc.id)
						calls[k].id = tc.id;
					if (tc.function && tc.function.name)
						calls[k].name += tc.function.name;
					if (tc.function && tc.function.arguments)
						calls[k].arguments += tc.function.arguments;
					msg.meta.tool_calls = calls.filter((x) => x);
				}
				if (c.finish_reason)
					msg.meta.finish = c.finish_reason;
			}
			msg.meta.ms = performance.now() - t0;
			if (!msg.meta.tokens || msg.meta.tokens < tokens)
				msg.meta.tokens = tokens;
			updateStreaming(msg);
			saveChat(false);
		});
		if (!msg.meta.finish)
			msg.meta.finish = 'incomplete';
	} catch (e) {
		if (e.name === 'AbortError') {
			msg.meta.finish = 'stopped';
		} else {
			msg.meta.error = e.message;
			if (!msg.content)
				msg.content = '';
		}
	} finally {
		msg.meta.ms = performance.now() - t0;
		delete msg.meta.streaming;
		state.generating = null;
		setGenerating(false);
		saveChat(true);
		renderChat();
	}
}

function stop() {
	if (state.generating)
		state.generating.controller.abort();
}

function send() {
	if (state.generating)
		return;
	const text = $('prompt').value;
	if (!text.trim())
		return;
	// a failed reply is dropped when the conversation goes on
	chat.messages = chat.messages.filter((m) => !(m.meta && m.meta.error));
	chat.messages.push({ role: 'user', content: text });
	$('prompt').value = '';
	saveChat(true);
	generate();
}

function retryLast() {
	if (state.generating)
		return;
	while (chat.messages.length && chat.messages[chat.messages.length - 1].role === 'assistant')
		chat.messages.pop();
	if (!chat.messages.length)
		return;
	saveChat(true);
	generate();
}

function newChat() {
	stop();
	chat = { messages: [] };
	saveChat(true);
	showError('');
	renderChat();
	$('prompt').focus();
}

// ------------------------------------------------------------------ dashboard

const dash = {
	controller: null,
	series: null,       // the history arrays, appended to by each event
	last: null,         // the latest snapshot
	retry: 1000,
};

const HISTORY = 120;

function fmtNum(v, digits = 1) {
	if (v === null || v === undefined || !Number.isFinite(v))
		return '-';
	if (Math.abs(v) >= 1e6)
		return (v / 1e6).toFixed(2) + 'M';
	if (Math.abs(v) >= 1e4)
		return (v / 1e3).toFixed(1) + 'k';
	return Number.isInteger(v) ? String(v) : v.toFixed(digits);
}

function fmtLatency(s) {
	if (s === null || s === undefined)
		return '-';
	const ms = s * 1000;
	return ms < 10 ? `${ms.toFixed(2)} ms` : ms < 1000 ? `${ms.toFixed(0)} ms` : `${s.toFixed(2)} s`;
}

function setValue(id, text, raw) {
	const el = $(id);
	el.textContent = text;
	if (raw !== undefined)
		el.dataset.value = raw === null ? '' : String(raw);
}

// A new snapshot: the cards, the series, the charts.
function onStats(s) {
	dash.last = s;
	if (s.history) {
		dash.series = { ...s.history };
		delete dash.series.interval_s;
		delete dash.series.latency_window_s;
	} else if (dash.series) {
		const h = dash.series;
		const add = (k, v) => {
			h[k].push(v);
			if (h[k].length > HISTORY)
				h[k].shift();
		};
		// the times of the history are relative to its event: age them by the time since
		const age = dash.lastUptime !== undefined ? s.uptime_s - dash.lastUptime : 1;
		h.t = h.t.map((t) => t - age);
		add('t', -s.sample_age_s);
		add('running', s.requests.running);
		add('queued', s.requests.queued);
		add('prompt_per_s', s.tokens.prompt_per_s);
		add('completion_per_s', s.tokens.completion_per_s);
		add('prompt_cached_per_s', s.tokens.prompt_cached_per_s);
		add('kv_blocks_used', s.kv.blocks_used);
		add('cancelled', s.requests.cancelled_total);
		add('ttft_p50', s.latency.recent.ttft_p50);
		add('ttft_p90', s.latency.recent.ttft_p90);
		add('tpot_p50', s.latency.recent.tpot_p50);
		add('tpot_p90', s.latency.recent.tpot_p90);
	}
	dash.lastUptime = s.uptime_s;
	const r = s.requests, t = s.tokens, l = s.latency, kv = s.kv;
	setValue('dash-running', `${r.running} / ${r.parallel}`, r.running);
	setValue('dash-running-sub', 'of --parallel slots');
	setValue('dash-queued', String(r.queued), r.queued);
	setValue('dash-queued-sub', `queue holds ${r.queue_size}`);
	setValue('dash-completion-rate', fmtNum(t.completion_per_s), t.completion_per_s);
	setValue('dash-completion-total', `${fmtNum(t.completion_total)} generated in all`, t.completion_total);
	setValue('dash-prompt-rate', fmtNum(t.prompt_per_s), t.prompt_per_s);
	setValue('dash-prompt-total', `${fmtNum(t.prompt_total)} read, ${fmtNum(t.prompt_cached_total)} from the prefix cache`, t.prompt_total);
	const tt = l.time_to_first_token_s, tp = l.time_per_output_token_s;
	setValue('dash-ttft', `p50 ${fmtLatency(tt.p50)}`, tt.p50);
	setValue('dash-ttft-sub', `p90 ${fmtLatency(tt.p90)} \u00b7 p99 ${fmtLatency(tt.p99)} \u00b7 ${tt.count} in ${l.window_s} s`);
	setValue('dash-tpot', `p50 ${fmtLatency(tp.p50)}`, tp.p50);
	setValue('dash-tpot-sub', `p90 ${fmtLatency(tp.p90)} \u00b7 p99 ${fmtLatency(tp.p99)} \u00b7 ${tp.count} in ${l.window_s} s`);
	const frac = kv.used_fraction || 0;
	setValue('dash-kv', `${(frac * 100).toFixed(1)}%`, kv.blocks_used);
	$('dash-kv-bar').style.width = `${Math.min(100, frac * 100)}%`;
	setValue('dash-kv-sub', `${kv.blocks_used} of ${kv.blocks_total} blocks of ${kv.block_tokens} tokens (${kv.type}); ${kv.prefix_cache_entries} cached prefixes`);
	setValue('dash-finished', fmtNum(r.finished_total), r.finished_total);
	setValue('dash-cancelled', `${r.cancelled_total} cancelled`, r.cancelled_total);
	$('dash-uptime').textContent = `Up ${fmtDuration(s.uptime_s)}.`;
	renderAdapters(s.adapters || []);
	drawCharts();
}

function fmtDuration(s) {
	s = Math.floor(s);
	const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
	return h ? `${h} h ${m} min` : m ? `${m} min ${s % 60} s` : `${s} s`;
}

function renderAdapters(list) {
	const body = $('adapters-body');
	body.textContent = '';
	if (!list.length) {
		const tr = document.createElement('tr');
		const td = document.createElement('td');
		td.colSpan = 7;
		td.className = 'muted';
		td.textContent = 'none loaded (git infer --serve --adapter NAME=DIR, or MODEL/adapters/)';
		tr.appendChild(td);
		body.appendChild(tr);
		return;
	}
	for (const a of list) {
		const tr = document.createElement('tr');
		const learn = a.learning || null;
		const cells = [a.id, a.kind, fmtNum(a.requests_total), fmtNum(a.completion_tokens_total),
			learn && learn.version !== undefined ? String(learn.version) : '-',
			learn && learn.examples_seen !== undefined ? fmtNum(learn.examples_seen) : '-'];
		for (const c of cells) {
			const td = document.createElement('td');
			td.textContent = c;
			tr.appendChild(td);
		}
		const td = document.createElement('td');
		if (learn && Array.isArray(learn.loss) && learn.loss.length) {
			const cv = document.createElement('canvas');
			td.appendChild(cv);
			td.title = `last loss ${learn.loss[learn.loss.length - 1]}`;
			requestAnimationFrame(() => drawChart(cv, learn.loss.map((_, i) => i), [{ values: learn.loss, color: 'c3' }], { spark: true }));
		} else {
			td.textContent = learn ? '-' : 'not learning';
			td.className = 'muted';
		}
		tr.appendChild(td);
		body.appendChild(tr);
	}
}

function cssVar(name) {
	return getComputedStyle(document.documentElement).getPropertyValue('--' + name).trim();
}

// A line chart of series over xs (seconds before now) on a canvas.
function drawChart(canvas, xs, series, opt = {}) {
	const dpr = window.devicePixelRatio || 1;
	const w = canvas.clientWidth, h = canvas.clientHeight;
	if (!w || !h)
		return;
	canvas.width = Math.round(w * dpr);
	canvas.height = Math.round(h * dpr);
	const g = canvas.getContext('2d');
	g.scale(dpr, dpr);
	g.clearRect(0, 0, w, h);
	const left = opt.spark ? 2 : 44, right = opt.spark ? 2 : 8, top = opt.spark ? 2 : 18, bottom = opt.spark ? 2 : 18;
	let max = opt.max || 0;
	for (const s of series)
		for (const v of s.values)
			if (v !== null && Number.isFinite(v) && v > max)
				max = v;
	if (!opt.max)
		max = niceMax(max);
	const xmin = opt.spark ? Math.min(...xs) : -HISTORY, xmax = opt.spark ? Math.max(...xs) : 0;
	const X = (x) => left + ((x - xmin) / ((xmax - xmin) || 1)) * (w - left - right);
	const Y = (y) => top + (1 - y / (max || 1)) * (h - top - bottom);
	g.font = '11px system-ui, sans-serif';
	if (!opt.spark) {
		g.strokeStyle = cssVar('grid');
		g.fillStyle = cssVar('muted');
		g.lineWidth = 1;
		g.textAlign = 'right';
		g.textBaseline = 'middle';
		for (let i = 0; i <= 4; i++) {
			const v = (max * i) / 4, y = Y(v);
			g.beginPath();
			g.moveTo(left, Math.round(y) + 0.5);
			g.lineTo(w - right, Math.round(y) + 0.5);
			g.stroke();
			g.fillText(v >= 1e4 ? fmtNum(v) : String(Number(v.toFixed(v < 10 ? 2 : 1))), left - 6, y);
		}
		g.textAlign = 'center';
		g.textBaseline = 'top';
		for (let x = -120; x <= 0; x += 30)
			g.fillText(x ? `${x} s` : 'now', Math.min(Math.max(X(x), left + 12), w - right - 12), h - bottom + 4);
		// the legend
		g.textAlign = 'left';
		g.textBaseline = 'top';
		let lx = left;
		for (const s of series) {
			g.fillStyle = cssVar(s.color);
			g.fillRect(lx, 4, 10, 3);
			g.fillStyle = cssVar('muted');
			g.fillText(s.label, lx + 14, 0);
			lx += 24 + g.measureText(s.label).width;
		}
	}
	for (const s of series) {
		g.strokeStyle = cssVar(s.color);
		g.lineWidth = opt.spark ? 1.2 : 1.8;
		g.fillStyle = g.strokeStyle;
		g.beginPath();
		const ok = (i) => i >= 0 && i < s.values.length && s.values[i] !== null && Number.isFinite(s.values[i]) &&
			xs[i] >= xmin;
		s.values.forEach((v, i) => {
			if (!ok(i))
				return;
			const x = X(xs[i]), y = Y(v);
			if (ok(i - 1))
				g.lineTo(x, y);
			else
				g.moveTo(x, y);
			// a point alone between gaps is a dot, not nothing
			if (!ok(i - 1) && !ok(i + 1))
				g.fillRect(x - 1.5, y - 1.5, 3, 3);
		});
		g.stroke();
	}
}

function niceMax(v) {
	if (!(v > 0))
		return 1;
	const p = Math.pow(10, Math.floor(Math.log10(v)));
	for (const m of [1, 2, 2.5, 5, 10])
		if (v <= m * p)
			return m * p;
	return 10 * p;
}

function drawCharts() {
	const h = dash.series, s = dash.last;
	if (!h || !s || $('view-dashboard').hidden)
		return;
	const ms = (a) => a.map((v) => (v === null ? null : v * 1000));
	drawChart($('chart-requests'), h.t, [
		{ label: 'running', values: h.running, color: 'c1' },
		{ label: 'queued', values: h.queued, color: 'c2' }]);
	drawChart($('chart-tokens'), h.t, [
		{ label: 'generated', values: h.completion_per_s, color: 'c1' },
		{ label: 'prompt', values: h.prompt_per_s, color: 'c2' },
		{ label: 'prompt from cache', values: h.prompt_cached_per_s, color: 'c3' }]);
	drawChart($('chart-ttft'), h.t, [
		{ label: 'p50', values: ms(h.ttft_p50), color: 'c1' },
		{ label: 'p90', values: ms(h.ttft_p90), color: 'c2' }]);
	drawChart($('chart-tpot'), h.t, [
		{ label: 'p50', values: ms(h.tpot_p50), color: 'c1' },
		{ label: 'p90', values: ms(h.tpot_p90), color: 'c2' }]);
	drawChart($('chart-kv'), h.t, [
		{ label: 'used', values: h.kv_blocks_used.map((v) => (100 * v) / (s.kv.blocks_total || 1)), color: 'c1' }], { max: 100 });
	drawChart($('chart-cancelled'), h.t, [{ label: 'cancelled', values: h.cancelled, color: 'c2' }]);
}

async function dashboardConnect() {
	if (dash.controller)
		return;
	const controller = new AbortController();
	dash.controller = controller;
	while (dash.controller === controller) {
		try {
			const r = await api('/v1/stats/stream', { signal: controller.signal });
			if (!r.ok)
				throw new Error(await errorText(r));
			setStatus('ok', 'live');
			dash.retry = 1000;
			await readEvents(r.body, (name, data) => {
				if (name === 'stats')
					onStats(JSON.parse(data));
			});
			// the stream ended: the server is stopping or restarting
			setStatus('warn', 'reconnecting');
		} catch (e) {
			if (e.name === 'AbortError')
				break;
			setStatus('bad', 'stats: ' + e.message);
		}
		if (dash.controller !== controller)
			break;
		await new Promise((f) => setTimeout(f, dash.retry));
		dash.retry = Math.min(dash.retry * 2, 10000);
	}
}

function dashboardDisconnect() {
	if (dash.controller) {
		dash.controller.abort();
		dash.controller = null;
	}
}

// ------------------------------------------------------------------ views

function route() {
	const view = location.hash === '#dashboard' ? 'dashboard' : 'chat';
	$('view-chat').hidden = view !== 'chat';
	$('view-dashboard').hidden = view !== 'dashboard';
	$('tab-chat').classList.toggle('active', view === 'chat');
	$('tab-dashboard').classList.toggle('active', view === 'dashboard');
	$('tab-chat').setAttribute('aria-selected', String(view === 'chat'));
	$('tab-dashboard').setAttribute('aria-selected', String(view === 'dashboard'));
	// the stats stream is held only while the dashboard is shown
	if (view === 'dashboard') {
		dashboardConnect();
		requestAnimationFrame(drawCharts);
	} else {
		dashboardDisconnect();
		setStatus('ok', 'ready');
		$('prompt').focus();
	}
}

function init() {
	loadSettings();
	loadChat();
	renderChat();
	$('composer').addEventListener('submit', (e) => {
		e.preventDefault();
		send();
	});
	$('prompt').addEventListener('keydown', (e) => {
		if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
			e.preventDefault();
			send();
		}
	});
	$('stop').addEventListener('click', stop);
	$('new-chat').addEventListener('click', newChat);
	$('reset-settings').addEventListener('click', () => {
		localStorage.removeItem(SETTINGS_STORE);
		loadSettings();
	});
	for (const el of document.querySelectorAll('.settings input, .settings select, .settings textarea'))
		el.addEventListener('change', saveSettings);
	$('key-button').addEventListener('click', () => askKey());
	$('key-form').addEventListener('submit', (e) => {
		e.preventDefault();
		const k = $('key-input').value.trim();
		if (k)
			sessionStorage.setItem(KEY_STORE, k);
		keyDone();
		loadModels();
	});
	$('key-clear').addEventListener('click', () => {
		sessionStorage.removeItem(KEY_STORE);
		$('key-input').value = '';
		keyDone();
	});
	$('key-cancel').addEventListener('click', keyDone);
	$('key-dialog').addEventListener('cancel', () => keyDone());
	window.addEventListener('hashchange', route);
	window.addEventListener('resize', () => requestAnimationFrame(drawCharts));
	route();
	waitForServer();
}

document.addEventListener('DOMContentLoaded', init);
