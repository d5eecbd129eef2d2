// t6005: the fine-tuning flow through the official openai package's files
// and fineTuning APIs: upload, job, events, checkpoints, the trained model
// answering.  argv: training file, validation file, suffix, prompt.
// Prints "fine_tuned_model=..." and "answer=..." lines; the rest is checked here.
import { createReadStream } from 'node:fs';
import { client, check, equal } from './lib.mjs';

const [trainPath, validPath, suffix, prompt] = process.argv.slice(2);
const c = client();
const model = process.env.GM_MODEL;

const train = await c.files.create({ file: createReadStream(trainPath), purpose: 'fine-tune' });
equal(train.object, 'file', 'file.object');
equal(train.purpose, 'fine-tune', 'file.purpose');
check(train.id.startsWith('file-') && train.bytes > 0, 'file id and bytes');
const valid = await c.files.create({ file: createReadStream(validPath), purpose: 'fine-tune' });
const got = await c.files.retrieve(train.id);
equal(got.filename, train.filename, 'retrieved file');
const ids = [];
for await (const f of c.files.list())
	ids.push(f.id);
check(ids.includes(train.id) && ids.includes(valid.id), 'both files listed');

let job = await c.fineTuning.jobs.create({
	model, training_file: train.id, validation_file: valid.id, suffix, seed: 7,
	hyperparameters: { n_epochs: 2, batch_size: 2, learning_rate_multiplier: 10 },
	git_model: { rank: 4, alpha: 8 },
});
equal(job.object, 'fine_tuning.job', 'job.object');
check(['validating_files', 'queued', 'running'].includes(job.status), 'a new job is waiting or running: ' + job.status);
const deadline = Date.now() + 300000;
while (!['succeeded', 'failed', 'cancelled'].includes(job.status)) {
	check(Date.now() < deadline, 'the job ends within 300 s');
	await new Promise((r) => setTimeout(r, 500));
	job = await c.fineTuning.jobs.retrieve(job.id);
}
equal(job.status, 'succeeded', 'job.status (error: ' + JSON.stringify(job.error) + ')');
check(job.trained_tokens > 0, 'trained_tokens');
check(typeof job.finished_at === 'number', 'finished_at');

const listed = [];
for await (const j of c.fineTuning.jobs.list({ limit: 2 }))
	listed.push(j.id);
check(listed.includes(job.id), 'the job is listed (through pages of 2)');

const events = [];
for await (const e of c.fineTuning.jobs.listEvents(job.id, { limit: 5 }))
	events.push(e);
check(events.some((e) => e.type === 'metrics' && typeof e.data.train_loss === 'number'), 'a train_loss event');
check(events.some((e) => e.type === 'metrics' && typeof e.data.valid_loss === 'number'), 'a valid_loss event');
check(events[0].message.includes('successfully completed'), 'the newest event is the end: ' + events[0].message);

const cps = [];
for await (const cp of c.fineTuning.jobs.checkpoints.list(job.id))
	cps.push(cp);
check(cps.length > 0 && cps[0].object === 'fine_tuning.job.checkpoint', 'checkpoints');
check(typeof cps[0].metrics.train_loss === 'number' && cps[0].step_number > 0, 'checkpoint metrics');

const done = await c.completions.create({ model: job.fine_tuned_model, prompt, max_tokens: 12, temperature: 0 });
console.log('fine_tuned_model=' + job.fine_tuned_model);
console.log('answer=' + done.choices[0].text);

const del = await c.files.delete(valid.id);
equal(del.deleted, true, 'deleted');
