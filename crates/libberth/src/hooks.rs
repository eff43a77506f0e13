//! OCI hooks: run with the state JSON on stdin, the hook's args and env, and its timeout.

use std::io::{Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::memfd::{memfd_create, MFdFlags};
use oci_spec::runtime::Hook;

use crate::error::{Error, Result};

/// The hook points of the runtime spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Prestart => "prestart",
            Kind::CreateRuntime => "createRuntime",
            Kind::CreateContainer => "createContainer",
            Kind::StartContainer => "startContainer",
            Kind::Poststart => "poststart",
            Kind::Poststop => "poststop",
        }
    }

    pub fn all() -> [Kind; 6] {
        [
            Kind::Prestart,
            Kind::CreateRuntime,
            Kind::CreateContainer,
            Kind::StartContainer,
            Kind::Poststart,
            Kind::Poststop,
        ]
    }

    pub fn select(self, h: &oci_spec::runtime::Hooks) -> &[Hook] {
        #[allow(deprecated)]
        let v = match self {
            Kind::Prestart => h.prestart(),
            Kind::CreateRuntime => h.create_runtime(),
            Kind::CreateContainer => h.create_container(),
            Kind::StartContainer => h.start_container(),
            Kind::Poststart => h.poststart(),
            Kind::Poststop => h.poststop(),
        };
        v.as_deref().unwrap_or(&[])
    }
}

/// Runs every hook of `kind` in order; the first failure stops the rest. A hook without
/// an `env` of its own gets the runtime's environment, as runc's do.
pub fn run_all(kind: Kind, hooks: Option<&oci_spec::runtime::Hooks>, state: &[u8]) -> Result<()> {
    run_hooks(kind, hooks, state, None)
}

/// As [`run_all`], for the hooks the container's init runs (createContainer,
/// startContainer): a hook without an `env` of its own gets the container process's
/// environment, as runc gives it.
pub fn run_all_with_env(
    kind: Kind,
    hooks: Option<&oci_spec::runtime::Hooks>,
    state: &[u8],
    process_env: &[String],
) -> Result<()> {
    run_hooks(kind, hooks, state, Some(process_env))
}

/// For the hooks whose failure the spec says is only a warning (poststart, poststop):
/// runs every one of them whatever the others did, and returns the failures.
pub fn run_all_warning(
    kind: Kind,
    hooks: Option<&oci_spec::runtime::Hooks>,
    state: &[u8],
) -> Vec<Error> {
    let Some(h) = hooks else { return Vec::new() };
    kind.select(h)
        .iter()
        .filter_map(|hook| run_one(kind, hook, state, None).err())
        .collect()
}

fn run_hooks(
    kind: Kind,
    hooks: Option<&oci_spec::runtime::Hooks>,
    state: &[u8],
    default_env: Option<&[String]>,
) -> Result<()> {
    let Some(h) = hooks else { return Ok(()) };
    for hook in kind.select(h) {
        run_one(kind, hook, state, default_env)?;
    }
    Ok(())
}

fn capture() -> Option<OwnedFd> {
    memfd_create(c"berth-hook-output", MFdFlags::MFD_CLOEXEC).ok()
}

/// Runs one hook. Its environment is its own `env` where it has one, else `default_env`,
/// else the runtime's own.
pub fn run_one(
    kind: Kind,
    hook: &Hook,
    state: &[u8],
    default_env: Option<&[String]>,
) -> Result<()> {
    let fail = |reason: String| Error::Hook {
        kind: kind.name(),
        path: hook.path().clone(),
        reason,
    };
    let mut cmd = Command::new(hook.path());
    if let Some(args) = hook.args() {
        if let Some((first, rest)) = args.split_first() {
            cmd.arg0(first);
            cmd.args(rest);
        }
    }
    if let Some(env) = hook.env().as_deref().or(default_env) {
        cmd.env_clear();
        for e in env {
            if let Some((k, v)) = e.split_once('=') {
                cmd.env(k, v);
            }
        }
    }
    let out = capture();
    cmd.stdin(Stdio::piped());
    match &out {
        Some(fd) => {
            let f = std::fs::File::from(fd.try_clone().map_err(|e| fail(e.to_string()))?);
            cmd.stdout(f.try_clone().map_err(|e| fail(e.to_string()))?);
            cmd.stderr(f);
        }
        None => {
            cmd.stdout(Stdio::null());
            cmd.stderr(Stdio::null());
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot start: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook may exit without reading its stdin; that is not an error.
        let _ = stdin.write_all(state);
    }
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) => {}
            Err(e) => return Err(fail(format!("wait: {e}"))),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!(
                "timed out after {}s",
                hook.timeout().unwrap_or_default()
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    if status.success() {
        return Ok(());
    }
    let mut text = String::new();
    if let Some(fd) = out {
        let mut f = std::fs::File::from(fd);
        let _ = f.rewind();
        let _ = f.take(4096).read_to_string(&mut text);
    }
    let text = text.trim();
    Err(fail(if text.is_empty() {
        format!("{status}")
    } else {
        format!("{status}: {text}")
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(path: &str, args: &[&str], timeout: Option<i64>) -> Hook {
        let mut h = Hook::default();
        h.set_path(path.into());
        h.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
        h.set_timeout(timeout);
        h
    }

    #[test]
    fn hook_gets_state_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!("cat > {}", out.display());
        run_one(
            Kind::Prestart,
            &hook("/bin/sh", &["sh", "-c", &script], None),
            b"{\"id\":\"x\"}",
            None,
        )
        .unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"{\"id\":\"x\"}");
    }

    #[test]
    fn failing_hook_reports_status_and_output() {
        let e = run_one(
            Kind::CreateRuntime,
            &hook("/bin/sh", &["sh", "-c", "echo nope >&2; exit 3"], None),
            b"{}",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("createRuntime hook"), "{e}");
        assert!(e.contains("exit status: 3"), "{e}");
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn timeout_kills_the_hook() {
        let e = run_one(
            Kind::Poststart,
            &hook("/bin/sh", &["sh", "-c", "sleep 5"], Some(1)),
            b"{}",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("timed out after 1s"), "{e}");
    }

    #[test]
    fn env_is_exactly_the_hooks() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let mut h = hook(
            "/bin/sh",
            &["sh", "-c", &format!("env > {}", out.display())],
            None,
        );
        h.set_env(Some(vec!["ONLY=this".into()]));
        let fallback = ["FALLBACK=no".to_string()];
        run_one(Kind::Poststop, &h, b"{}", Some(&fallback)).unwrap();
        let env = std::fs::read_to_string(&out).unwrap();
        assert!(env.contains("ONLY=this"), "{env}");
        assert!(!env.contains("FALLBACK="), "{env}");
        assert!(!env.contains("PATH="), "{env}");
    }

    #[test]
    fn a_hook_without_env_gets_the_given_default_or_the_runtimes() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let h = hook(
            "/bin/sh",
            &["sh", "-c", &format!("env > {}", out.display())],
            None,
        );
        let process_env = ["FROM_PROCESS=1".to_string(), "PATH=/bin".to_string()];
        run_one(Kind::StartContainer, &h, b"{}", Some(&process_env)).unwrap();
        let env = std::fs::read_to_string(&out).unwrap();
        assert!(env.contains("FROM_PROCESS=1"), "{env}");

        std::env::var("PATH").expect("the test runs with a PATH");
        run_one(Kind::Prestart, &h, b"{}", None).unwrap();
        let env = std::fs::read_to_string(&out).unwrap();
        assert!(!env.contains("FROM_PROCESS"), "{env}");
        assert!(
            env.lines().any(|l| l.starts_with("PATH=")),
            "the runtime's own environment: {env}"
        );
    }
}
