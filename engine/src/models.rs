//! The four networks, on the chosen backend (`crate::net::Network`). On onnxruntime each
//! `<name>.onnx` in the models directory is opened as it is. On Burn the network code is
//! generated from the ONNX files at build time (`build.rs`) and the weights are read at run
//! time: each `<name>.onnx` is converted once into Burn's `.bpk` weight format, cached under
//! the user's cache directory keyed by the ONNX file's sha256, and loaded from there.

use std::fs;
use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device, FloatDType};
use burn_store::{BurnpackStore, FloatCastAdapter, ModuleSnapshot};
use sha2::{Digest, Sha256};

use crate::backend::{BackendKind, ResolvedBackend};
use crate::error::EngineError;
use crate::net::{BurnForward, BurnNet, NetInput, Network};
use crate::onnxruntime::OrtNet;

#[allow(clippy::all, unused, non_snake_case, missing_docs)]
mod generated {
    pub mod ssd_mobilenetv1 {
        include!(concat!(env!("OUT_DIR"), "/model/ssd_mobilenetv1.rs"));
    }
    pub mod tiny_face_detector {
        include!(concat!(env!("OUT_DIR"), "/model/tiny_face_detector.rs"));
    }
    pub mod face_landmark_68 {
        include!(concat!(env!("OUT_DIR"), "/model/face_landmark_68.rs"));
    }
    pub mod face_recognition {
        include!(concat!(env!("OUT_DIR"), "/model/face_recognition.rs"));
    }
}

/// Network input sides, in pixels.
pub const SSD_SIZE: u32 = 512;
/// The Tiny detector's side in face-api (it takes any multiple of 32; see `engine::tiny_side`).
pub const TINY_SIZE: u32 = 416;
pub const LANDMARK_SIZE: u32 = 112;
pub const RECOGNITION_SIZE: u32 = 150;

/// Which weights the recognition network runs with: the same dlib ResNet architecture,
/// either face-api's uint8-quantised port (`face_recognition.onnx`) or dlib's own float
/// model (`face_recognition_dlib.onnx`). Their descriptors differ by about 0.04, so a
/// gallery only matches the model that enrolled it (see `Models::recognition_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Recognizer {
    #[default]
    FaceApi,
    Dlib,
}

impl Recognizer {
    /// The ONNX file stem in the models directory.
    pub fn file_stem(self) -> &'static str {
        match self {
            Recognizer::FaceApi => "face_recognition",
            Recognizer::Dlib => "face_recognition_dlib",
        }
    }
}

impl std::str::FromStr for Recognizer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "faceapi" | "face-api" => Ok(Self::FaceApi),
            "dlib" => Ok(Self::Dlib),
            other => Err(format!("unknown recognizer {other:?} (faceapi or dlib)")),
        }
    }
}

impl std::fmt::Display for Recognizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Recognizer::FaceApi => "faceapi",
            Recognizer::Dlib => "dlib",
        })
    }
}

/// Float precision of the recognition network (the detectors and the landmark net always
/// run in f32: their box and point regressions are the sensitive part).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    F32,
    /// Weights and activations in half precision: half the memory traffic, and tensor
    /// cores where the GPU has them. Descriptors move by about 1e-3 (see
    /// `models/face_recognition.md`).
    F16,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" => Ok(Self::F32),
            "f16" | "fp16" => Ok(Self::F16),
            other => Err(format!("unknown precision {other:?} (f32 or f16)")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        })
    }
}

/// The detectors' and the landmark net's files in a models folder (`<stem>.onnx`; the
/// recognition file is the `Recognizer`'s).
const SSD_FILE: &str = "ssd_mobilenetv1";
const TINY_FILE: &str = "tiny_face_detector";
const LANDMARKS_FILE: &str = "face_landmark_68";

/// Loads one ONNX file (path, sha256) into a Burn network.
type LoadBurn<'a> = dyn Fn(&Path, &str) -> Result<Box<dyn Network>, EngineError> + 'a;

/// A loaded network together with the sha256 of the ONNX file it came from.
struct Loaded {
    net: Box<dyn Network>,
    sha256: String,
}

impl Loaded {
    fn run(&self, input: NetInput, outputs: usize) -> Result<Vec<Vec<f32>>, EngineError> {
        let out = self.net.run(input)?;
        if out.len() != outputs {
            return Err(EngineError::Inference(format!(
                "the network gave {} outputs, expected {outputs}",
                out.len()
            )));
        }
        Ok(out)
    }
}

/// All networks on one backend.
pub struct Models {
    backend: ResolvedBackend,
    ssd: Loaded,
    tiny: Loaded,
    landmarks: Loaded,
    recognition: Loaded,
    precision: Precision,
}

impl Models {
    /// Loads every model from `dir` onto the backend, with face-api's recognition weights.
    pub fn load(dir: &Path, backend: ResolvedBackend) -> Result<Self, EngineError> {
        Self::load_with(dir, backend, Recognizer::FaceApi)
    }

    /// Loads every model from `dir`, with the chosen recognition weights.
    pub fn load_with(
        dir: &Path,
        backend: ResolvedBackend,
        recognizer: Recognizer,
    ) -> Result<Self, EngineError> {
        Self::load_with_precision(dir, backend, recognizer, Precision::F32)
    }

    /// Loads every model from `dir`, with the chosen recognition weights run at
    /// `precision`. F16 fails here, not at the first batch, where the backend lacks it.
    pub fn load_with_precision(
        dir: &Path,
        backend: ResolvedBackend,
        recognizer: Recognizer,
        precision: Precision,
    ) -> Result<Self, EngineError> {
        let device = backend.device.clone();
        let cast = match precision {
            Precision::F32 => None,
            Precision::F16 if backend.kind == BackendKind::Ort => {
                return Err(EngineError::Inference(
                    "f16 recognition runs on the Burn backends (wgpu, cpu); onnxruntime runs it in f32".into(),
                ));
            }
            Precision::F16 if device.supports_dtype(DType::F16) => Some(DType::F16),
            Precision::F16 => {
                return Err(EngineError::Inference(format!(
                    "the {} device has no f16 support",
                    backend.name
                )));
            }
        };
        if backend.kind == BackendKind::Ort {
            // Four sessions built at once (graph optimisation is most of a CLI's start-up).
            let lanes = backend.lanes;
            let names = [SSD_FILE, TINY_FILE, LANDMARKS_FILE, recognizer.file_stem()];
            let [ssd, tiny, landmarks, recognition] = std::thread::scope(|s| {
                names
                    .map(|name| {
                        s.spawn(move || {
                            let (onnx, bytes, sha256) = read_model(dir, name)?;
                            let net: Box<dyn Network> =
                                Box::new(OrtNet::load(&onnx, &bytes, lanes)?);
                            Ok::<_, EngineError>(Loaded { net, sha256 })
                        })
                    })
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(EngineError::Inference("loading a network panicked".into()))
                        })
                    })
            });
            return Ok(Self {
                ssd: ssd?,
                tiny: tiny?,
                landmarks: landmarks?,
                recognition: recognition?,
                backend,
                precision,
            });
        }
        let net = |name: &str, burn: &LoadBurn| {
            let (onnx, _, sha256) = read_model(dir, name)?;
            let net = burn(&onnx, &sha256)?;
            Ok::<_, EngineError>(Loaded { net, sha256 })
        };
        let ssd = net(SSD_FILE, &|onnx, sha| {
            load_burn(
                onnx,
                sha,
                &device,
                None,
                generated::ssd_mobilenetv1::Model::new,
                Box::new(|m, x| {
                    let (boxes, scores) = m.forward(x);
                    vec![boxes.into_data(), scores.into_data()]
                }),
            )
        })?;
        let tiny = net(TINY_FILE, &|onnx, sha| {
            load_burn(
                onnx,
                sha,
                &device,
                None,
                generated::tiny_face_detector::Model::new,
                Box::new(|m, x| vec![m.forward(x).into_data()]),
            )
        })?;
        let landmarks = net(LANDMARKS_FILE, &|onnx, sha| {
            load_burn(
                onnx,
                sha,
                &device,
                None,
                generated::face_landmark_68::Model::new,
                Box::new(|m, x| vec![m.forward(x).into_data()]),
            )
        })?;
        let recognition = net(recognizer.file_stem(), &|onnx, sha| {
            load_burn(
                onnx,
                sha,
                &device,
                cast,
                generated::face_recognition::Model::new,
                Box::new(move |m, x| match cast {
                    None => vec![m.forward(x).into_data()],
                    Some(_) => vec![
                        m.forward(x.cast(FloatDType::F16))
                            .cast(FloatDType::F32)
                            .into_data(),
                    ],
                }),
            )
        })?;
        Ok(Self {
            ssd,
            tiny,
            landmarks,
            recognition,
            backend,
            precision,
        })
    }

    pub fn backend(&self) -> &ResolvedBackend {
        &self.backend
    }

    /// The recognition network's precision.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Identifies the recognition model (sha256 of its ONNX file): embeddings are only
    /// comparable between identical models.
    pub fn recognition_id(&self) -> &str {
        &self.recognition.sha256
    }

    /// Runs a batch of black `side` x `side` images of each network's input through it
    /// once, on every session (`Network::warm`): SSD at `ssd` images (none: not run),
    /// Tiny at `tiny` images of `tiny_side` (none: not run), landmarks and recognition at
    /// `faces`.
    pub fn warm(
        &self,
        ssd: usize,
        (tiny, tiny_side): (usize, u32),
        faces: usize,
    ) -> Result<(), EngineError> {
        let black = |n: usize, side: u32| {
            NetInput::host(vec![0.0; n * 3 * (side * side) as usize], n, side, side)
        };
        if ssd > 0 {
            self.ssd.net.warm(black(ssd, SSD_SIZE))?;
        }
        if tiny > 0 {
            self.tiny.net.warm(black(tiny, tiny_side))?;
        }
        self.landmarks
            .net
            .warm(black(faces.max(1), LANDMARK_SIZE))?;
        self.recognition
            .net
            .warm(black(faces.max(1), RECOGNITION_SIZE))
    }

    /// A `[n, 3, side, side]` input batch from planar host data.
    pub fn input(&self, data: Vec<f32>, n: usize, side: u32) -> NetInput {
        NetInput::host(data, n, side, side)
    }

    /// SSD MobileNetV1 on `n` letterboxed 512x512 planar images: per image, 5118 boxes
    /// `[ymin, xmin, ymax, xmax]` (0..1) and 5118 face scores.
    pub fn ssd(&self, data: Vec<f32>, n: usize) -> Result<(Vec<f32>, Vec<f32>), EngineError> {
        self.ssd_input(self.input(data, n, SSD_SIZE))
    }

    /// As `ssd`, on a prepared input batch.
    pub fn ssd_input(&self, input: NetInput) -> Result<(Vec<f32>, Vec<f32>), EngineError> {
        let mut out = self.ssd.run(input, 2)?;
        let scores = out.pop().unwrap_or_default();
        let boxes = out.pop().unwrap_or_default();
        Ok((boxes, scores))
    }

    /// Tiny Face Detector on `n` letterboxed 416x416 planar images: raw `[25, 13, 13]`.
    pub fn tiny(&self, data: Vec<f32>, n: usize) -> Result<Vec<f32>, EngineError> {
        self.tiny_input(self.input(data, n, TINY_SIZE))
    }

    /// As `tiny`, on a prepared input batch of any square side that is a multiple of 32:
    /// raw `[25, side / 32, side / 32]` per image.
    pub fn tiny_input(&self, input: NetInput) -> Result<Vec<f32>, EngineError> {
        Ok(self.tiny.run(input, 1)?.remove(0))
    }

    /// 68-point landmarks on `n` 112x112 planar face crops: 136 values per face
    /// (x0, y0, x1, y1, ...), relative to the crop (0..1).
    pub fn landmarks(&self, data: Vec<f32>, n: usize) -> Result<Vec<f32>, EngineError> {
        self.landmarks_input(self.input(data, n, LANDMARK_SIZE))
    }

    /// As `landmarks`, on a prepared input batch.
    pub fn landmarks_input(&self, input: NetInput) -> Result<Vec<f32>, EngineError> {
        Ok(self.landmarks.run(input, 1)?.remove(0))
    }

    /// 128-d descriptors of `n` aligned 150x150 planar face chips.
    pub fn embed(&self, data: Vec<f32>, n: usize) -> Result<Vec<f32>, EngineError> {
        self.embed_input(self.input(data, n, RECOGNITION_SIZE))
    }

    /// As `embed`, on a prepared input batch.
    pub fn embed_input(&self, input: NetInput) -> Result<Vec<f32>, EngineError> {
        Ok(self.recognition.run(input, 1)?.remove(0))
    }
}

/// The id of the recognition model `recognizer` in `dir` without loading it (an edge that
/// runs no network still creates galleries and face stores the workers accept): the
/// sha256 of its ONNX file, as `Models::recognition_id` gives it once loaded.
pub fn recognition_model_id(dir: &Path, recognizer: Recognizer) -> Result<String, EngineError> {
    Ok(read_model(dir, recognizer.file_stem())?.2)
}

/// `<dir>/<name>.onnx`: its path, bytes and sha256.
fn read_model(dir: &Path, name: &str) -> Result<(PathBuf, Vec<u8>, String), EngineError> {
    let onnx = dir.join(format!("{name}.onnx"));
    let bytes = fs::read(&onnx).map_err(|e| EngineError::Model {
        path: onnx.display().to_string(),
        message: e.to_string(),
    })?;
    let sha256 = hex(&Sha256::digest(&bytes));
    Ok((onnx, bytes, sha256))
}

/// Loads one network into Burn: converts the ONNX file to burnpack (cached by content
/// hash), then loads it into the compiled network (files with the same graph share one
/// network).
fn load_burn<M: ModuleSnapshot + Send + Sync + 'static>(
    onnx: &Path,
    sha256: &str,
    device: &Device,
    cast: Option<DType>,
    new: impl FnOnce(&Device) -> M,
    forward: BurnForward<M>,
) -> Result<Box<dyn Network>, EngineError> {
    let name = onnx
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("model")
        .to_string();
    let model_err = |message: String| EngineError::Model {
        path: onnx.display().to_string(),
        message,
    };
    let bpk = burnpack_for(onnx, &name, sha256).map_err(|e| model_err(e.to_string()))?;
    let mut model = new(device);
    let mut store = BurnpackStore::from_file(&bpk);
    if let Some(dtype) = cast {
        store = store.with_from_adapter(FloatCastAdapter::to(dtype));
    }
    model.load_from(&mut store).map_err(|e| {
        model_err(format!(
            "weights do not fit the compiled {name} network: {e}"
        ))
    })?;
    Ok(Box::new(BurnNet::new(model, device.clone(), forward)))
}

/// Where converted weights are cached: `$FACEREC_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/facerec`, else `~/.cache/facerec`, else the temp directory.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FACEREC_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("facerec");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".cache/facerec");
    }
    std::env::temp_dir().join("facerec-cache")
}

/// Why an ONNX file's weights could not be converted to Burn's format.
#[derive(Debug, thiserror::Error)]
enum ConvertError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("conversion produced no weights")]
    NoWeights,
    #[error("burn-onnx could not convert this file (see the log above)")]
    Converter,
}

/// The `.bpk` weights for an ONNX file, converting it (once per content hash) with
/// burn-onnx — the same converter that generated the network code at build time.
fn burnpack_for(onnx: &Path, name: &str, sha256: &str) -> Result<PathBuf, ConvertError> {
    let dir = cache_dir().join("models");
    let target = dir.join(format!("{name}-{}.bpk", &sha256[..16]));
    if target.exists() {
        return Ok(target);
    }
    // Unique per conversion: several threads or processes may convert at once; the
    // last rename wins and every result is identical.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let work = dir.join(format!(".convert-{name}-{}-{seq}", std::process::id()));
    fs::create_dir_all(&work).map_err(|source| ConvertError::Io {
        what: "creating",
        path: work.clone(),
        source,
    })?;
    let onnx_owned = onnx.to_path_buf();
    let work_str = work.to_string_lossy().into_owned();
    // ModelGen reports failures by panicking; contain that to this model.
    let converted = std::panic::catch_unwind(move || {
        burn_onnx::ModelGen::new()
            .input(&onnx_owned.to_string_lossy())
            .out_dir(&work_str)
            .load_strategy(burn_onnx::LoadStrategy::None)
            .run_from_cli();
    });
    let produced = work.join(format!("{name}.bpk"));
    let result = match converted {
        Ok(()) if produced.exists() => fs::rename(&produced, &target)
            .map(|_| target.clone())
            .map_err(|source| ConvertError::Io {
                what: "caching weights in",
                path: target.clone(),
                source,
            }),
        Ok(()) => Err(ConvertError::NoWeights),
        Err(_) => Err(ConvertError::Converter),
    };
    let _ = fs::remove_dir_all(&work);
    result
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
