//! `--device auto|cpu|cuda|cuda:N`: parsing the flag and checking it against the CUDA devices
//! libtorch actually sees, so a missing GPU is one clear error instead of a C++ abort later.

use crate::cuda_library::{self, CudaLibrary};
use anyhow::{Result, bail};
use std::fmt;
use std::str::FromStr;
use tch::{Cuda, Device};

/// What the user asked for; resolved to a `tch::Device` by [`DeviceSpec::resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// CUDA device 0 when libtorch sees one, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| format!("unknown device '{other}': expected auto, cpu, cuda or cuda:N")),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => write!(f, "auto"),
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// Resolves against the CUDA devices libtorch reports on this machine (loading libtorch's CUDA
    /// backend first if `main` has not). With `auto`, a CUDA driver whose backend failed to load is a
    /// warning on stderr and the CPU; with `cuda`, an error.
    pub fn resolve(self) -> Result<Device> {
        if let Some(warning) = self.check_backend(cuda_library::load())? {
            eprintln!("warning: {warning}");
        }
        self.resolve_with(cuda_device_count())
    }

    /// Whether this request can go on given what [`cuda_library::load`] found: an error for `cuda`
    /// when a driver exists but its libtorch backend did not load, a warning to print for `auto`.
    pub fn check_backend(self, backend: &CudaLibrary) -> Result<Option<String>> {
        match (self, backend) {
            (DeviceSpec::Cuda(_), CudaLibrary::Failed(why)) => bail!("--device {self}: {why}"),
            (DeviceSpec::Auto, CudaLibrary::Failed(why)) => Ok(Some(format!("{why}; --device auto uses the CPU"))),
            _ => Ok(None),
        }
    }

    /// Resolution given the number of visible CUDA devices (separate so it is testable without a GPU).
    pub fn resolve_with(self, cuda_devices: usize) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Auto if cuda_devices > 0 => Ok(Device::Cuda(0)),
            DeviceSpec::Auto => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) if n < cuda_devices => Ok(Device::Cuda(n)),
            DeviceSpec::Cuda(_) if cuda_devices == 0 => {
                bail!(
                    "--device {self}: CUDA is not available on this machine (libtorch sees no CUDA device); use --device cpu or auto"
                )
            }
            DeviceSpec::Cuda(n) => bail!(
                "--device cuda:{n}: this machine has {cuda_devices} CUDA device{} (cuda:0..cuda:{})",
                if cuda_devices == 1 { "" } else { "s" },
                cuda_devices - 1
            ),
        }
    }
}

/// How many CUDA devices libtorch sees, its CUDA backend loaded first when there is a driver (see
/// [`cuda_library`]): the one way to ask, for the binary and for tests alike.
pub fn cuda_device_count() -> usize {
    cuda_library::load();
    Cuda::device_count().max(0) as usize
}

/// `cpu` or `cuda:N`, as printed and stored in `config.json`.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(n) => format!("cuda:{n}"),
        Device::Cpu => "cpu".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_form() {
        assert_eq!("auto".parse(), Ok(DeviceSpec::Auto));
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceSpec::Cuda(3)));
        assert!("gpu".parse::<DeviceSpec>().unwrap_err().contains("unknown device 'gpu'"));
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
    }

    #[test]
    fn resolution_falls_back_or_explains() {
        assert_eq!(DeviceSpec::Auto.resolve_with(0).unwrap(), Device::Cpu);
        assert_eq!(DeviceSpec::Auto.resolve_with(2).unwrap(), Device::Cuda(0));
        assert_eq!(DeviceSpec::Cuda(1).resolve_with(2).unwrap(), Device::Cuda(1));
        let none = DeviceSpec::Cuda(0).resolve_with(0).unwrap_err().to_string();
        assert!(none.contains("CUDA is not available"), "{none}");
        let missing = DeviceSpec::Cuda(7).resolve_with(1).unwrap_err().to_string();
        assert!(missing.contains("has 1 CUDA device (cuda:0..cuda:0)"), "{missing}");
    }

    #[test]
    fn a_driver_without_its_backend_is_never_silent() {
        let failed = CudaLibrary::Failed("a CUDA driver is installed but libtorch_cuda.so: no such file".into());
        let error = DeviceSpec::Cuda(0).check_backend(&failed).unwrap_err().to_string();
        assert!(error.starts_with("--device cuda:0: a CUDA driver is installed"), "{error}");
        let warning = DeviceSpec::Auto.check_backend(&failed).unwrap().unwrap();
        assert!(warning.ends_with("no such file; --device auto uses the CPU"), "{warning}");
        assert_eq!(DeviceSpec::Cpu.check_backend(&failed).unwrap(), None);
        for fine in [CudaLibrary::NoDriver, CudaLibrary::Loaded("libtorch_cuda.so".into())] {
            assert_eq!(DeviceSpec::Cuda(0).check_backend(&fine).unwrap(), None);
            assert_eq!(DeviceSpec::Auto.check_backend(&fine).unwrap(), None);
        }
    }
}
