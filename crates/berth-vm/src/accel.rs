//! Which accelerator runs guests: KVM where `/dev/kvm` can run a stock kernel, TCG (QEMU's
//! emulator) otherwise.
//!
//! The rule, in order:
//! 1. `/sys/module/kvm_pvm` exists: TCG. `/dev/kvm` is then PVM, a paravirtual KVM without
//!    VT-x/AMD-V behind it that runs only guest kernels built for PVM; a stock kernel under
//!    it runs its kernel-mode code in KVM's instruction emulator, takes minutes to print its
//!    first line and dies on an instruction the emulator does not handle.
//! 2. Neither `kvm_intel` nor `kvm_amd` is loaded: TCG (no hardware virtualization).
//! 3. `/dev/kvm` cannot be opened read-write: TCG, with the error.
//! 4. Otherwise KVM.
//!
//! A probe boots nothing: it reads sysfs and opens a device, so `berthctl info` and berthd's
//! Status can call it cheaply and show the reason.

use std::fmt;
use std::fs::OpenOptions;
use std::path::Path;

/// An accelerator a backend can run a guest with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization through `/dev/kvm`.
    Kvm,
    /// QEMU's Tiny Code Generator: a CPU emulator, slow but runs anywhere.
    Tcg,
}

impl Accel {
    /// The name QEMU's `-accel` takes, and `berthctl info` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A probe's choice and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelProbe {
    pub accel: Accel,
    /// One line for `berthctl info` and logs.
    pub reason: String,
}

/// Probes this host (`/sys/module`, `/dev/kvm`).
pub fn probe() -> AccelProbe {
    probe_at(Path::new("/sys/module"), Path::new("/dev/kvm"))
}

/// Probes with the module directory and KVM device at the given paths.
pub fn probe_at(sys_module: &Path, dev_kvm: &Path) -> AccelProbe {
    let tcg = |reason: String| AccelProbe {
        accel: Accel::Tcg,
        reason,
    };
    if sys_module.join("kvm_pvm").exists() {
        return tcg(format!(
            "{} is PVM (kvm_pvm is loaded): it runs only guest kernels built for PVM",
            dev_kvm.display()
        ));
    }
    let Some(vendor) = ["kvm_intel", "kvm_amd"]
        .into_iter()
        .find(|m| sys_module.join(m).exists())
    else {
        return tcg("no hardware KVM module (kvm_intel, kvm_amd) is loaded".into());
    };
    match OpenOptions::new().read(true).write(true).open(dev_kvm) {
        Ok(_) => AccelProbe {
            accel: Accel::Kvm,
            reason: format!("{} is backed by {vendor}", dev_kvm.display()),
        },
        Err(e) => tcg(format!("cannot open {}: {e}", dev_kvm.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Host {
        dir: tempfile::TempDir,
    }

    impl Host {
        fn new(modules: &[&str], kvm_device: bool) -> Self {
            let dir = tempfile::tempdir().unwrap();
            for m in modules {
                std::fs::create_dir_all(dir.path().join("module").join(m)).unwrap();
            }
            std::fs::create_dir_all(dir.path().join("module")).unwrap();
            if kvm_device {
                std::fs::write(dir.path().join("kvm"), b"").unwrap();
            }
            Host { dir }
        }

        fn probe(&self) -> AccelProbe {
            probe_at(
                &self.dir.path().join("module"),
                &self.dir.path().join("kvm"),
            )
        }
    }

    #[test]
    fn pvm_is_not_used_for_stock_guests() {
        let p = Host::new(&["kvm", "kvm_pvm"], true).probe();
        assert_eq!(p.accel, Accel::Tcg);
        assert!(p.reason.contains("PVM"), "{}", p.reason);
    }

    #[test]
    fn pvm_wins_over_a_vendor_module() {
        let p = Host::new(&["kvm", "kvm_intel", "kvm_pvm"], true).probe();
        assert_eq!(p.accel, Accel::Tcg);
    }

    #[test]
    fn hardware_kvm_is_used() {
        let p = Host::new(&["kvm", "kvm_amd"], true).probe();
        assert_eq!(p.accel, Accel::Kvm);
        assert!(p.reason.contains("kvm_amd"), "{}", p.reason);
    }

    #[test]
    fn no_vendor_module_means_tcg() {
        let p = Host::new(&["kvm"], true).probe();
        assert_eq!(p.accel, Accel::Tcg);
    }

    #[test]
    fn an_unopenable_device_means_tcg_with_the_error() {
        let p = Host::new(&["kvm", "kvm_intel"], false).probe();
        assert_eq!(p.accel, Accel::Tcg);
        assert!(p.reason.contains("cannot open"), "{}", p.reason);
    }

    #[test]
    fn this_host_chooses_by_itself() {
        // On the CI machine /dev/kvm is PVM: the probe must pick TCG with no help.
        let p = probe();
        if Path::new("/sys/module/kvm_pvm").exists() {
            assert_eq!(p.accel, Accel::Tcg, "{}", p.reason);
        }
        assert!(!p.reason.is_empty());
    }
}
