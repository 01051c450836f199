// Real UDP for Python code running under the MicroPython WebAssembly port, with BLOCKING recv.
//
// The wasm runtime is single-threaded and cannot await inside a synchronous Python call, so the
// socket lives in a worker thread and hands datagrams over a SharedArrayBuffer ring; recv()
// blocks the main thread with Atomics.wait (allowed in Node) until a datagram or the timeout.
// Python side: tests/wasm/lib/jsudp.py (register this file as module "udpbridge").
//
// Exports (bytes travel as hex strings: the simplest lossless JS<->Python conversion):
//   open(host, port) -> id     connect a UDP socket (IPv4 or IPv6 by the host's family)
//   send(id, hex)              send one datagram
//   recv(id, timeout_ms) -> hex or null
//   close(id)
import { Worker } from "worker_threads";

const SLOTS = 32;
const SLOT = 2048;
const socks = new Map();
let next = 1;

const workerSrc = `
const { parentPort, workerData } = require("worker_threads");
const dgram = require("dgram");
const net = require("net");
const { ctrl, data, host, port, SLOTS, SLOT } = workerData;
const sock = dgram.createSocket(net.isIPv6(host) ? "udp6" : "udp4");
sock.on("message", (msg) => {
  const head = Atomics.load(ctrl, 0), tail = Atomics.load(ctrl, 1);
  if (tail - head >= SLOTS || msg.length > SLOT - 4) return;  // full: drop, as UDP would
  const off = (tail % SLOTS) * SLOT;
  new DataView(data.buffer).setUint32(off, msg.length);
  data.set(msg, off + 4);
  Atomics.store(ctrl, 1, tail + 1);
  Atomics.notify(ctrl, 1);
});
sock.on("error", () => {});
sock.bind(0, () => { Atomics.store(ctrl, 2, 1); Atomics.notify(ctrl, 2); });
parentPort.on("message", (m) => {
  if (m === "close") { sock.close(); parentPort.close(); return; }
  sock.send(Buffer.from(m, "hex"), port, host);
});
`;

export function open(host, port) {
  const ctrl = new Int32Array(new SharedArrayBuffer(12));
  const data = new Uint8Array(new SharedArrayBuffer(SLOTS * SLOT));
  const worker = new Worker(workerSrc, { eval: true, workerData: { ctrl, data, host, port, SLOTS, SLOT } });
  worker.unref();
  if (Atomics.wait(ctrl, 2, 0, 5000) === "timed-out" && Atomics.load(ctrl, 2) === 0) {
    worker.terminate();
    throw new Error("udpbridge: socket did not bind");
  }
  const id = next++;
  socks.set(id, { ctrl, data, worker });
  return id;
}

export function send(id, hex) {
  socks.get(id).worker.postMessage(hex);
}

export function recv(id, timeoutMs) {
  const { ctrl, data } = socks.get(id);
  let head = Atomics.load(ctrl, 0);
  let tail = Atomics.load(ctrl, 1);
  if (head === tail) {
    Atomics.wait(ctrl, 1, tail, Math.max(0, timeoutMs));
    tail = Atomics.load(ctrl, 1);
    if (head === tail) return null;
  }
  const off = (head % SLOTS) * SLOT;
  const len = new DataView(data.buffer).getUint32(off);
  const hex = Buffer.from(data.slice(off + 4, off + 4 + len)).toString("hex");
  Atomics.store(ctrl, 0, head + 1);
  return hex;
}

export function close(id) {
  const s = socks.get(id);
  if (s) {
    s.worker.postMessage("close");
    socks.delete(id);
  }
}
