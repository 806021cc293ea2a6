// Drives the built-in page of a running `facerec up` in headless Chromium:
// enroll a person through the gallery form, drop photos on the upload input, and check
// each photo comes back drawn with its face box, the right name and, for a named face, how
// sure the match is; a file that is not an image comes back as an error card without a
// picture area; the icon loads. Saves a screenshot.
//
// usage: node page_test.mjs BASE_URL SCREENSHOT.png ENROLL_NAME ENROLL_IMAGE EXPECT_JSON
//   EXPECT_JSON: [{"file": "/path/a.jpg", "name": "Paul"}, ...]
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const [base, shot, enrollName, enrollImage, expectJson] = process.argv.slice(2);
const expected = JSON.parse(expectJson);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  page.on("console", (m) => console.error(`page: ${m.text()}`));
  await page.goto(base, { waitUntil: "load" });

  await page.fill("#enroll-name", enrollName);
  await page.setInputFiles("#enroll-file", enrollImage);
  await page.click("#enroll button, #enroll [type=submit]");
  await page.waitForFunction((n) => document.querySelector("#enroll-status").textContent.includes(`enrolled ${n}`),
    enrollName, { timeout: 120000 });
  await page.waitForFunction((n) => document.querySelector("#identities").textContent.includes(n), enrollName);

  await page.setInputFiles("#files", expected.map((e) => e.file));
  await page.waitForFunction((k) => document.querySelectorAll("figcaption[data-name]").length === k,
    expected.length, { timeout: 300000 });

  const got = await page.$$eval("figure", (figs) => figs.map((f) => {
    const c = f.querySelector("canvas");
    const g = c.getContext("2d");
    const px = g.getImageData(0, 0, c.width, c.height).data;
    // Box colours: green (#2ecc71) for a named face, yellow (#f1c40f) for unknown.
    let green = 0, yellow = 0;
    for (let i = 0; i < px.length; i += 4) {
      if (px[i] === 0x2e && px[i + 1] === 0xcc && px[i + 2] === 0x71) green++;
      if (px[i] === 0xf1 && px[i + 1] === 0xc4 && px[i + 2] === 0x0f) yellow++;
    }
    return { caption: f.querySelector("figcaption").textContent, name: f.querySelector("figcaption").dataset.name, green, yellow };
  }));
  await page.screenshot({ path: shot, fullPage: true });
  console.log(JSON.stringify(got));
  const failures = [];
  for (const e of expected) {
    const stem = e.file.split("/").pop().replace(/\.[^.]+$/, "");
    const fig = got.find((g) => g.caption.startsWith(`${stem}:`));
    if (!fig) { failures.push(`${stem}: no result shown`); continue; }
    if (fig.name !== e.name) failures.push(`${stem}: shown as ${fig.name}, expected ${e.name}`);
    // A named answer says how sure it is: the calibrated confidence, as a percentage.
    if (e.name !== "unknown" && !/\(\d+% sure\)/.test(fig.caption)) failures.push(`${stem}: caption ${fig.caption} has no confidence`);
    const box = e.name === "unknown" ? fig.yellow : fig.green;
    if (box === 0) failures.push(`${stem}: no ${e.name === "unknown" ? "yellow" : "green"} face box drawn`);
  }

  // A file that is not an image: an error card, caption only.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "facerec-page-"));
  const bad = path.join(dir, "notes.jpg");
  fs.writeFileSync(bad, "plain text, not a photo");
  await page.setInputFiles("#files", [bad]);
  await page.waitForFunction(() => document.querySelectorAll("figcaption.error").length === 1,
    null, { timeout: 60000 });
  const card = await page.$eval("figcaption.error", (c) => ({
    text: c.textContent, canvas: c.parentElement.querySelector("canvas") !== null,
  }));
  if (!card.text.startsWith("notes.jpg:")) failures.push(`error card says ${card.text}`);
  if (card.canvas) failures.push("the error card keeps an (empty) picture area");
  const icon = await page.evaluate(async () => (await fetch("/favicon.ico")).status);
  if (icon !== 200) failures.push(`/favicon.ico answered ${icon}`);
  if (failures.length) { console.error(failures.join("\n")); process.exit(1); }
} finally {
  await browser.close();
}
