//! Signal names and numbers as `kill` accepts them: "TERM", "SIGTERM", "sigterm", "15".

use nix::sys::signal::{SigHandler, Signal};

use crate::error::{Context, Error, Result};

/// Puts SIGPIPE back to its default action in a process about to become the container's.
///
/// Rust's runtime ignores SIGPIPE in every Rust program (berth, berth-shim, anything that
/// embeds libberth), and an ignored signal stays ignored across execve: the container's
/// `yes | head` would then print "Broken pipe" errors instead of ending quietly, and its
/// SigIgn would differ from what runc and crun give. std::process::Command undoes it in
/// its children the same way. Any other disposition is the caller's choice and is kept.
pub fn default_sigpipe() -> Result<()> {
    // SAFETY: installing SIG_DFL sets no handler, so no code runs in signal context.
    unsafe { nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigDfl) }
        .map(drop)
        .ctx(|| "reset SIGPIPE to its default action".into())
}

/// Parses a signal given by name (with or without the SIG prefix) or by number.
pub fn parse_signal(s: &str) -> Result<i32> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        let max = libc::SIGRTMAX();
        if n <= 0 || n > max {
            return Err(Error::InvalidSignal(s.to_string()));
        }
        return Ok(n);
    }
    let upper = t.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    if let Some(rest) = name.strip_prefix("SIGRTMIN") {
        return rt_offset(libc::SIGRTMIN(), rest, 1, s);
    }
    if let Some(rest) = name.strip_prefix("SIGRTMAX") {
        return rt_offset(libc::SIGRTMAX(), rest, -1, s);
    }
    name.parse::<Signal>()
        .map(|sig| sig as i32)
        .map_err(|_| Error::InvalidSignal(s.to_string()))
}

fn rt_offset(base: i32, rest: &str, dir: i32, orig: &str) -> Result<i32> {
    if rest.is_empty() {
        return Ok(base);
    }
    let sign_ok = if dir > 0 {
        rest.starts_with('+')
    } else {
        rest.starts_with('-')
    };
    let n: i32 = rest[1..]
        .parse()
        .map_err(|_| Error::InvalidSignal(orig.to_string()))?;
    let v = base + dir * n;
    if !sign_ok || v < libc::SIGRTMIN() || v > libc::SIGRTMAX() {
        return Err(Error::InvalidSignal(orig.to_string()));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse_signal("KILL").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("SIGKILL").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("SIGRTMIN+2").unwrap(), libc::SIGRTMIN() + 2);
        assert_eq!(parse_signal("RTMAX-1").unwrap(), libc::SIGRTMAX() - 1);
    }

    #[test]
    fn rejects_unknown() {
        for bad in ["", "SIGFOO", "0", "-1", "999", "RTMIN-1"] {
            assert!(parse_signal(bad).is_err(), "{bad} accepted");
        }
    }
}
