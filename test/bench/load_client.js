// test/bench/load_client.js: measures what a trigger endpoint can serve on
// its own: N POSTs, C at a time, each on a fresh connection as maestro's
// worker sends them. Prints requests per second.
// Usage: node load_client.js URL N C
'use strict';
const http = require('http');

const [url, total, concurrency] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const body = JSON.stringify({ instance_name: 'capacity', trigger_inputs: {} });
let started = 0;
let finished = 0;
const t0 = process.hrtime.bigint();

function one() {
	if (started >= total) return;
	started++;
	const req = http.request(url, {
		method: 'POST', agent: false,
		headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
	}, (res) => {
		res.resume();
		res.on('end', () => {
			if (++finished === total) {
				const s = Number(process.hrtime.bigint() - t0) / 1e9;
				console.log(Math.round(total / s));
			} else one();
		});
	});
	req.on('error', (e) => { console.error(e.message); process.exit(1); });
	req.end(body);
}
for (let i = 0; i < concurrency; i++) one();
