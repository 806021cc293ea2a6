//! Compute backend selection, once at start-up: Burn's wgpu backend (Vulkan/Metal/DX12
//! GPUs, or Mesa's software Vulkan; in builds with the `gpu` feature), onnxruntime on the
//! CPU (when its library loads), or Burn's `flex` CPU backend (pure Rust, always there).

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;
#[cfg(feature = "gpu")]
use burn::tensor::DeviceKind;

use crate::error::EngineError;

/// What the user asked for (`--backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// A hardware GPU adapter when one exists, else onnxruntime when its library loads,
    /// else Burn's `flex`.
    #[default]
    Auto,
    /// Burn's wgpu backend on the default adapter (may be a software adapter).
    Wgpu,
    /// onnxruntime's CPU execution provider (`crate::onnxruntime`); an error when the
    /// library does not load.
    Ort,
    /// Burn's `flex` CPU backend.
    Cpu,
}

impl FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "wgpu" | "gpu" => Ok(Self::Wgpu),
            "ort" | "onnxruntime" => Ok(Self::Ort),
            "cpu" | "flex" => Ok(Self::Cpu),
            other => Err(format!(
                "unknown backend {other:?} (auto, wgpu, ort or cpu)"
            )),
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Wgpu => "wgpu",
            Self::Ort => "ort",
            Self::Cpu => "cpu",
        })
    }
}

/// Which implementation runs the networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Burn on a wgpu adapter.
    Wgpu,
    /// onnxruntime, CPU execution provider.
    Ort,
    /// Burn's `flex` CPU backend.
    Flex,
}

/// The backend actually in use.
#[derive(Debug, Clone)]
pub struct ResolvedBackend {
    pub kind: BackendKind,
    /// Burn's device (the wgpu adapter; `flex` for the CPU backends, where the warp kernel
    /// and gallery search do not run).
    pub device: Device,
    /// `"wgpu"`, `"ort"` or `"cpu"` (Burn flex), for logs and metrics.
    pub name: &'static str,
    /// Adapter or library description, for logs (`"flex"` for Burn's CPU backend).
    pub adapter: String,
    /// Why this backend was taken, for the start-up log line.
    pub reason: String,
    /// Threads that run networks on it at once (`resolve_for`).
    pub lanes: usize,
}

/// Resolves a choice to a backend. `Auto` probes the wgpu adapters and takes the first
/// hardware GPU (discrete, integrated or virtual); a software adapter (lavapipe) does not
/// count, as the CPU backends are much faster than emulated Vulkan. Without one it takes
/// onnxruntime when the library loads, else `flex`.
pub fn resolve(choice: BackendChoice) -> Result<ResolvedBackend, EngineError> {
    resolve_for(choice, 1)
}

/// `resolve` for `lanes` threads that will run networks at once (at least one): on
/// onnxruntime each network gets a session per lane and the thread pool the cores shared
/// out between the lanes (`onnxruntime::load_for`).
pub fn resolve_for(choice: BackendChoice, lanes: usize) -> Result<ResolvedBackend, EngineError> {
    let lanes = lanes.max(1);
    let cpu = |reason: String| ResolvedBackend {
        kind: BackendKind::Flex,
        device: Device::flex(),
        name: "cpu",
        adapter: "flex".into(),
        reason,
        lanes,
    };
    let ort = |reason: &str| {
        crate::onnxruntime::load_for(lanes).map(|rt| ResolvedBackend {
            kind: BackendKind::Ort,
            device: Device::flex(),
            name: "ort",
            adapter: format!(
                "onnxruntime {} ({}, {} threads)",
                rt.version,
                rt.library.display(),
                rt.threads
            ),
            reason: reason.into(),
            lanes,
        })
    };
    match choice {
        BackendChoice::Cpu => Ok(cpu("asked for (--backend cpu)".into())),
        BackendChoice::Ort => ort("asked for (--backend ort)").map_err(|e| {
            EngineError::Device(format!("onnxruntime did not load ({e}); {ORT_HINT}"))
        }),
        BackendChoice::Wgpu => wgpu_default(lanes),
        BackendChoice::Auto => Ok(match hardware_gpu(lanes) {
            Some(gpu) => gpu,
            None => match ort(&format!("auto: {NO_GPU}; onnxruntime loaded")) {
                Ok(b) => b,
                Err(e) => cpu(format!(
                    "auto: {NO_GPU}, and onnxruntime did not load ({e}); {ORT_HINT}"
                )),
            },
        }),
    }
}

/// How to get the fast CPU path, for log lines and errors.
pub const ORT_HINT: &str = "for the fast CPU path install onnxruntime (`python3 -m pip install onnxruntime`) or point FACEREC_ORT_LIB at libonnxruntime.so";

/// Burn's wgpu backend on the default adapter, as `--backend wgpu` asks.
#[cfg(feature = "gpu")]
fn wgpu_default(lanes: usize) -> Result<ResolvedBackend, EngineError> {
    let adapter = gpu_adapters()
        .into_iter()
        .next()
        .map(|(_, info)| info)
        .unwrap_or_else(|| "default wgpu adapter".into());
    Ok(ResolvedBackend {
        kind: BackendKind::Wgpu,
        device: Device::wgpu(DeviceKind::DefaultDevice),
        name: "wgpu",
        adapter,
        reason: "asked for (--backend wgpu)".into(),
        lanes,
    })
}

#[cfg(not(feature = "gpu"))]
fn wgpu_default(_lanes: usize) -> Result<ResolvedBackend, EngineError> {
    Err(EngineError::Device(format!(
        "--backend wgpu: {}",
        crate::gpu::GpuError::NotBuilt
    )))
}

/// Why `auto` found no GPU to take.
#[cfg(feature = "gpu")]
const NO_GPU: &str = "no hardware GPU";
#[cfg(not(feature = "gpu"))]
const NO_GPU: &str = "built without the gpu feature";

/// Burn's wgpu backend on the first hardware GPU adapter, if there is one.
#[cfg(feature = "gpu")]
fn hardware_gpu(lanes: usize) -> Option<ResolvedBackend> {
    let (kind, adapter) = gpu_adapters()
        .into_iter()
        .find_map(|(kind, info)| kind.map(|k| (k, info)))?;
    Some(ResolvedBackend {
        kind: BackendKind::Wgpu,
        device: Device::wgpu(kind),
        name: "wgpu",
        adapter,
        reason: "auto: a hardware GPU adapter".into(),
        lanes,
    })
}

#[cfg(not(feature = "gpu"))]
fn hardware_gpu(_lanes: usize) -> Option<ResolvedBackend> {
    None
}

/// Every wgpu adapter: its device kind when it is a hardware GPU, and a description.
#[cfg(feature = "gpu")]
fn gpu_adapters() -> Vec<(Option<DeviceKind>, String)> {
    use burn::tensor::wgpu::wgpu;
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapters = crate::gpu::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    let (mut discrete, mut integrated, mut virt) = (0, 0, 0);
    let mut out = Vec::new();
    for adapter in adapters {
        let info = adapter.get_info();
        let kind = match info.device_type {
            wgpu::DeviceType::DiscreteGpu => {
                discrete += 1;
                Some(DeviceKind::DiscreteGpu(discrete - 1))
            }
            wgpu::DeviceType::IntegratedGpu => {
                integrated += 1;
                Some(DeviceKind::IntegratedGpu(integrated - 1))
            }
            wgpu::DeviceType::VirtualGpu => {
                virt += 1;
                Some(DeviceKind::VirtualGpu(virt - 1))
            }
            _ => None,
        };
        out.push((
            kind,
            format!("{} ({:?}, {:?})", info.name, info.device_type, info.backend),
        ));
    }
    out
}

/// A build without the `gpu` feature (`.ci/run` runs these on that build too).
#[cfg(all(test, not(feature = "gpu")))]
mod without_gpu {
    use super::*;
    use crate::gpu::{Gpu, GpuError};

    #[test]
    fn wgpu_is_refused_with_how_to_build_it_and_auto_takes_a_cpu_backend() {
        let err = resolve(BackendChoice::Wgpu).expect_err("no wgpu in this build");
        assert!(err.to_string().contains("--features gpu"), "{err}");
        let auto = resolve(BackendChoice::Auto).expect("auto always resolves");
        assert_ne!(auto.kind, BackendKind::Wgpu);
        assert!(
            auto.reason.contains("built without the gpu feature"),
            "{}",
            auto.reason
        );
        assert!(matches!(Gpu::open(), Err(GpuError::NotBuilt)));
    }
}
