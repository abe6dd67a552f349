// The page's modules as the gateway serves them: every module in src/api/web/ is in
// src/api/web.rs's table (so it has a route), every import names one of them, and the page
// loads the entry as a module. Each module checks its types (// @ts-check) and the pure ones
// load under node without a browser.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";

const dir = new URL("../../src/api/web/", import.meta.url);
const read = (name) => readFileSync(new URL(name, dir), "utf8");
const webRs = readFileSync(new URL("../../src/api/web.rs", import.meta.url), "utf8");
const modRs = readFileSync(new URL("../../src/api/mod.rs", import.meta.url), "utf8");

const scripts = readdirSync(dir).filter((f) => f.endsWith(".js"));
const table = new Map([...webRs.matchAll(/\("(\/[\w.-]+\.js)", include_str!\("web\/([\w.-]+\.js)"\)\)/g)]
  .map((m) => [m[1], m[2]]));

test("web.rs serves every dialer module at /<its file name>", () => {
  assert.ok(table.size >= 6, `the MODULES table: ${[...table.keys()]}`);
  for (const [path, file] of table) assert.equal(path, `/${file}`);
  for (const file of scripts) {
    if (file === "calls.js") {
      assert.match(modRs, /\.route\("\/calls\.js", get\(web::calls_script\)\)/);
      continue;
    }
    assert.ok(table.has(`/${file}`), `${file} is in web.rs's MODULES`);
  }
  assert.match(modRs, /web::modules\(Router::new\(\)\)/, "api::serve routes the table");
  assert.doesNotMatch(modRs, /\.route\("\/app\.js"/, "/app.js is routed once, by the table");
});

test("every import is relative and names a served module", () => {
  for (const file of scripts) {
    const source = read(file);
    for (const m of source.matchAll(/^\s*(?:import|export)\b[^;]*?\bfrom\s+"([^"]+)"/gm)) {
      assert.match(m[1], /^\.\/[\w.-]+\.js$/, `${file}: ${m[1]}`);
      assert.ok(table.has(m[1].slice(1)), `${file} imports ${m[1]}, which web.rs serves`);
    }
  }
});

test("every module checks its types", () => {
  for (const file of scripts) assert.match(read(file), /^\/\/ @ts-check\n/, file);
});

test("the pages load their scripts as modules", () => {
  assert.match(read("index.html"), /<script type="module" src="\/app\.js"><\/script>/);
  assert.match(read("calls.html"), /<script type="module" src="\/calls\.js"><\/script>/);
});

test("the modules without DOM load under node", async () => {
  for (const file of ["protocol.js", "state.js", "media.js"]) {
    const module = await import(new URL(file, dir).href);
    assert.ok(Object.keys(module).length > 0, file);
  }
});
