// Drives headless Chromium for mobilize's browser latency checks (playwright-core + CDP).
//
// usage: node run_browser.cjs CONFIG_JSON_FILE
// CONFIG: {executable, page_url, args: [...], jobs: [{runtime, backend, throttle, page?, ...}]}
// (a job's `page` is relative to page_url: the BenchmarkIndex runs on a page without the runtimes)
// Each job gets a fresh browser context (cold HTTP cache, fresh JS heap), the CPU throttling
// rate set through the DevTools protocol before the page loads, then window.mobilizeRun(job)
// (a model) or, for runtime "benchmark", window.mobilizeBenchmarkIndex(job) (Lighthouse's index).
// Prints one JSON line: {"results": [...]} (one entry per job, with "error" when it failed).
'use strict';

const fs = require('fs');

async function main() {
  const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const { chromium } = require('playwright-core');
  const browser = await chromium.launch({ executablePath: cfg.executable, headless: true, args: cfg.args,
                                          timeout: cfg.launch_timeout_ms || 60000 });
  const results = [];
  try {
    for (const job of cfg.jobs) {
      const context = await browser.newContext();
      try {
        const page = await context.newPage();
        page.setDefaultTimeout(cfg.job_timeout_ms || 300000);
        const cdp = await context.newCDPSession(page);
        await cdp.send('Emulation.setCPUThrottlingRate', { rate: job.throttle || 1 });
        await cdp.send('Performance.enable');
        const t0 = Date.now();
        await page.goto(job.page ? new URL(job.page, cfg.page_url).href : cfg.page_url, { waitUntil: 'load' });
        const pageLoadMs = Date.now() - t0;
        const res = job.runtime === 'benchmark'
          ? await page.evaluate((j) => window.mobilizeBenchmarkIndex(j), job)
          : await page.evaluate((j) => window.mobilizeRun(j), job);
        const metrics = {};
        for (const m of (await cdp.send('Performance.getMetrics')).metrics) metrics[m.name] = m.value;
        res.page_load_ms = pageLoadMs;
        res.js_heap_used_bytes = metrics.JSHeapUsedSize === undefined ? null : metrics.JSHeapUsedSize;
        res.throttle = job.throttle || 1;
        res.browser = browser.version();
        results.push(res);
      } catch (err) {
        results.push({ error: String(err && err.message ? err.message : err).split('\n')[0], throttle: job.throttle });
      } finally {
        await context.close();
      }
    }
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify({ results }) + '\n');
}

main().catch((err) => {
  process.stdout.write(JSON.stringify({ error: String(err && err.stack ? err.stack : err) }) + '\n');
  process.exit(1);
});
