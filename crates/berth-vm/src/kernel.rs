//! The guest kernel cache that `scripts/vm-kernel.sh` writes: Debian's cloud kernel, the
//! modules the guest loads from its initramfs, and what they are.
//!
//! ```text
//! DIR/vmlinuz
//! DIR/VERSION                 kernel=, package=, package_version=, wanted=, modules=, builtin=
//! DIR/modules/modules.dep     the lines of the included modules
//! DIR/modules/kernel/...ko    the modules, at their paths under lib/modules/VERSION/
//! ```
//!
//! The cache is the host's own (root-owned, made from Debian's signed archive), but its
//! files are still read with bounds and parsed without panics.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

/// Where `scripts/vm-kernel.sh` puts the cache unless told otherwise.
pub const DEFAULT_DIR: &str = "/var/cache/berth/vm-kernel";

/// The environment variable that moves the cache, for the script and [`dir_from_env`].
pub const DIR_ENV: &str = "BERTH_VM_KERNEL_DIR";

const VERSION_MAX: u64 = 64 * 1024;
const MODULES_DEP_MAX: u64 = 4 * 1024 * 1024;

/// The cache directory: `$BERTH_VM_KERNEL_DIR`, else [`DEFAULT_DIR`].
pub fn dir_from_env() -> PathBuf {
    std::env::var_os(DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
}

/// A guest kernel from the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestKernel {
    dir: PathBuf,
    version: String,
    package: String,
    package_version: String,
    modules: Vec<String>,
}

impl GuestKernel {
    /// Reads the cache at `dir`; an error names the file at fault.
    pub fn open(dir: &Path) -> Result<Self, KernelError> {
        let version_path = dir.join("VERSION");
        let text = read_bounded(&version_path, VERSION_MAX)?;
        let mut fields: HashMap<&str, &str> = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line.split_once('=').ok_or_else(|| KernelError::Version {
                path: version_path.clone(),
                line: i + 1,
                reason: "not key=value".into(),
            })?;
            fields.insert(k, v);
        }
        let get = |key: &'static str| {
            fields
                .get(key)
                .map(|v| v.to_string())
                .ok_or_else(|| KernelError::MissingKey {
                    path: version_path.clone(),
                    key,
                })
        };
        let version = get("kernel")?;
        if !is_word(&version, |b| {
            b.is_ascii_alphanumeric() || b"._+-".contains(&b)
        }) {
            return Err(KernelError::Version {
                path: version_path.clone(),
                line: 0,
                reason: format!("kernel={version:?} is not a kernel release"),
            });
        }
        let modules: Vec<String> = get("modules")?
            .split_ascii_whitespace()
            .map(str::to_string)
            .collect();
        if let Some(bad) = modules.iter().find(|m| !is_module_name(m)) {
            return Err(KernelError::Version {
                path: version_path.clone(),
                line: 0,
                reason: format!("{bad:?} is not a module name"),
            });
        }
        let kernel = GuestKernel {
            dir: dir.to_path_buf(),
            version,
            package: get("package").unwrap_or_default(),
            package_version: get("package_version").unwrap_or_default(),
            modules,
        };
        let vmlinuz = kernel.vmlinuz();
        if !vmlinuz.is_file() {
            return Err(KernelError::Missing { path: vmlinuz });
        }
        Ok(kernel)
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The kernel release (`uname -r` in the guest).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The Debian package it came from, and its version.
    pub fn package(&self) -> (&str, &str) {
        (&self.package, &self.package_version)
    }

    /// The modules in the cache, in load order, as VERSION lists them.
    pub fn modules(&self) -> &[String] {
        &self.modules
    }

    /// The kernel image.
    pub fn vmlinuz(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }

    /// The modules tree (the guest's `/lib/modules/VERSION`).
    pub fn modules_dir(&self) -> PathBuf {
        self.dir.join("modules")
    }

    /// The cached modules' paths relative to [`GuestKernel::modules_dir`], each after the
    /// modules it depends on, from the cache's `modules.dep`.
    pub fn module_load_order(&self) -> Result<Vec<PathBuf>, KernelError> {
        let all: Vec<&str> = self.modules.iter().map(String::as_str).collect();
        self.module_load_order_of(&all)
    }

    /// Like [`GuestKernel::module_load_order`], for `names` and what they depend on only;
    /// a name the cache does not hold as a module (built in, or not asked for) is skipped.
    pub fn module_load_order_of(&self, names: &[&str]) -> Result<Vec<PathBuf>, KernelError> {
        let path = self.modules_dir().join("modules.dep");
        let text = read_bounded(&path, MODULES_DEP_MAX)?;
        let norm = |n: &str| n.replace('-', "_");
        let wanted: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| self.modules.iter().any(|m| norm(m) == norm(n)))
            .collect();
        let order = load_order(&text, &wanted).map_err(|source| KernelError::ModulesDep {
            path: path.clone(),
            source,
        })?;
        Ok(order.into_iter().map(PathBuf::from).collect())
    }
}

/// The paths of `wanted` modules and of all they depend on, each after its dependencies,
/// from the text of a `modules.dep`. Names match with `-` and `_` taken as one.
pub fn load_order(modules_dep: &str, wanted: &[&str]) -> Result<Vec<String>, ModulesDepError> {
    let mut deps: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut by_name: HashMap<String, &str> = HashMap::new();
    for (i, line) in modules_dep.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let (path, rest) = line.split_once(':').ok_or(ModulesDepError::Line {
            line: line_no,
            reason: "no ':'",
        })?;
        let these: Vec<&str> = rest.split_ascii_whitespace().collect();
        for p in std::iter::once(path).chain(these.iter().copied()) {
            if !is_module_path(p) {
                return Err(ModulesDepError::Line {
                    line: line_no,
                    reason: "a path that is not a relative .ko path",
                });
            }
        }
        if deps.insert(path, these).is_some() {
            return Err(ModulesDepError::Line {
                line: line_no,
                reason: "a module listed twice",
            });
        }
        by_name.insert(name_of(path), path);
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    let mut marks: HashMap<&str, Mark> = HashMap::new();
    let mut order = Vec::new();
    for &want in wanted {
        let root =
            *by_name
                .get(&want.replace('-', "_"))
                .ok_or_else(|| ModulesDepError::Unknown {
                    module: want.to_string(),
                })?;
        if marks.contains_key(root) {
            continue;
        }
        // Depth first without recursion: (module, index of its next dependency).
        marks.insert(root, Mark::Visiting);
        let mut stack: Vec<(&str, usize)> = vec![(root, 0)];
        while let Some(&(module, next)) = stack.last() {
            let module_deps = deps.get(module).ok_or_else(|| ModulesDepError::Unknown {
                module: module.to_string(),
            })?;
            if let Some(&dep) = module_deps.get(next) {
                if let Some(top) = stack.last_mut() {
                    top.1 += 1;
                }
                match marks.get(dep) {
                    None => {
                        marks.insert(dep, Mark::Visiting);
                        stack.push((dep, 0));
                    }
                    Some(Mark::Visiting) => {
                        return Err(ModulesDepError::Cycle {
                            module: dep.to_string(),
                        })
                    }
                    Some(Mark::Done) => {}
                }
            } else {
                marks.insert(module, Mark::Done);
                order.push(module.to_string());
                stack.pop();
            }
        }
    }
    Ok(order)
}

/// A module's name from its path: the file name before `.ko`, `-` as `_`.
fn name_of(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

fn is_module_path(p: &str) -> bool {
    let path = Path::new(p);
    path.components().all(|c| matches!(c, Component::Normal(_)))
        && (p.ends_with(".ko") || p.contains(".ko."))
        && !p.is_empty()
}

fn is_module_name(m: &str) -> bool {
    is_word(m, |b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn is_word(s: &str, ok: impl Fn(u8) -> bool) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(ok)
}

fn read_bounded(path: &Path, max: u64) -> Result<String, KernelError> {
    let read = |path: &Path| -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        File::open(path)?.take(max + 1).read_to_end(&mut buf)?;
        Ok(buf)
    };
    let buf = read(path).map_err(|source| KernelError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if buf.len() as u64 > max {
        return Err(KernelError::TooLarge {
            path: path.to_path_buf(),
            max,
        });
    }
    String::from_utf8(buf).map_err(|_| KernelError::NotUtf8 {
        path: path.to_path_buf(),
    })
}

/// A guest kernel cache that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("cannot read {path} (scripts/vm-kernel.sh makes the guest kernel cache)")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is larger than {max} bytes")]
    TooLarge { path: PathBuf, max: u64 },
    #[error("{path} is not UTF-8")]
    NotUtf8 { path: PathBuf },
    #[error("{path} line {line}: {reason}")]
    Version {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{path} has no {key}=")]
    MissingKey { path: PathBuf, key: &'static str },
    #[error("{path} is missing")]
    Missing { path: PathBuf },
    #[error("bad modules.dep {path}")]
    ModulesDep {
        path: PathBuf,
        #[source]
        source: ModulesDepError,
    },
}

/// A `modules.dep` that does not give a load order.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModulesDepError {
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: &'static str },
    #[error("no module {module}")]
    Unknown { module: String },
    #[error("module {module} depends on itself")]
    Cycle { module: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/lib/libcrc32c.ko:
kernel/fs/erofs/erofs.ko: kernel/lib/libcrc32c.ko
kernel/fs/overlayfs/overlay.ko:
";

    #[test]
    fn dependencies_come_first_and_once() {
        let order = load_order(DEP, &["virtio_mmio", "virtio_console", "erofs"]).unwrap();
        assert_eq!(
            order,
            [
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/virtio/virtio_mmio.ko",
                "kernel/drivers/char/virtio_console.ko",
                "kernel/lib/libcrc32c.ko",
                "kernel/fs/erofs/erofs.ko",
            ]
        );
    }

    #[test]
    fn dashes_and_underscores_are_one() {
        let dep = "kernel/drivers/char/hw_random/virtio-rng.ko:\n";
        assert_eq!(
            load_order(dep, &["virtio_rng"]).unwrap(),
            ["kernel/drivers/char/hw_random/virtio-rng.ko"]
        );
    }

    #[test]
    fn an_unknown_module_is_named() {
        assert_eq!(
            load_order(DEP, &["nope"]),
            Err(ModulesDepError::Unknown {
                module: "nope".into()
            })
        );
        // A dependency without a line of its own.
        assert!(matches!(
            load_order("a.ko: b.ko\n", &["a"]),
            Err(ModulesDepError::Unknown { .. })
        ));
    }

    #[test]
    fn a_cycle_is_an_error_not_a_hang() {
        let dep = "a.ko: b.ko\nb.ko: a.ko\n";
        assert!(matches!(
            load_order(dep, &["a"]),
            Err(ModulesDepError::Cycle { .. })
        ));
    }

    #[test]
    fn paths_outside_the_tree_are_refused() {
        for dep in [
            "/abs.ko:\n",
            "../up.ko:\n",
            "a.ko: ../b.ko\n",
            "noext:\n",
            "garbage\n",
        ] {
            assert!(
                matches!(load_order(dep, &["x"]), Err(ModulesDepError::Line { .. })),
                "{dep:?}"
            );
        }
    }

    #[test]
    fn a_deep_chain_does_not_overflow_the_stack() {
        let mut dep = String::new();
        for i in 0..100_000 {
            dep.push_str(&format!("m{i}.ko: m{}.ko\n", i + 1));
        }
        dep.push_str("m100000.ko:\n");
        let order = load_order(&dep, &["m0"]).unwrap();
        assert_eq!(order.len(), 100_001);
        assert_eq!(order[0], "m100000.ko");
    }

    fn cache(version: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("VERSION"), version).unwrap();
        std::fs::write(dir.path().join("vmlinuz"), b"bzImage").unwrap();
        std::fs::create_dir(dir.path().join("modules")).unwrap();
        std::fs::write(dir.path().join("modules/modules.dep"), DEP).unwrap();
        dir
    }

    #[test]
    fn a_cache_reads_back() {
        let dir = cache(
            "kernel=6.1.0-57-cloud-amd64\npackage=linux-image-6.1.0-57-cloud-amd64\n\
             package_version=6.1.192-3\nmodules=virtio_ring virtio virtio_mmio\nbuiltin=\n",
        );
        let k = GuestKernel::open(dir.path()).unwrap();
        assert_eq!(k.version(), "6.1.0-57-cloud-amd64");
        assert_eq!(
            k.package(),
            ("linux-image-6.1.0-57-cloud-amd64", "6.1.192-3")
        );
        assert_eq!(k.modules(), ["virtio_ring", "virtio", "virtio_mmio"]);
        assert_eq!(
            k.module_load_order().unwrap(),
            [
                PathBuf::from("kernel/drivers/virtio/virtio_ring.ko"),
                PathBuf::from("kernel/drivers/virtio/virtio.ko"),
                PathBuf::from("kernel/drivers/virtio/virtio_mmio.ko"),
            ]
        );
    }

    #[test]
    fn a_bad_cache_names_its_file() {
        let dir = cache("kernel=../../etc\nmodules=\n");
        let e = GuestKernel::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("VERSION"), "{e}");
        let dir = cache("modules=virtio\n");
        assert!(matches!(
            GuestKernel::open(dir.path()),
            Err(KernelError::MissingKey { key: "kernel", .. })
        ));
        let empty = tempfile::tempdir().unwrap();
        let e = GuestKernel::open(empty.path()).unwrap_err();
        assert!(matches!(e, KernelError::Read { .. }), "{e:?}");
        assert!(e.to_string().contains("vm-kernel.sh"), "{e}");
    }
}
