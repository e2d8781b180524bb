// Runs the filter through a real RustyGate on gateway.yaml, in front of a small upstream, and
// checks what a client sees. `make test` builds the .wasm first. The gateway binary is
// $RUSTYGATE, or rustygate on PATH.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { resolve } from "node:path";

const listening = (server) =>
  new Promise((ok) => server.listen(0, "127.0.0.1", () => ok(server.address().port)));

async function freePort() {
  const server = createServer();
  const port = await listening(server);
  await new Promise((ok) => server.close(ok));
  return port;
}

test("responses carry the configured header", async (t) => {
  const wasm = resolve("build/__NAME__.wasm");
  assert.ok(existsSync(wasm), `${wasm} is missing: build it first (make build)`);
  const upstream = createServer((req, res) => res.end("hello from upstream"));
  const upstreamPort = await listening(upstream);
  t.after(() => upstream.close());

  const listen = await freePort();
  const bin = process.env.RUSTYGATE || "rustygate";
  const gateway = spawn(bin, ["run", "--config", "gateway.yaml"], {
    env: {
      ...process.env,
      FILTER_WASM: wasm,
      LISTEN_PORT: String(listen),
      ADMIN_PORT: String(await freePort()),
      UPSTREAM_PORT: String(upstreamPort),
    },
    stdio: ["ignore", "inherit", "inherit"],
  });
  gateway.on("error", (e) => assert.fail(`cannot start ${bin}: ${e}; set RUSTYGATE to the binary`));
  t.after(() => gateway.kill());

  let response;
  for (const deadline = Date.now() + 30_000; ; await new Promise((ok) => setTimeout(ok, 100))) {
    try {
      response = await fetch(`http://127.0.0.1:${listen}/hello`);
      break;
    } catch (e) {
      if (Date.now() > deadline) throw new Error(`the gateway did not answer: ${e}`);
    }
  }
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("x-hello"), "world");
  assert.equal(await response.text(), "hello from upstream");
});
