// The in-page half of mobilize's browser harness. `mobilizeRun(job)` loads one model in one
// runtime, runs it once (first inference: shader compilation, wasm warm-up, allocation),
// warms up, then times `runs` inferences and returns load time, first-inference time, every
// steady-state time and the runtime's memory. Inputs are seeded pseudo-random numbers: the
// values do not change the work, and seeding keeps runs comparable.
'use strict';

function seededData(n, seed) {
  const a = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = s / 4294967296 - 0.5;
  }
  return a;
}

function numel(shape) {
  return shape.reduce((x, y) => x * y, 1);
}

function jsHeap() {
  return performance.memory ? performance.memory.usedJSHeapSize : null;
}

async function timeLoop(step, job) {
  for (let i = 0; i < job.warmup; i++) await step();
  const ms = [];
  const start = performance.now();
  while (ms.length < job.runs) {
    const t = performance.now();
    await step();
    ms.push(performance.now() - t);
    if (ms.length >= job.min_runs && performance.now() - start > job.max_seconds * 1000) break;
  }
  return ms;
}

async function runTfjs(job) {
  const t0 = performance.now();
  if (job.backend === 'wasm') {
    tf.wasm.setWasmPaths('/npm/@tensorflow/tfjs-backend-wasm/dist/');
  }
  if (!(await tf.setBackend(job.backend))) throw new Error(`tfjs backend ${job.backend} is not available`);
  await tf.ready();
  const t1 = performance.now();
  const model = await tf.loadGraphModel(job.model_url);
  const t2 = performance.now();
  const feeds = {};
  job.inputs.forEach((inp, i) => {
    feeds[inp.name] = tf.tensor(seededData(numel(inp.shape), 7 + i), inp.shape, 'float32');
  });
  const step = async () => {
    let out = await model.executeAsync(feeds, job.outputs && job.outputs.length ? job.outputs : undefined);
    if (!Array.isArray(out)) out = [out];
    for (const o of out) await o.data();
    tf.dispose(out);
  };
  const t3 = performance.now();
  await step();
  const first = performance.now() - t3;
  const ms = await timeLoop(step, job);
  const mem = tf.memory();
  const result = {
    runtime: 'tfjs', backend: tf.getBackend(), version: tf.version.tfjs,
    backend_init_ms: t1 - t0, load_ms: t2 - t1, first_ms: first, ms,
    memory: { num_bytes: mem.numBytes, num_tensors: mem.numTensors,
              num_bytes_in_gpu: mem.numBytesInGPU === undefined ? null : mem.numBytesInGPU,
              js_heap_bytes: jsHeap() },
  };
  if (job.backend === 'webgl') {
    const gl = tf.backend().gpgpu && tf.backend().gpgpu.gl;
    if (gl) {
      const ext = gl.getExtension('WEBGL_debug_renderer_info');
      result.renderer = ext ? gl.getParameter(ext.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER);
    }
  }
  tf.dispose(Object.values(feeds));
  model.dispose();
  return result;
}

async function runOrt(job) {
  ort.env.wasm.wasmPaths = '/npm/onnxruntime-web/dist/';
  ort.env.wasm.numThreads = job.threads || 1;
  ort.env.wasm.proxy = false;
  ort.env.logLevel = 'error';
  const t1 = performance.now();
  const session = await ort.InferenceSession.create(job.model_url, { executionProviders: ['wasm'],
                                                                    graphOptimizationLevel: 'all' });
  const t2 = performance.now();
  const feeds = {};
  job.inputs.forEach((inp, i) => {
    feeds[inp.name] = new ort.Tensor('float32', seededData(numel(inp.shape), 7 + i), inp.shape);
  });
  const step = async () => {
    const out = await session.run(feeds);
    for (const k of Object.keys(out)) {
      if (out[k].dispose) out[k].dispose();
    }
  };
  const t3 = performance.now();
  await step();
  const first = performance.now() - t3;
  const ms = await timeLoop(step, job);
  const result = {
    runtime: 'onnxruntime-web', backend: 'wasm', version: ort.env.versions ? ort.env.versions.web : null,
    backend_init_ms: 0, load_ms: t2 - t1, first_ms: first, ms,
    memory: { js_heap_bytes: jsHeap() },
  };
  await session.release();
  return result;
}

// Lighthouse's BenchmarkIndex (computeBenchmarkIndex in Lighthouse, Apache-2.0), which Chrome
// DevTools' calibrated CPU throttling also uses: the same work, so that a score here compares with
// the published ones (DevTools: a low-tier phone scores 264, a mid-tier one 1000). Two halves,
// averaged: how often per second a 10000-character string is built (garbage-collector heavy) and
// a 100000-element array copied (no garbage), each divided by 10. Higher is faster.
function indexOfStrings(ms) {
  const start = Date.now();
  let n = 0;
  while (Date.now() - start < ms) {
    let text = '';
    for (let i = 0; i < 10000; i++) text += 'a';
    if (text.length === 1) throw new Error('unreachable: keeps the loop from being optimised away');
    n++;
  }
  return Math.round(n / 10 / ((Date.now() - start) / 1000));
}

function indexOfCopies(ms) {
  const a = [];
  const b = [];
  for (let i = 0; i < 100000; i++) a[i] = b[i] = i;
  const start = Date.now();
  let n = 0;
  while (n % 10 !== 0 || Date.now() - start < ms) {  // the clock read every 10th copy, as Lighthouse does
    const from = n % 2 === 0 ? a : b;
    const to = n % 2 === 0 ? b : a;
    for (let i = 0; i < from.length; i++) to[i] = from[i];
    n++;
  }
  return Math.round(n / 10 / ((Date.now() - start) / 1000));
}

window.mobilizeBenchmarkIndex = function (job) {
  const half = (job.duration_ms || 1000) / 2;
  indexOfStrings(half / 4);  // warm the JIT up first
  indexOfCopies(half / 4);
  const strings = indexOfStrings(half);
  const copies = indexOfCopies(half);
  return { index: (strings + copies) / 2, strings, copies };
};

window.mobilizeRun = async function (job) {
  try {
    return job.runtime === 'onnx' ? await runOrt(job) : await runTfjs(job);
  } catch (err) {
    return { error: String(err && err.message ? err.message : err) };
  }
};
