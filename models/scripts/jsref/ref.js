// Independent reference: run face-api 1.7.15 itself (tfjs 4.22, 'cpu' backend) on the tensors that
// compare.py prepared, and write its outputs next to them. Not run by CI.
//
// Setup (once, in a scratch dir outside the repo):
//   mkdir -p /tmp/jsref && cd /tmp/jsref && npm init -y
//   npm install @tensorflow/tfjs@4.22.0 @tensorflow/tfjs-backend-wasm@4.22.0 @vladmandic/face-api@1.7.15
// Run (from the repo root; compare.py calls this script and then compares with onnxruntime):
//   python3 models/scripts/jsref/compare.py --jsref /tmp/jsref --package /path/to/package
// Direct use: NODE_PATH=/tmp/jsref/node_modules node models/scripts/jsref/ref.js WORK_DIR MODEL_DIR
//   WORK_DIR/job.json lists the inputs (NHWC float32 .f32 files); outputs go to WORK_DIR/js_*.
'use strict';

const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');
const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');

const [work, modelDir] = process.argv.slice(2);

function weightMap(name) {
  const manifest = JSON.parse(fs.readFileSync(path.join(modelDir, `${name}-weights_manifest.json`)));
  const out = {};
  for (const group of manifest) {
    const b = Buffer.concat(group.paths.map((p) => fs.readFileSync(path.join(modelDir, p))));
    const ab = b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
    Object.assign(out, tf.io.decodeWeights(ab, group.weights));
  }
  return out;
}

function readF32(f, shape) {
  const b = fs.readFileSync(path.join(work, f));
  return tf.tensor(new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)), shape, 'float32');
}

async function writeF32(f, t) {
  const data = await t.data();
  fs.writeFileSync(path.join(work, f), Buffer.from(new Float32Array(data).buffer));
  return t.shape;
}

(async () => {
  await tf.setBackend('cpu');
  await tf.ready();
  const job = JSON.parse(fs.readFileSync(path.join(work, 'job.json')));
  const { nets } = faceapi;
  nets.ssdMobilenetv1.loadFromWeightMap(weightMap('ssd_mobilenetv1_model'));
  nets.tinyFaceDetector.loadFromWeightMap(weightMap('tiny_face_detector_model'));
  nets.faceLandmark68Net.loadFromWeightMap(weightMap('face_landmark_68_model'));
  nets.faceRecognitionNet.loadFromWeightMap(weightMap('face_recognition_model'));
  const result = { tfjs: tf.version.tfjs, backend: tf.getBackend(), faceapi: faceapi.version, outputs: {} };

  // 1. the networks on the given NHWC tensors
  for (const item of job.nets) {
    const x = readF32(item.file, item.shape); // [N,H,W,3]
    const list = tf.unstack(x);
    const netInput = await faceapi.toNetInput(list);
    const o = {};
    if (item.model === 'ssd_mobilenetv1') {
      const { boxes, scores } = nets.ssdMobilenetv1.forwardInput(netInput);
      o.boxes = await writeF32(`js_${item.name}_boxes.f32`, tf.stack(boxes));
      o.scores = await writeF32(`js_${item.name}_scores.f32`, tf.stack(scores));
    } else if (item.model === 'tiny_face_detector') {
      const raw = nets.tinyFaceDetector.forwardInput(netInput, item.shape[1]); // NHWC
      o.raw = await writeF32(`js_${item.name}_raw.f32`, raw.transpose([0, 3, 1, 2]));
    } else if (item.model === 'face_landmark_68') {
      o.landmarks = await writeF32(`js_${item.name}_landmarks.f32`, nets.faceLandmark68Net.runNet(netInput));
    } else if (item.model === 'face_recognition') {
      o.descriptor = await writeF32(`js_${item.name}_descriptor.f32`, nets.faceRecognitionNet.forwardInput(netInput));
    }
    result.outputs[item.name] = o;
  }

  // 2. toBatchTensor on small odd-shaped uint8 images (padding / resize corner cases)
  result.pad_cases = [];
  for (const c of job.pad_cases || []) {
    const u8 = fs.readFileSync(path.join(work, c.file));
    const t = tf.tensor3d(new Int32Array(u8), [c.height, c.width, 3], 'int32');
    const out = (await faceapi.toNetInput(t)).toBatchTensor(c.size, c.center);
    result.pad_cases.push(await writeF32(`js_${c.file}.f32`, out));
  }

  // 3. the whole face-api pipeline on a decoded image (tensor input path, as in Node)
  if (job.pipeline) {
    const { file, height, width } = job.pipeline;
    const u8 = fs.readFileSync(path.join(work, file));
    const img = tf.tensor3d(new Int32Array(u8), [height, width, 3], 'int32');
    const ni = await faceapi.toNetInput(img);
    const p = {};
    p.ssd_input = await writeF32('js_pipe_ssd_input.f32', ni.toBatchTensor(512, false));
    p.tiny_input = await writeF32('js_pipe_tiny_input.f32', ni.toBatchTensor(416, false));
    const res = await faceapi.detectAllFaces(img, new faceapi.SsdMobilenetv1Options())
      .withFaceLandmarks().withFaceDescriptors();
    p.faces = [];
    for (let i = 0; i < res.length; i++) {
      const r = res[i];
      const [crop] = await faceapi.extractFaceTensors(img, [r.detection]);
      const cropIn = (await faceapi.toNetInput(crop)).toBatchTensor(112, true);
      const aligned = r.landmarks.align(null, { useDlibAlignment: true });
      const [chip] = await faceapi.extractFaceTensors(img, [aligned]);
      const chipIn = (await faceapi.toNetInput(chip)).toBatchTensor(150, true);
      p.faces.push({
        score: r.detection.score,
        box: [r.detection.box.x, r.detection.box.y, r.detection.box.width, r.detection.box.height],
        landmarks: r.landmarks.positions.map((pt) => [pt.x, pt.y]),
        aligned: [aligned.x, aligned.y, aligned.width, aligned.height],
        descriptor: Array.from(r.descriptor),
        crop_input: await writeF32(`js_pipe_crop_${i}.f32`, cropIn),
        chip_input: await writeF32(`js_pipe_chip_${i}.f32`, chipIn),
      });
    }
    const tiny = await faceapi.detectAllFaces(img, new faceapi.TinyFaceDetectorOptions());
    p.tiny = tiny.map((d) => ({ score: d.score, box: [d.box.x, d.box.y, d.box.width, d.box.height] }));
    result.pipeline = p;
  }
  fs.writeFileSync(path.join(work, 'js_result.json'), JSON.stringify(result, null, 1));
  console.log(`face-api ${faceapi.version}, tfjs ${tf.version.tfjs} (${tf.getBackend()}): done`);
})().catch((e) => { console.error(e); process.exit(1); });
