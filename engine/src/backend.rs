//! Compute backend selection: Burn's wgpu backend (Vulkan/Metal/DX12 GPUs, or Mesa's
//! software Vulkan) or the `flex` CPU backend, chosen once at start-up.

use std::fmt;
use std::str::FromStr;

use burn::tensor::{Device, DeviceKind};

use crate::error::EngineError;

/// What the user asked for (`--backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// A GPU adapter when one exists, else the CPU backend.
    #[default]
    Auto,
    /// Burn's wgpu backend on the default adapter (may be a software adapter).
    Wgpu,
    /// Burn's `flex` CPU backend.
    Cpu,
}

impl FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "wgpu" | "gpu" => Ok(Self::Wgpu),
            "cpu" | "flex" => Ok(Self::Cpu),
            other => Err(format!("unknown backend {other:?} (auto, wgpu or cpu)")),
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Wgpu => "wgpu",
            Self::Cpu => "cpu",
        })
    }
}

/// The backend actually in use.
#[derive(Debug, Clone)]
pub struct ResolvedBackend {
    pub device: Device,
    /// `"wgpu"` or `"cpu"`.
    pub name: &'static str,
    /// Adapter description, for logs (`"flex"` for the CPU backend).
    pub adapter: String,
}

/// Resolves a choice to a device. `Auto` probes the wgpu adapters and takes the first
/// hardware GPU (discrete, integrated or virtual); a software adapter (lavapipe) does not
/// count, as the CPU backend is much faster than emulated Vulkan.
pub fn resolve(choice: BackendChoice) -> Result<ResolvedBackend, EngineError> {
    let cpu = || ResolvedBackend {
        device: Device::flex(),
        name: "cpu",
        adapter: "flex".into(),
    };
    match choice {
        BackendChoice::Cpu => Ok(cpu()),
        BackendChoice::Wgpu => {
            let adapter = gpu_adapters()
                .into_iter()
                .next()
                .map(|(_, info)| info)
                .unwrap_or_else(|| "default wgpu adapter".into());
            Ok(ResolvedBackend {
                device: Device::wgpu(DeviceKind::DefaultDevice),
                name: "wgpu",
                adapter,
            })
        }
        BackendChoice::Auto => Ok(
            match gpu_adapters().into_iter().find(|(kind, _)| kind.is_some()) {
                Some((Some(kind), adapter)) => ResolvedBackend {
                    device: Device::wgpu(kind),
                    name: "wgpu",
                    adapter,
                },
                _ => cpu(),
            },
        ),
    }
}

/// Every wgpu adapter: its device kind when it is a hardware GPU, and a description.
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
