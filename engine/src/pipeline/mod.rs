//! The recognition pipeline: decode → detect → landmarks → align → embed, batched across
//! images so each network sees one large batch, with the CPU stages on rayon.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use image::RgbImage;
use rayon::prelude::*;

use crate::align::{self, Landmarks};
use crate::backend::{self, BackendChoice, BackendKind};
use crate::decode::{self, DecodeLimits};
use crate::detect::FaceBox;
use crate::error::{EngineError, ErrorKind, ImageError};
use crate::gpu::{DeviceImages, Normalize, WarpJob};
use crate::matcher::{Matcher, SearchChoice};
use crate::models::{self, Models, Precision, Recognizer};
use crate::net::NetInput;
use crate::prep;

mod detection;
mod passes;

use passes::looks_like_face_crop;
pub use passes::{Detector, TINY_MAX_SIDE, tiny_side};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub models_dir: PathBuf,
    pub backend: BackendChoice,
    pub detector: Detector,
    /// Recognition weights (face-api's quantised port or dlib's float model).
    pub recognizer: Recognizer,
    /// The recognition network's float precision.
    pub precision: Precision,
    /// Minimum detector confidence.
    pub min_score: f32,
    /// Largest input side of the Tiny detector, in pixels (a multiple of 32).
    pub tiny_max: u32,
    /// Largest batch handed to a network in one forward pass.
    pub max_batch: usize,
    /// Threads that run batches on this engine at once (at least one; `backend::resolve_for`):
    /// on onnxruntime, a session per lane and the cores shared out between them.
    pub lanes: usize,
    pub limits: DecodeLimits,
    /// On the wgpu backend, pre-process on the device (`shaders/warp.wgsl`, the default):
    /// decoded images go up once per batch and the networks' inputs never leave the
    /// device. Both paths resample as `prep::Sampler` defines it, so the networks see the
    /// same input either way. Off, or on the CPU backend, pre-processing runs on rayon.
    pub device_prep: bool,
    /// Where gallery search runs (`Engine::matcher`).
    pub gallery_search: SearchChoice,
}

impl EngineConfig {
    pub fn new(models_dir: impl Into<PathBuf>) -> Self {
        Self {
            models_dir: models_dir.into(),
            backend: BackendChoice::Auto,
            detector: Detector::Auto,
            recognizer: Recognizer::FaceApi,
            precision: Precision::F32,
            min_score: 0.5,
            tiny_max: TINY_MAX_SIDE,
            max_batch: 32,
            lanes: 1,
            limits: DecodeLimits::default(),
            device_prep: true,
            gallery_search: SearchChoice::Auto,
        }
    }
}

/// One detected face.
#[derive(Debug, Clone)]
pub struct Face {
    /// Box in pixels of the upright image.
    pub bbox: FaceBox,
    /// 68 landmarks in pixels of the upright image.
    pub landmarks: Landmarks,
    /// 128-d descriptor (not unit length; compare with euclidean distance).
    pub embedding: Vec<f32>,
    /// Pose and sharpness (`quality::measure`).
    pub quality: facerec_contract::report::FaceQuality,
    /// True when no face was detected and the image, looking like a single face crop,
    /// was used whole.
    pub whole_frame: bool,
}

/// Time spent per stage for one batch, for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimes {
    pub decode: Duration,
    pub detect: Duration,
    pub align: Duration,
    pub embed: Duration,
}

/// Faces of one image, largest first.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub width: u32,
    pub height: u32,
    pub faces: Vec<Face>,
}

/// The loaded pipeline. Inference is serialised internally by the backend; share one
/// engine per device.
pub struct Engine {
    config: EngineConfig,
    models: Models,
    /// Whether pre-processing runs on the wgpu device.
    device_prep: bool,
    matcher: Matcher,
}

/// Most image bytes uploaded in one group: what every wgpu adapter allows in one storage
/// binding (WebGPU's default `max_storage_buffer_binding_size`).
const DEVICE_UPLOAD_BYTES: usize = 128 << 20;

impl Engine {
    pub fn new(config: EngineConfig) -> Result<Self, EngineError> {
        let backend = backend::resolve_for(config.backend, config.lanes)?;
        tracing::info!(backend = backend.name, adapter = %backend.adapter, reason = %backend.reason, "compute backend");
        let device_prep = config.device_prep && backend.kind == BackendKind::Wgpu;
        tracing::info!(
            on = if device_prep { "device" } else { "cpu" },
            "pre-processing"
        );
        let matcher = Matcher::resolve(config.gallery_search, &backend).map_err(|e| {
            EngineError::Device(format!("gallery search {}: {e}", config.gallery_search))
        })?;
        let models = Models::load_with_precision(
            &config.models_dir,
            backend,
            config.recognizer,
            config.precision,
        )?;
        Ok(Self {
            config,
            models,
            device_prep,
            matcher,
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The rayon pool one of `lanes` threads running this engine at once should run its
    /// batches in, built on the calling thread (which becomes the pool's first worker:
    /// keep the pool for the thread's life and run the batches on this thread), or `None`
    /// where the lanes share the process's pool.
    ///
    /// On the CPU backends each lane of several gets its share of the cores: cores / lanes,
    /// rounded down, at least one (the networks' share, `onnxruntime::threads`, rounds up;
    /// the two agree whenever the lanes divide the cores). On 2 cores and 2 lanes, one
    /// thread, so a batch's decoding and pre-processing run on the lane's own thread. In a
    /// shared pool each of a batch's parallel steps (decode, each network's input) hands its
    /// work to the pool's threads and waits for them to wake and finish, which leaves cores
    /// idle under load (measured in `benches/RESULTS.md`, "a rayon pool per engine lane").
    /// A GPU backend keeps the shared pool: its lanes wait on the device, not on the cores.
    pub fn lane_pool(&self, lanes: usize) -> Option<rayon::ThreadPool> {
        if lanes < 2 || self.models.backend().kind == BackendKind::Wgpu {
            return None;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let lane = std::thread::current().name().unwrap_or("lane").to_string();
        rayon::ThreadPoolBuilder::new()
            .num_threads((cores / lanes).max(1))
            .use_current_thread()
            .thread_name(move |i| format!("{lane}-cpu{i}"))
            .build()
            .inspect_err(|e| tracing::warn!(error = %e, "an engine lane shares the rayon pool"))
            .ok()
    }

    pub fn models(&self) -> &Models {
        &self.models
    }

    /// Whether pre-processing runs on the wgpu device (`EngineConfig::device_prep` on the
    /// wgpu backend).
    pub fn prep_on_device(&self) -> bool {
        self.device_prep
    }

    /// Gallery search for this engine's faces (CPU or GPU, per `gallery_search`).
    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    /// Sets the largest batch per forward pass (at least 1), e.g. to the choice of
    /// `tune::autotune` once the models are loaded.
    pub fn set_max_batch(&mut self, max_batch: usize) {
        self.config.max_batch = max_batch.max(1);
    }

    /// Analyses a batch of encoded images. Each result is independent: a bad image gets
    /// its error and the others are still processed.
    pub fn analyze(&self, inputs: &[&[u8]]) -> (Vec<Result<Analysis, ImageError>>, StageTimes) {
        let mut times = StageTimes::default();
        let t = Instant::now();
        let decoded: Vec<Result<RgbImage, ImageError>> = inputs
            .par_iter()
            .map(|bytes| decode::decode(bytes, &self.config.limits))
            .collect();
        times.decode = t.elapsed();
        let images: Vec<&RgbImage> = decoded.iter().filter_map(|r| r.as_ref().ok()).collect();
        let analyses = match self.analyze_decoded(&images, &mut times) {
            Ok(a) => a,
            Err(e) => {
                let err = ImageError::new(ErrorKind::Inference, e.to_string());
                return (
                    decoded
                        .into_iter()
                        .map(|r| r.and(Err(err.clone())))
                        .collect(),
                    times,
                );
            }
        };
        let mut analyses = analyses.into_iter();
        let results = decoded
            .into_iter()
            .map(|r| r.map(|_| analyses.next().expect("one analysis per decoded image")))
            .collect();
        (results, times)
    }

    /// Runs detection, landmarks, alignment and embedding on decoded images.
    pub fn analyze_decoded(
        &self,
        images: &[&RgbImage],
        times: &mut StageTimes,
    ) -> Result<Vec<Analysis>, EngineError> {
        if !self.device_prep {
            return self.analyze_group(images, None, times);
        }
        // Upload as few groups as fit one storage binding; an image too large for one
        // binding on its own is pre-processed on the CPU.
        let mut out = Vec::with_capacity(images.len());
        let mut start = 0;
        while start < images.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < images.len() {
                let next = images[end].as_raw().len();
                if end > start && bytes + next > DEVICE_UPLOAD_BYTES {
                    break;
                }
                bytes += next;
                end += 1;
            }
            let group = &images[start..end];
            if bytes > DEVICE_UPLOAD_BYTES {
                out.extend(self.analyze_group(group, None, times)?);
            } else {
                let t = Instant::now();
                let on_device = DeviceImages::upload(&self.models.backend().device, group)
                    .map_err(|e| EngineError::Inference(format!("uploading images: {e}")))?;
                times.decode += t.elapsed();
                out.extend(self.analyze_group(group, Some(&on_device), times)?);
            }
            start = end;
        }
        Ok(out)
    }

    /// The pipeline on one group of images, pre-processed from `on_device` (the same
    /// images, already uploaded) or on the CPU.
    fn analyze_group(
        &self,
        images: &[&RgbImage],
        on_device: Option<&DeviceImages>,
        times: &mut StageTimes,
    ) -> Result<Vec<Analysis>, EngineError> {
        let t = Instant::now();
        let boxes = self.detect(images, on_device)?;
        times.detect += t.elapsed();

        // Every face of every image, in one list, so the next networks see full batches.
        let mut owners: Vec<(usize, FaceBox, bool)> = Vec::new();
        for (i, (img, found)) in images.iter().zip(&boxes).enumerate() {
            if found.is_empty() {
                // No detector found a face (after the crop retry): a face-shaped image is
                // taken as the face, its frame as the box (the landmark crop pads it to a
                // centred square). Measured on 342 tight crops of the evaluation faces
                // (the detector's box filling 80-110% of a 100-150 px frame), against each
                // face's descriptor in its source photo: the frame as the box gives a
                // median distance of 0.141 (the detector's own box: 0.143); a box 1.1-1.4x
                // the frame (padding) 0.147-0.211, 0.8x 0.148. So the frame is used as is.
                if looks_like_face_crop(img) {
                    let (w, h) = img.dimensions();
                    let whole = FaceBox {
                        x: 0.0,
                        y: 0.0,
                        w: w as f32,
                        h: h as f32,
                        score: 0.0,
                    };
                    owners.push((i, whole, true));
                }
            } else {
                owners.extend(found.iter().map(|b| (i, *b, false)));
            }
        }

        let t = Instant::now();
        let landmarks = self.landmarks(images, &owners, on_device)?;
        let jobs: Vec<WarpJob> = owners
            .iter()
            .zip(&landmarks)
            .map(|(&(i, _, _), lm)| WarpJob::warp(i, align::chip_to_image(lm)))
            .collect();
        let size = align::CHIP_SIZE;
        let chips = jobs
            .chunks(self.config.max_batch.max(1))
            .map(|chunk| {
                self.input(on_device, chunk, size, |j, out| {
                    prep::to_planar_into(
                        &prep::resample(images[j.source], &j.sampler, size, size),
                        out,
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        times.align += t.elapsed();

        let t = Instant::now();
        let mut embeddings = Vec::with_capacity(jobs.len());
        for input in chips {
            let flat = self.models.embed_input(input)?;
            embeddings.extend(flat.chunks_exact(128).map(<[f32]>::to_vec));
        }
        times.embed += t.elapsed();

        let mut out: Vec<Analysis> = images
            .iter()
            .map(|img| Analysis {
                width: img.width(),
                height: img.height(),
                faces: Vec::new(),
            })
            .collect();
        for (((i, bbox, whole_frame), landmarks), embedding) in
            owners.into_iter().zip(landmarks).zip(embeddings)
        {
            let quality = crate::quality::measure(images[i], &bbox, &landmarks);
            out[i].faces.push(Face {
                bbox,
                landmarks,
                embedding,
                quality,
                whole_frame,
            });
        }
        for a in &mut out {
            a.faces
                .sort_by(|x, y| y.bbox.area().total_cmp(&x.bbox.area()));
        }
        Ok(out)
    }

    /// 68 landmarks per face: the face box is padded to a centred square, resized to
    /// 112x112, and the network's relative output mapped back to image pixels.
    fn landmarks(
        &self,
        images: &[&RgbImage],
        faces: &[(usize, FaceBox, bool)],
        on_device: Option<&DeviceImages>,
    ) -> Result<Vec<Landmarks>, EngineError> {
        let size = models::LANDMARK_SIZE;
        let squares: Vec<(f32, f32, f32)> = faces
            .iter()
            .map(|(_, b, _)| (b.x + b.w / 2.0, b.y + b.h / 2.0, b.w.max(b.h)))
            .collect();
        let mut out = Vec::with_capacity(faces.len());
        for (chunk, sq) in faces
            .chunks(self.config.max_batch.max(1))
            .zip(squares.chunks(self.config.max_batch.max(1)))
        {
            let jobs: Vec<WarpJob> = chunk
                .iter()
                .zip(sq)
                .map(|(&(i, _, _), &(cx, cy, side))| {
                    WarpJob::warp(i, prep::square_crop_map(cx, cy, side, size))
                })
                .collect();
            let input = self.input(on_device, &jobs, size, |j, out| {
                prep::to_planar_into(
                    &prep::resample(images[j.source], &j.sampler, size, size),
                    out,
                )
            })?;
            let raw = self.models.landmarks_input(input)?;
            for (k, &(cx, cy, side)) in sq.iter().enumerate() {
                let mut lm = [(0f32, 0f32); 68];
                for (p, point) in lm.iter_mut().enumerate() {
                    let (rx, ry) = (raw[k * 136 + 2 * p], raw[k * 136 + 2 * p + 1]);
                    *point = (cx - side / 2.0 + rx * side, cy - side / 2.0 + ry * side);
                }
                out.push(lm);
            }
        }
        Ok(out)
    }

    /// A network's `[jobs, 3, side, side]` input (`input_rect` with a square).
    fn input(
        &self,
        on_device: Option<&DeviceImages>,
        jobs: &[WarpJob],
        side: u32,
        on_cpu: impl Fn(&WarpJob, &mut [f32]) + Sync + Send,
    ) -> Result<NetInput, EngineError> {
        self.input_rect(on_device, jobs, side, side, on_cpu)
    }

    /// A network's `[jobs, 3, height, width]` input: warped on the device from `on_device`
    /// (raw 0..255 values; the graphs normalise inside), or built on the CPU by `on_cpu`,
    /// which fills one job's `3 * height * width` values of the batch in place, on rayon.
    fn input_rect(
        &self,
        on_device: Option<&DeviceImages>,
        jobs: &[WarpJob],
        width: u32,
        height: u32,
        on_cpu: impl Fn(&WarpJob, &mut [f32]) + Sync + Send,
    ) -> Result<NetInput, EngineError> {
        match on_device {
            Some(d) => d
                .warp(jobs, width, height, Normalize::RAW)
                .map(NetInput::Device)
                .map_err(|e| EngineError::Inference(format!("pre-processing on the device: {e}"))),
            None => {
                let per = 3 * (width * height) as usize;
                let mut data = vec![0f32; jobs.len() * per];
                data.par_chunks_mut(per)
                    .zip(jobs)
                    .for_each(|(out, j)| on_cpu(j, out));
                Ok(NetInput::host(data, jobs.len(), height, width))
            }
        }
    }

    /// On onnxruntime, runs each network this engine's detector uses once on every session
    /// at the largest batch it will get (black images; SSD at its 512x512 square, Tiny at a
    /// face crop's input), so the first requests after start-up do not pay for the
    /// sessions' memory arenas growing (hundreds of MB of page faults on two lanes) and
    /// first-call set-up. A server calls it before it takes work. The Burn backends build
    /// their kernels on first use and are not warmed here. Returns whether it ran.
    pub fn warm_up(&self) -> Result<bool, EngineError> {
        if self.models.backend().kind != BackendKind::Ort {
            return Ok(false);
        }
        let batch = self.config.max_batch.max(1);
        let uses_ssd = matches!(self.config.detector, Detector::Auto | Detector::Ssd);
        let uses_tiny = matches!(self.config.detector, Detector::Auto | Detector::Tiny);
        let ssd = if uses_ssd {
            batch.min(passes::Net::Ssd.max_cpu_batch())
        } else {
            0
        };
        let tiny = (if uses_tiny { batch } else { 0 }, passes::TINY_CROP_SIDE);
        self.models.warm(ssd, tiny, batch)?;
        Ok(true)
    }

    /// Embeds aligned 150x150 planar chips in batches of at most `max_batch`.
    pub fn embed_planar(&self, chips: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>, EngineError> {
        let mut out = Vec::with_capacity(chips.len());
        for chunk in chips.chunks(self.config.max_batch.max(1)) {
            let batch: Vec<f32> = chunk.iter().flatten().copied().collect();
            let flat = self.models.embed(batch, chunk.len())?;
            out.extend(flat.chunks_exact(128).map(<[f32]>::to_vec));
        }
        Ok(out)
    }
}
