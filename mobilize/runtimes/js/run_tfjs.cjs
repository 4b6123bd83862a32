// Runs a TF.js graph model under Node for mobilize's verification and timing.
//
// usage: node run_tfjs.cjs MODEL_JSON BACKEND
// Prints one JSON line when ready, then answers one JSON request per stdin line:
//   {"inputs": [{"name", "shape", "file"}], "outputs": [names], "out_dir": dir, "repeat": n}
// Tensors travel as raw little-endian float32 files; the reply names the files it wrote.
'use strict';

const fs = require('fs');
const path = require('path');
const readline = require('readline');

function reply(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function loadArtifacts(modelJson) {
  const dir = path.dirname(modelJson);
  const model = JSON.parse(fs.readFileSync(modelJson, 'utf8'));
  const weightSpecs = [];
  const buffers = [];
  for (const group of model.weightsManifest || []) {
    weightSpecs.push(...group.weights);
    for (const p of group.paths) buffers.push(fs.readFileSync(path.join(dir, p)));
  }
  const all = Buffer.concat(buffers);
  const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
  return {
    modelTopology: model.modelTopology,
    format: model.format,
    generatedBy: model.generatedBy,
    convertedBy: model.convertedBy,
    signature: model.signature,
    userDefinedMetadata: model.userDefinedMetadata,
    modelInitializer: model.modelInitializer,
    weightSpecs,
    weightData,
  };
}

// execute() is synchronous (no event-loop hops between ops); graphs with dynamic ops need
// executeAsync(), which we fall back to once and then keep using.
let useAsync = false;
async function run(model, feeds, outputs) {
  if (!useAsync) {
    try {
      return model.execute(feeds, outputs);
    } catch (err) {
      if (!/executeAsync/.test(String(err && err.message))) throw err;
      useAsync = true;
    }
  }
  return model.executeAsync(feeds, outputs);
}

async function main() {
  const [modelJson, backend = 'wasm'] = process.argv.slice(2);
  const tf = require('@tensorflow/tfjs');
  if (backend === 'wasm') {
    const wasm = require('@tensorflow/tfjs-backend-wasm');
    const dist = path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm'));
    wasm.setWasmPaths(dist + path.sep);
  }
  await tf.setBackend(backend);
  await tf.ready();
  const t0 = process.hrtime.bigint();
  const model = await tf.loadGraphModel(tf.io.fromMemory(loadArtifacts(modelJson)));
  const loadMs = Number(process.hrtime.bigint() - t0) / 1e6;
  reply({
    ready: true,
    backend: tf.getBackend(),
    version: tf.version.tfjs,
    load_ms: loadMs,
    inputs: model.inputs.map((t) => ({ name: t.name, shape: t.shape })),
    outputs: model.outputs.map((t) => ({ name: t.name, shape: t.shape })),
    signature: model.signature || null,
  });

  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    if (!line.trim()) continue;
    try {
      const req = JSON.parse(line);
      const feeds = {};
      for (const inp of req.inputs) {
        const buf = fs.readFileSync(inp.file);
        const data = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
        feeds[inp.name] = tf.tensor(data, inp.shape, 'float32');
      }
      const times = [];
      let result = null;
      const repeat = req.repeat || 1;
      for (let i = 0; i < repeat; i++) {
        if (result) tf.dispose(result);
        const s = process.hrtime.bigint();
        result = await run(model, feeds, req.outputs);
        if (!Array.isArray(result)) result = [result];
        for (const r of result) await r.data();
        times.push(Number(process.hrtime.bigint() - s) / 1e6);
      }
      const outputs = [];
      for (let i = 0; i < result.length; i++) {
        const data = await result[i].data();
        const file = path.join(req.out_dir, `out${i}.bin`);
        fs.writeFileSync(file, Buffer.from(new Float32Array(data).buffer));
        outputs.push({ shape: result[i].shape, file });
      }
      tf.dispose(result);
      tf.dispose(Object.values(feeds));
      reply({ outputs, ms: times, memory: tf.memory() });
    } catch (err) {
      reply({ error: String(err && err.message ? err.message : err) });
    }
  }
}

main().catch((err) => {
  reply({ error: String(err && err.stack ? err.stack : err) });
  process.exit(1);
});
