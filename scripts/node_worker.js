#!/usr/bin/env node
// A small Node.js worker speaking the memwarden channel (docs/protocol.md).
//
// It keeps a list of objects that grows every tick, bounded by max_objects from
// MEMWARDEN_LIMITS (and later `limits` messages). It sends `ready`, then `stats` every
// --stats-interval seconds; on `pressure` at medium or above it drops the oldest share
// of its objects and answers `trimmed`; it answers `investigate` with a `report`; on
// `shutdown` it exits 0. Without MEMWARDEN_FD it runs alone.
//
// Usage: node scripts/node_worker.js [--stats-interval 1] [--per-tick 50] [--object-bytes 200]
"use strict";

const net = require("net");

const MAX_LINE = 64 * 1024;
const SHARE = { medium: 0.1, high: 0.25, critical: 0.5 };

function option(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? Number(process.argv[i + 1]) : fallback;
}

const statsIntervalMs = option("--stats-interval", 1) * 1000;
const perTick = option("--per-tick", 50);
const objectBytes = option("--object-bytes", 200);

let limits = { max_objects: 2000, max_history: 500 };
try {
  if (process.env.MEMWARDEN_LIMITS) {
    limits = { ...limits, ...JSON.parse(process.env.MEMWARDEN_LIMITS) };
  }
} catch (e) {
  console.error(`node_worker: MEMWARDEN_LIMITS is not JSON (${e.message}); using defaults`);
}

const objects = [];
let nextId = 0;
let lastInvestigated = 0;
let channel = null;

function send(msg) {
  if (channel !== null && !channel.destroyed) channel.write(JSON.stringify(msg) + "\n");
}

function evictTo(max) {
  if (objects.length > max) objects.splice(0, objects.length - max);
}

function trim(share, reason) {
  const started = process.hrtime.bigint();
  const before = process.memoryUsage().rss;
  const n = Math.round(objects.length * share);
  objects.splice(0, n); // oldest first
  if (typeof global.gc === "function") global.gc();
  const after = process.memoryUsage().rss;
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  send({ type: "trimmed", dropped: n, rss_before: before, rss_after: after, ms, reason });
}

function handle(msg) {
  switch (msg.type) {
    case "pressure":
      if (SHARE[msg.level] !== undefined) trim(SHARE[msg.level], `pressure ${msg.level}`);
      break;
    case "limits":
      limits = { ...limits, ...msg.limits };
      evictTo(limits.max_objects);
      break;
    case "investigate": {
      const grown = objects.length - lastInvestigated;
      lastInvestigated = objects.length;
      const rss = process.memoryUsage().rss;
      send({ type: "report", id: String(msg.id), ms: 0, growth: { Object: Math.max(grown, 0) },
             objects: objects.length, rss, objects_per_mb: objects.length / (rss / 1e6) });
      break;
    }
    case "shutdown":
      clearInterval(ticker);
      clearInterval(statsTimer);
      if (channel !== null) channel.end();
      process.exit(0);
      break;
    default:
      console.error(`node_worker: ignored unknown message type ${JSON.stringify(msg.type)}`);
  }
}

function connect(fd) {
  channel = new net.Socket({ fd, readable: true, writable: true });
  let pending = Buffer.alloc(0);
  let discarding = false;
  channel.on("data", (chunk) => {
    pending = Buffer.concat([pending, chunk]);
    let nl;
    while ((nl = pending.indexOf(10)) >= 0) {
      const line = pending.subarray(0, nl);
      pending = pending.subarray(nl + 1);
      if (discarding || line.length > MAX_LINE) {
        if (!discarding) console.error("node_worker: discarded an overlong line");
        discarding = false;
        continue;
      }
      if (line.length === 0) continue;
      let msg;
      try {
        msg = JSON.parse(line.toString("utf8"));
      } catch (e) {
        console.error(`node_worker: ignored a malformed line (${e.message})`);
        continue;
      }
      if (msg === null || typeof msg !== "object") {
        console.error("node_worker: ignored a line that is not a JSON object");
        continue;
      }
      handle(msg);
    }
    if (pending.length > MAX_LINE) {
      console.error("node_worker: discarded an overlong line");
      pending = Buffer.alloc(0);
      discarding = true;
    }
  });
  channel.on("end", () => console.error("node_worker: the supervisor closed the channel"));
  channel.on("error", (e) => console.error(`node_worker: channel error ${e.message}`));
}

const ticker = setInterval(() => {
  for (let i = 0; i < perTick; i++) {
    objects.push({ id: nextId++, payload: "x".repeat(objectBytes) + nextId });
  }
  evictTo(limits.max_objects);
}, 10);

const statsTimer = setInterval(() => {
  send({ type: "stats", objects: objects.length, rss: process.memoryUsage().rss,
         stores: { objects: objects.length } });
}, statsIntervalMs);

if (process.env.MEMWARDEN_FD) {
  connect(Number(process.env.MEMWARDEN_FD));
  send({ type: "ready", pid: process.pid });
}
