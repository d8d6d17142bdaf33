#!/usr/bin/env node
// Builds a Stepwise step component from a JavaScript or TypeScript entry file:
//
//   node guest-sdk/js/build.mjs my-step.js -o my-step.wasm
//
// The entry exports `run` (`export const run = step(...)`) and may import the SDK as
// 'stepwise'. esbuild bundles it (componentize-js resolves relative imports only, and strips
// no TypeScript), then componentize-js embeds it in SpiderMonkey against guest-sdk/wit.
//
// componentize-js, jco and esbuild are found in STEPWISE_JS_TOOLS (a folder where this
// directory's package.json was `npm install`ed; scripts/guest-toolchains does that) or in
// this directory's own node_modules (`npm install` here).

import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const out = args.includes('-o') ? args[args.indexOf('-o') + 1] : undefined;
const entry = args.find((a, i) => !a.startsWith('-') && args[i - 1] !== '-o');
if (!entry || !out) {
  console.error('usage: node build.mjs STEP.js|STEP.ts -o STEP.wasm');
  process.exit(2);
}

const tools = resolve(process.env.STEPWISE_JS_TOOLS || here);
/** The package's ESM entry in `tools`: its `exports` may offer no `require` entry. */
async function load(name) {
  try {
    const dir = join(tools, 'node_modules', name);
    const pkg = JSON.parse(await readFile(join(dir, 'package.json'), 'utf8'));
    let main = pkg.exports?.['.'] ?? pkg.exports ?? pkg.module ?? pkg.main ?? 'index.js';
    while (typeof main === 'object') main = main.import ?? main.default ?? main.node;
    return await import(pathToFileURL(join(dir, main)).href);
  } catch (e) {
    console.error(
      `cannot load ${name} from ${tools} (${e.code || e.message}); run \`npm install\` in ` +
        `${here}, or scripts/guest-toolchains DIR and set STEPWISE_JS_TOOLS=DIR/js`,
    );
    process.exit(1);
  }
}
const esbuild = await load('esbuild');
const { componentize } = await load('@bytecodealliance/componentize-js');

const work = await mkdtemp(join(tmpdir(), 'stepwise-js-'));
try {
  const bundle = join(work, 'step.js');
  await esbuild.build({
    entryPoints: [resolve(entry)],
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    target: 'es2022',
    outfile: bundle,
    alias: { stepwise: join(here, 'stepwise.js') },
    // The host's functions: componentize-js links these imports to the component's.
    external: ['stepwise:*', 'wasi:*'],
    logLevel: 'warning',
  });
  const { component } = await componentize({
    sourcePath: bundle,
    witPath: join(here, '..', 'wit'),
    worldName: 'step',
    // wasi:http is refused by the server; the rest of WASI is linked deny-all.
    disableFeatures: ['http', 'fetch-event'],
  });
  await writeFile(out, component);
  console.error(`wrote ${out} (${(component.length / 2 ** 20).toFixed(1)} MiB)`);
} finally {
  await rm(work, { recursive: true, force: true });
}
