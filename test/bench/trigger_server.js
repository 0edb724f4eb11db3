// test/bench/trigger_server.js: a minimal Maestro trigger endpoint for the
// queue benchmark, fast enough not to be what is measured. It answers every
// POST .../actions/trigger after LATENCY_MS with 201 and a fresh instance,
// lists the instances it created (for the worker's look-ups), and reports
// what it received at GET /__bench/stats: requests, duplicated instance
// names, and the most requests in any one-second window.
// Usage: node trigger_server.js PORT LATENCY_MS   (Node.js, no packages)
'use strict';
const http = require('http');
const crypto = require('crypto');

const port = Number(process.argv[2] || 57495);
const latency = Number(process.argv[3] || 20);
const times = [];
const names = new Map();
const instances = new Map();   // workflow id -> [{id, name}]

function stats() {
	const t = times.slice().sort((a, b) => a - b);
	let most = 0;
	for (let i = 0, j = 0; i < t.length; i++) {
		while (j < t.length && t[j] < t[i] + 1000) j++;
		most = Math.max(most, j - i);
	}
	let duplicates = 0;
	for (const n of names.values()) duplicates += n - 1;
	return { requests: t.length, duplicates, max_per_second: most };
}

http.createServer((req, res) => {
	let body = '';
	req.on('data', (chunk) => { body += chunk; });
	req.on('end', () => {
		const m = req.url.match(/\/workflows\/([^/]+)\/(actions\/trigger|instances)$/);
		if (req.url === '/__bench/stats') {
			res.writeHead(200, { 'Content-Type': 'application/json' });
			return res.end(JSON.stringify(stats()));
		}
		if (m && m[2] === 'instances' && req.method === 'GET') {
			res.writeHead(200, { 'Content-Type': 'application/json' });
			return res.end(JSON.stringify({ data: instances.get(m[1]) || [] }));
		}
		if (!m || req.method !== 'POST') {
			res.writeHead(404, { 'Content-Type': 'text/plain' });
			return res.end('not found');
		}
		times.push(Date.now());
		let name = null;
		try { name = JSON.parse(body).instance_name; } catch (e) { /* counted anyway */ }
		names.set(name, (names.get(name) || 0) + 1);
		const id = crypto.randomUUID();
		if (!instances.has(m[1])) instances.set(m[1], []);
		instances.get(m[1]).push({ id, name, workflow_status: 'In Progress' });
		setTimeout(() => {
			res.writeHead(201, { 'Content-Type': 'application/json' });
			res.end(JSON.stringify({
				instance_id: id,
				instance_url: `http://127.0.0.1:${port}/execution/${id}?mtid=1&mtsec=x`,
			}));
		}, latency);
	});
}).listen(port, '127.0.0.1', () => console.log(`trigger server on ${port}, ${latency} ms`));
