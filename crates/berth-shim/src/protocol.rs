//! What the engine and a shim say to each other: one [`Request`] per connection, as a line
//! of JSON, and one [`Response`] line back.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The pod's infra process: which namespaces it makes or joins.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SandboxSpec {
    /// A network namespace to join (one the engine made); none: see `net`.
    pub netns: Option<PathBuf>,
    /// A new network namespace with its loopback up (else the host's, or `netns`).
    #[serde(default)]
    pub net: bool,
    /// A new IPC namespace (else the host's).
    pub ipc: bool,
    /// A new UTS namespace with this hostname (else the host's).
    pub hostname: Option<String>,
    /// A new PID namespace whose init is the pause (the pod's PID mode POD).
    pub pid: bool,
}

/// A container of the pod: its bundle (config.json written by the engine, whose
/// namespaces name the pod's pinned ones) and how its stdio is held.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CreateSpec {
    pub id: String,
    pub bundle: PathBuf,
    /// Its CRI log file; none: the output is read and dropped.
    pub log_path: Option<PathBuf>,
    /// Whether it gets a terminal (its output is then one stream, stdout).
    pub tty: bool,
    /// Whether its stdin stays open for attach (else /dev/null).
    pub stdin: bool,
    /// Its stdin closes when the first attach that takes it lets go (CRI `stdin_once`):
    /// the shim hands that attach its only copy.
    #[serde(default)]
    pub stdin_once: bool,
}

/// A command run in a container to its end (CRI ExecSync).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExecSyncSpec {
    pub id: String,
    pub cmd: Vec<String>,
    /// Killed after this long; 0: no deadline.
    pub timeout_ms: u64,
}

/// An interactive command in a container (CRI Exec). Its stdio comes with the request as
/// descriptors (SCM_RIGHTS): stdin's read end, stdout's and stderr's write ends, those
/// asked for, in that order; with a terminal none come, and the shim's reply brings the
/// pty's master back instead.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExecSpec {
    pub id: String,
    pub cmd: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// The frame header of an attached container's output: the stream (1 stdout, 2 stderr)
/// and the length of the bytes that follow, big-endian.
pub const FRAME_HEADER: usize = 5;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Makes the pod's infra process and pins its namespaces under the shim's directory.
    Sandbox(SandboxSpec),
    Create(CreateSpec),
    Start {
        id: String,
    },
    Kill {
        id: String,
        signal: i32,
        all: bool,
    },
    /// Removes a stopped container (with `force`, any).
    Delete {
        id: String,
        force: bool,
    },
    State {
        id: String,
    },
    ExecSync(ExecSyncSpec),
    /// Replies with the container's state once it has exited, or when `timeout_ms` (0: no
    /// deadline) has passed, whichever comes first.
    Wait {
        id: String,
        timeout_ms: u64,
    },
    /// An interactive exec ([`ExecSpec`]). The connection stays open: `ExecStarted` (with the
    /// pty master, for a terminal), then `ExecExited` when the process ends. Closing the
    /// connection first kills the process and what it started.
    Exec(ExecSpec),
    /// Attaches to the container: `Attached` comes with the container's stdin (the pty
    /// master with a terminal, else a pipe's write end when `stdin` is asked and the
    /// container keeps one open), then its output as frames ([`FRAME_HEADER`]) until it
    /// exits, when the shim closes the connection.
    Attach {
        id: String,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
    /// Opens the container's log path again (after the kubelet renamed the file).
    ReopenLog {
        id: String,
    },
    /// Ends the pause; the shim exits once it holds no container.
    Shutdown,
}

/// Where a container is in its life, as the shim knows it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Created,
    Running,
    Exited,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContainerState {
    pub id: String,
    pub status: Status,
    /// The init's host pid (0 once reaped).
    pub pid: i32,
    /// Nanoseconds since the epoch; 0 where not yet.
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    /// The exit code, or 128 + the signal that killed it.
    pub exit_code: i32,
    /// The kernel's OOM killer killed a process of the container.
    pub oom_killed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExecSyncReply {
    pub exit_code: i32,
    /// base64 of what the command wrote, each stream capped at
    /// [`EXEC_OUTPUT_LIMIT`](crate::protocol::EXEC_OUTPUT_LIMIT).
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

/// The most of each stream an ExecSync keeps (CVE-2022-1708 was unbounded output).
pub const EXEC_OUTPUT_LIMIT: usize = 16 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Done,
    Sandbox {
        pid: i32,
    },
    Created {
        pid: i32,
    },
    State(ContainerState),
    ExecSync(ExecSyncReply),
    ExecStarted {
        pid: i32,
    },
    ExecExited {
        exit_code: i32,
    },
    /// Attached: whether the container has a terminal (then its output is one stream).
    Attached {
        tty: bool,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok(Reply),
    Error(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_are_one_json_object_each() {
        let r = Request::Kill {
            id: "c1".into(),
            signal: 15,
            all: false,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(text, r#"{"op":"kill","id":"c1","signal":15,"all":false}"#);
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);

        let ok = Response::Ok(Reply::Created { pid: 42 });
        let text = serde_json::to_string(&ok).unwrap();
        assert_eq!(text, r#"{"ok":{"reply":"created","pid":42}}"#);
        let err = serde_json::to_string(&Response::Error("nope".into())).unwrap();
        assert_eq!(err, r#"{"error":"nope"}"#);
    }
}
