#!/usr/bin/env node
// Drives Debian's Chromium with playwright-core for porthole's browser
// end-to-end tests: opens console pages exactly at the URL a session publishes,
// and reports what the page showed, what its canvas holds, and every request
// and response the browser made.
//
// Two ways to run it (see README.md):
//
//   node drive.mjs serve [--out DIR]        long-lived: one JSON command per stdin
//                                           line, one JSON answer per stdout line
//   node drive.mjs <scenario> --url URL [--out DIR] [options]
//                                           one scenario, one JSON result line
//
// Every wait polls a condition in the page (waitForFunction) with a deadline;
// nothing sleeps for a fixed time.

import { createHash } from "node:crypto";
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";

import { chromium } from "playwright-core";

const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--no-first-run",
  "--disable-quic",
  "--disable-sync",
];

const DEFAULT_TIMEOUT_MS = 30_000;
const THUMB = { w: 90, h: 50 };
// Response bodies and WebSocket payloads kept per page, to scan for secrets
// that are only known later (a console ticket is minted when the page connects).
const MAX_KEPT_BYTES = 256 * 1024 * 1024;

// ---------------------------------------------------------------------------
// In the page: a record of what it showed, and draws on its canvases.

// Runs before any page script (addInitScript). Records every change of the
// header's status, countdown and end message, with a timestamp, and counts
// draws on 2D canvases (noVNC draws each framebuffer update).
function pageProbe() {
  if (window.__porthole) return;
  const probe = (window.__porthole = { timeline: [], draws: 0, lastDrawAt: 0 });
  const snapshot = () => {
    const $ = (id) => document.getElementById(id);
    const status = $("status");
    if (!status) return;
    const countdown = $("countdown");
    const ended = $("ended");
    const screen = $("screen");
    const canvas = screen && screen.querySelector("canvas");
    const state = {
      status: status.textContent,
      countdown: countdown && !countdown.hidden ? countdown.textContent : null,
      urgent: !!countdown && !countdown.hidden && countdown.classList.contains("urgent"),
      ended: !!ended && !ended.hidden,
      reason: ended && !ended.hidden ? ($("reason")?.textContent ?? "") : null,
      screenVisible: !!screen && !screen.hidden,
      canvas: canvas ? `${canvas.width}x${canvas.height}` : null,
    };
    const key = JSON.stringify(state);
    if (probe.lastKey !== key) {
      probe.lastKey = key;
      probe.timeline.push({ at: Date.now(), ...state });
    }
  };
  probe.snapshot = snapshot;
  new MutationObserver(snapshot).observe(document, {
    subtree: true,
    childList: true,
    characterData: true,
    attributes: true,
    attributeFilter: ["hidden", "class", "width", "height"],
  });
  const count = (proto, name) => {
    const original = proto[name];
    proto[name] = function (...args) {
      probe.draws += 1;
      probe.lastDrawAt = Date.now();
      return original.apply(this, args);
    };
  };
  for (const name of ["putImageData", "drawImage", "fillRect"]) {
    count(CanvasRenderingContext2D.prototype, name);
  }
}

// In the page: statistics of the console canvas (or of `source`, a canvas or
// bitmap): size, non-black pixels, an FNV-1a hash of the RGBA bytes, and a
// grey thumbnail (box-filtered, so it is the same for the same pixels).
function canvasStats({ thumbW, thumbH, source }) {
  const from = source ?? document.querySelector("#screen canvas");
  if (!from || !from.width || !from.height) return null;
  const { width, height } = from;
  let data;
  if (from instanceof HTMLCanvasElement) {
    data = from.getContext("2d").getImageData(0, 0, width, height).data;
  } else {
    const scratch = document.createElement("canvas");
    scratch.width = width;
    scratch.height = height;
    const ctx = scratch.getContext("2d");
    ctx.drawImage(from, 0, 0);
    data = ctx.getImageData(0, 0, width, height).data;
  }
  let hash = 0x811c9dc5;
  let nonBlack = 0;
  const sums = new Float64Array(thumbW * thumbH);
  const counts = new Uint32Array(thumbW * thumbH);
  for (let y = 0; y < height; y++) {
    const ty = Math.min(thumbH - 1, Math.floor((y * thumbH) / height));
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 4;
      const r = data[i], g = data[i + 1], b = data[i + 2];
      hash = Math.imul(hash ^ r, 0x01000193);
      hash = Math.imul(hash ^ g, 0x01000193);
      hash = Math.imul(hash ^ b, 0x01000193);
      if (r > 16 || g > 16 || b > 16) nonBlack++;
      const t = ty * thumbW + Math.min(thumbW - 1, Math.floor((x * thumbW) / width));
      sums[t] += 0.299 * r + 0.587 * g + 0.114 * b;
      counts[t]++;
    }
  }
  const grey = Array.from(sums, (s, i) => (counts[i] ? Math.round(s / counts[i]) : 0));
  return {
    width,
    height,
    nonBlack,
    total: width * height,
    hash: (hash >>> 0).toString(16).padStart(8, "0"),
    thumb: { width: thumbW, height: thumbH, grey },
  };
}

// ---------------------------------------------------------------------------
// Node side.

class Driver {
  constructor({ out, chromiumPath }) {
    this.out = resolve(out ?? join(process.cwd(), ".e2e/artifacts/browser/adhoc"));
    this.chromiumPath = chromiumPath;
    this.pages = new Map();
  }

  async start() {
    mkdirSync(this.out, { recursive: true });
    // A fresh profile every time: no cache, no cookies, no earlier session.
    this.profile = mkdtempSync(join(tmpdir(), "porthole-chromium-"));
    this.context = await chromium.launchPersistentContext(this.profile, {
      executablePath: this.chromiumPath,
      headless: true,
      chromiumSandbox: false,
      args: CHROMIUM_ARGS,
      viewport: { width: 1024, height: 768 },
    });
    await this.context.addInitScript({
      content: `(${pageProbe})(); window.__porthole.stats = ${canvasStats};`,
    });
    // The persistent context opens with one blank page: it becomes the
    // workbench where reference images are decoded, loaded anew so the init
    // script runs in it too.
    this.workbench = this.context.pages()[0] ?? (await this.context.newPage());
    await this.workbench.goto("data:text/html,<!doctype html><title>porthole workbench</title>");
    const cdp = await this.context.newCDPSession(this.workbench);
    const { product } = await cdp.send("Browser.getVersion");
    await cdp.detach();
    return { browser: product, out: this.out, profile: this.profile };
  }

  async stop() {
    try {
      await this.context?.close();
    } finally {
      if (this.profile) rmSync(this.profile, { recursive: true, force: true });
    }
  }

  entry(name) {
    const entry = this.pages.get(name);
    if (!entry) throw new Error(`no page named ${JSON.stringify(name)}`);
    return entry;
  }

  // Opens `url` exactly as given in a new page called `page`.
  async open({ page: name, url, timeoutMs }) {
    if (!name || !url) throw new Error("open needs page and url");
    if (this.pages.has(name)) throw new Error(`page ${name} is already open`);
    const page = await this.context.newPage();
    const entry = { name, page, network: new NetworkLog(), console: [], closed: false };
    this.pages.set(name, entry);
    page.on("console", (m) => entry.console.push(`${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => entry.console.push(`pageerror: ${e.message}`));
    const cdp = await this.context.newCDPSession(page);
    await entry.network.attach(cdp);
    entry.cdp = cdp;
    const response = await page.goto(url, {
      waitUntil: "domcontentloaded",
      timeout: timeoutMs ?? DEFAULT_TIMEOUT_MS,
    });
    return { httpStatus: response?.status() ?? null, ...(await this.state({ page: name })) };
  }

  // What the page shows now, and everything it has shown.
  async state({ page: name }) {
    const { page } = this.entry(name);
    return page.evaluate(() => {
      window.__porthole.snapshot();
      const timeline = window.__porthole.timeline;
      const { at, ...now } = timeline[timeline.length - 1] ?? {};
      return {
        ...now,
        draws: window.__porthole.draws,
        lastDrawAt: window.__porthole.lastDrawAt,
        now: Date.now(),
        timeline,
        location: location.href,
      };
    });
  }

  // Waits until the page shows `until`:
  //   connected  the status says Connected
  //   screen     connected, and the canvas has at least minNonBlack non-black pixels
  //   ended      the end message is shown
  //   countdown  the countdown is shown (with `urgent`: in its last minute's styling)
  //   draws      more than `since` canvas draws have happened
  //   status     the status text is `text`
  //   changed    the canvas's grey thumbnail differs from `from` (a thumbnail
  //              from `canvas`) in at least minCells cells by more than `level`
  async wait({ page: name, until, timeoutMs, ...options }) {
    const { page } = this.entry(name);
    const timeout = timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const arg = {
      until,
      minNonBlack: options.minNonBlack ?? 1000,
      since: options.since ?? 0,
      urgent: !!options.urgent,
      text: options.text ?? null,
      from: options.from ?? null,
      minCells: options.minCells ?? 10,
      level: options.level ?? 24,
    };
    try {
      await page.waitForFunction(
        ({ until, minNonBlack, since, urgent, text, from, minCells, level }) => {
          const $ = (id) => document.getElementById(id);
          const status = $("status")?.textContent ?? "";
          const ended = $("ended");
          const countdown = $("countdown");
          switch (until) {
            case "connected":
              return status.startsWith("Connected");
            case "ended":
              return !!ended && !ended.hidden;
            case "countdown":
              return !!countdown && !countdown.hidden && (!urgent || countdown.classList.contains("urgent"));
            case "draws":
              return window.__porthole.draws > since;
            case "status":
              return status === text;
            case "screen": {
              if (!status.startsWith("Connected")) return false;
              const stats = window.__porthole.stats({ thumbW: 1, thumbH: 1 });
              return !!stats && stats.nonBlack >= minNonBlack;
            }
            case "changed": {
              const stats = window.__porthole.stats({ thumbW: from.width, thumbH: from.height });
              if (!stats) return false;
              let cells = 0;
              stats.thumb.grey.forEach((g, i) => {
                if (Math.abs(g - from.grey[i]) > level) cells++;
              });
              return cells >= minCells;
            }
            default:
              throw new Error(`unknown condition ${until}`);
          }
        },
        arg,
        { timeout, polling: 100 },
      );
    } catch (error) {
      const state = await this.state({ page: name }).catch(() => null);
      throw new Error(
        `waiting for ${until} on page ${name}: ${error.message.split("\n")[0]}; page state: ${JSON.stringify(state)}`,
      );
    }
    return this.state({ page: name });
  }

  // Statistics of the page's console canvas.
  async canvas({ page: name, thumbW, thumbH }) {
    const { page } = this.entry(name);
    const stats = await page.evaluate((arg) => window.__porthole.stats(arg), {
      thumbW: thumbW ?? THUMB.w,
      thumbH: thumbH ?? THUMB.h,
    });
    if (!stats) throw new Error(`page ${name} has no console canvas`);
    return stats;
  }

  // The same statistics of an image file (a PNG of the VM's screen, say),
  // decoded by the browser.
  async reference({ path, thumbW, thumbH }) {
    const bytes = readFileSync(path);
    return this.workbench.evaluate(
      async ({ base64, thumbW, thumbH }) => {
        const blob = await (await fetch(`data:image/png;base64,${base64}`)).blob();
        const bitmap = await createImageBitmap(blob);
        return window.__porthole.stats({ thumbW, thumbH, source: bitmap });
      },
      { base64: bytes.toString("base64"), thumbW: thumbW ?? THUMB.w, thumbH: thumbH ?? THUMB.h },
    );
  }

  // Saves a screenshot of the page and a PNG of its canvas's exact pixels.
  async screenshot({ page: name, name: file }) {
    const { page } = this.entry(name);
    const base = (file ?? name).replace(/[^A-Za-z0-9_.-]/g, "_");
    const pagePath = join(this.out, `${base}.png`);
    await page.screenshot({ path: pagePath });
    const dataUrl = await page.evaluate(() => {
      const canvas = document.querySelector("#screen canvas");
      return canvas && canvas.width ? canvas.toDataURL("image/png") : null;
    });
    let canvasPath = null;
    if (dataUrl) {
      canvasPath = join(this.out, `${base}.canvas.png`);
      writeFileSync(canvasPath, Buffer.from(dataUrl.split(",")[1], "base64"));
    }
    return { page: pagePath, canvas: canvasPath };
  }

  // Clicks at (x, y) in the VM's framebuffer coordinates.
  async click({ page: name, x, y, button }) {
    const { page } = this.entry(name);
    const at = await this.framebufferToClient(page, x, y);
    await page.mouse.move(at.x, at.y);
    await page.mouse.click(at.x, at.y, { button: button ?? "left" });
    return { client: at };
  }

  async framebufferToClient(page, x, y) {
    const box = await page.evaluate(() => {
      const canvas = document.querySelector("#screen canvas");
      if (!canvas || !canvas.width) return null;
      const rect = canvas.getBoundingClientRect();
      return { left: rect.left, top: rect.top, width: rect.width, height: rect.height, fbW: canvas.width, fbH: canvas.height };
    });
    if (!box) throw new Error("the page has no console canvas to click");
    if (x < 0 || y < 0 || x >= box.fbW || y >= box.fbH) {
      throw new Error(`(${x}, ${y}) is outside the ${box.fbW}x${box.fbH} framebuffer`);
    }
    // Mouse events reach noVNC with whole client coordinates, which it maps
    // back through its viewport scaling as floor((client - edge) / scale):
    // pick the first whole coordinate inside the framebuffer pixel.
    const along = (edge, size, fbSize, v) => {
      const scale = size / fbSize;
      const whole = Math.ceil(edge + v * scale + 1e-6);
      return whole < edge + (v + 1) * scale ? whole : edge + (v + 0.5) * scale;
    };
    return {
      x: along(box.left, box.width, box.fbW, x),
      y: along(box.top, box.height, box.fbH, y),
    };
  }

  // Types `text` into the console (noVNC's keyboard input, the canvas focused).
  async type({ page: name, text, delayMs }) {
    const { page } = this.entry(name);
    await page.locator("#screen canvas").focus();
    await page.keyboard.type(text, { delay: delayMs ?? 20 });
    return {};
  }

  // Presses one key (Playwright's key names: "Enter", "Escape", "a").
  async press({ page: name, key }) {
    const { page } = this.entry(name);
    await page.locator("#screen canvas").focus();
    await page.keyboard.press(key);
    return {};
  }

  // Every request the page made and every response it got (bodies as sizes
  // and SHA-256), WebSocket handshakes included.
  async network({ page: name }) {
    const { network } = this.entry(name);
    await network.settle();
    return network.summary();
  }

  // Where each needle (a secret) occurs in anything the page sent or
  // received: request URLs and headers, WebSocket handshakes and frames,
  // response headers and bodies.
  async scan({ page: name, needles }) {
    const { network } = this.entry(name);
    await network.settle();
    return { found: network.scan(needles ?? []) };
  }

  // The page's WebSocket frames, each as hex (at most `bytes` bytes of each):
  // for reading what noVNC sent when a test fails.
  async frames({ page: name, direction, bytes }) {
    const { network } = this.entry(name);
    const frames = network.order
      .filter((r) => r.kind === "websocket")
      .flatMap((r) => r.frames[direction ?? "sent"])
      .map((f) => ({ opcode: f.opcode, bytes: f.bytes, hex: f.data?.subarray(0, bytes ?? 64).toString("hex") ?? null }));
    return { frames };
  }

  async console({ page: name }) {
    return { messages: this.entry(name).console };
  }

  // Closes the page (its WebSocket goes with it).
  async close({ page: name }) {
    const entry = this.entry(name);
    await entry.network.settle();
    await entry.page.close();
    entry.closed = true;
    return {};
  }
}

// What a page sent and received, from Chromium's own network events (CDP):
// the request URL as sent (no fragment), the headers as sent
// (requestWillBeSentExtraInfo), WebSocket handshakes and frames.
class NetworkLog {
  constructor() {
    this.requests = new Map(); // requestId -> record
    this.order = [];
    this.bodies = []; // promises of body fetches
    this.kept = 0;
    this.truncated = false;
  }

  record(id) {
    let r = this.requests.get(id);
    if (!r) {
      r = { id, kind: "http", url: null, fragment: null, method: null, headers: {}, sentHeaders: null,
        status: null, responseHeaders: {}, body: null, frames: { sent: [], received: [] }, closed: false };
      this.requests.set(id, r);
      this.order.push(r);
    }
    return r;
  }

  keep(buffer) {
    if (this.kept + buffer.length > MAX_KEPT_BYTES) {
      this.truncated = true;
      return null;
    }
    this.kept += buffer.length;
    return buffer;
  }

  async attach(cdp) {
    cdp.on("Network.requestWillBeSent", (e) => {
      const r = this.record(e.requestId);
      r.url = e.request.url;
      r.fragment = e.request.urlFragment ?? null;
      r.method = e.request.method;
      r.headers = e.request.headers;
      r.type = e.type;
    });
    cdp.on("Network.requestWillBeSentExtraInfo", (e) => {
      this.record(e.requestId).sentHeaders = e.headers;
    });
    cdp.on("Network.responseReceived", (e) => {
      const r = this.record(e.requestId);
      r.status = e.response.status;
      r.responseHeaders = e.response.headers;
    });
    cdp.on("Network.loadingFinished", (e) => {
      const r = this.record(e.requestId);
      this.bodies.push(
        cdp.send("Network.getResponseBody", { requestId: e.requestId }).then(
          ({ body, base64Encoded }) => {
            const buffer = Buffer.from(body, base64Encoded ? "base64" : "utf8");
            r.bodyBytes = buffer.length;
            r.bodySha256 = createHash("sha256").update(buffer).digest("hex");
            r.body = this.keep(buffer);
          },
          (error) => {
            r.bodyError = error.message;
          },
        ),
      );
    });
    cdp.on("Network.loadingFailed", (e) => {
      this.record(e.requestId).failed = e.errorText;
    });
    cdp.on("Network.webSocketCreated", (e) => {
      const r = this.record(e.requestId);
      r.kind = "websocket";
      r.url = e.url;
      r.method = "GET";
    });
    cdp.on("Network.webSocketWillSendHandshakeRequest", (e) => {
      this.record(e.requestId).sentHeaders = e.request.headers;
    });
    cdp.on("Network.webSocketHandshakeResponseReceived", (e) => {
      const r = this.record(e.requestId);
      r.status = e.response.status;
      r.responseHeaders = e.response.headers;
    });
    const frame = (direction) => (e) => {
      const r = this.record(e.requestId);
      const { opcode, payloadData } = e.response;
      const buffer = Buffer.from(payloadData, opcode === 1 ? "utf8" : "base64");
      r.frames[direction].push({ opcode, bytes: buffer.length, data: this.keep(buffer) });
    };
    cdp.on("Network.webSocketFrameSent", frame("sent"));
    cdp.on("Network.webSocketFrameReceived", frame("received"));
    cdp.on("Network.webSocketClosed", (e) => {
      this.record(e.requestId).closed = true;
    });
    await cdp.send("Network.enable", {
      maxTotalBufferSize: 200 * 1024 * 1024,
      maxResourceBufferSize: 50 * 1024 * 1024,
    });
  }

  async settle() {
    // Body fetches started so far; later ones are awaited by a later call.
    await Promise.allSettled(this.bodies);
  }

  summary() {
    return {
      truncated: this.truncated,
      requests: this.order.map((r) => ({
        kind: r.kind,
        url: r.url,
        urlFragment: r.fragment,
        method: r.method,
        type: r.type ?? null,
        headers: lower(r.sentHeaders ?? r.headers),
        status: r.status,
        responseHeaders: lower(r.responseHeaders),
        bodyBytes: r.bodyBytes ?? null,
        bodySha256: r.bodySha256 ?? null,
        failed: r.failed ?? null,
        framesSent: r.frames.sent.length,
        framesReceived: r.frames.received.length,
        bytesReceived: r.frames.received.reduce((n, f) => n + f.bytes, 0),
        closed: r.closed,
      })),
    };
  }

  scan(needles) {
    const found = [];
    for (const needle of needles) {
      const value = typeof needle === "string" ? needle : needle.value;
      const label = typeof needle === "string" ? needle : (needle.name ?? needle.value);
      if (!value) continue;
      const bytes = Buffer.from(value, "utf8");
      const hit = (where, r) => found.push({ needle: label, where, url: r.url });
      for (const r of this.order) {
        const prefix = r.kind === "websocket" ? "websocket-" : "";
        if (r.url?.includes(value)) hit(`${prefix}request-url`, r);
        for (const [name, v] of Object.entries(lower(r.sentHeaders ?? r.headers))) {
          if (String(v).includes(value)) hit(`${prefix}request-header:${name}`, r);
        }
        for (const [name, v] of Object.entries(lower(r.responseHeaders))) {
          if (String(v).includes(value)) hit(`${prefix}response-header:${name}`, r);
        }
        if (r.body?.includes(bytes)) hit("response-body", r);
        for (const direction of ["sent", "received"]) {
          // A secret may straddle two frames: scan each frame joined to the next.
          const frames = r.frames[direction];
          for (let i = 0; i < frames.length; i++) {
            const here = frames[i].data;
            if (!here) continue;
            const next = frames[i + 1]?.data;
            const joined = next ? Buffer.concat([here, next.subarray(0, bytes.length - 1)]) : here;
            if (joined.includes(bytes)) {
              hit(`websocket-frame-${direction}`, r);
              break;
            }
          }
        }
      }
    }
    return found;
  }
}

function lower(headers) {
  return Object.fromEntries(Object.entries(headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
}

// ---------------------------------------------------------------------------
// Long-lived mode: JSON lines in, JSON lines out. Commands run concurrently;
// each answer carries the command's id.

async function serve(driver) {
  const started = await driver.start();
  print({ id: 0, ok: true, result: { ready: true, ...started } });
  const running = new Set();
  const input = createInterface({ input: process.stdin });
  for await (const line of input) {
    if (!line.trim()) continue;
    let command;
    try {
      command = JSON.parse(line);
    } catch (error) {
      print({ id: null, ok: false, error: `not JSON: ${error.message}` });
      continue;
    }
    const { id, cmd, ...args } = command;
    if (cmd === "quit") break;
    const run = dispatch(driver, cmd, args).then(
      (result) => print({ id, ok: true, result }),
      (error) => print({ id, ok: false, error: error?.message ?? String(error) }),
    );
    running.add(run);
    run.finally(() => running.delete(run));
  }
  await Promise.allSettled(running);
  await driver.stop();
  // stdin may still be open (the parent sent quit): nothing else keeps us.
  process.exit(0);
}

const COMMANDS = ["open", "state", "wait", "canvas", "reference", "screenshot", "click", "type", "press",
  "network", "scan", "frames", "console", "close"];

function dispatch(driver, cmd, args) {
  if (!COMMANDS.includes(cmd)) return Promise.reject(new Error(`unknown command ${JSON.stringify(cmd)}`));
  return driver[cmd](args);
}

function print(value) {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

// ---------------------------------------------------------------------------
// One-shot scenarios, each printing one JSON line. Small, for trying the
// driver by hand against a console URL.

const SCENARIOS = {
  // Waits for the VM's screen; reports the states shown, canvas and network.
  async open(driver, o) {
    await driver.open({ page: "main", url: o.url });
    const state = await driver.wait({ page: "main", until: "screen", timeoutMs: o.timeoutMs });
    return {
      state,
      canvas: await driver.canvas({ page: "main" }),
      screenshot: await driver.screenshot({ page: "main", name: "open" }),
      network: await driver.network({ page: "main" }),
    };
  },
  // Waits for the screen, clicks at --click X,Y and types --text.
  async type(driver, o) {
    await driver.open({ page: "main", url: o.url });
    await driver.wait({ page: "main", until: "screen", timeoutMs: o.timeoutMs });
    const [x, y] = (o.click ?? "10,10").split(",").map(Number);
    await driver.click({ page: "main", x, y });
    await driver.type({ page: "main", text: o.text ?? "porthole" });
    return { state: await driver.state({ page: "main" }) };
  },
  // Waits for the end message (expiry, idle, failure).
  async "watch-end"(driver, o) {
    await driver.open({ page: "main", url: o.url });
    const state = await driver.wait({ page: "main", until: "ended", timeoutMs: o.timeoutMs });
    return { state, screenshot: await driver.screenshot({ page: "main", name: "ended" }) };
  },
  // A first page connects; a second page on the same URL is refused.
  async refused(driver, o) {
    await driver.open({ page: "first", url: o.url });
    const first = await driver.wait({ page: "first", until: "screen", timeoutMs: o.timeoutMs });
    await driver.open({ page: "second", url: o.url });
    const second = await driver.wait({ page: "second", until: "ended", timeoutMs: o.timeoutMs });
    return { first, second, screenshot: await driver.screenshot({ page: "second", name: "refused" }) };
  },
};

async function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      url: { type: "string" },
      out: { type: "string" },
      chromium: { type: "string", default: process.env.PORTHOLE_CHROMIUM ?? "/usr/bin/chromium" },
      timeout: { type: "string" },
      text: { type: "string" },
      click: { type: "string" },
    },
  });
  const [mode] = positionals;
  const driver = new Driver({ out: values.out, chromiumPath: values.chromium });
  if (mode === "serve") return serve(driver);
  const scenario = SCENARIOS[mode];
  if (!scenario || !values.url) {
    process.stderr.write(
      `usage: drive.mjs serve [--out DIR] [--chromium PATH]\n` +
        `       drive.mjs {${Object.keys(SCENARIOS).join("|")}} --url URL [--out DIR] [--timeout SECONDS] [--text T] [--click X,Y]\n`,
    );
    process.exitCode = 2;
    return;
  }
  const timeoutMs = values.timeout ? Number(values.timeout) * 1000 : undefined;
  try {
    await driver.start();
    const result = await scenario(driver, { ...values, timeoutMs });
    print({ ok: true, scenario: mode, result });
  } catch (error) {
    print({ ok: false, scenario: mode, error: error?.message ?? String(error) });
    process.exitCode = 1;
  } finally {
    await driver.stop();
  }
}

await main();
