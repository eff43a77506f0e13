//! `berthctl exec` into a VM container. The container's monitor (the berthctl that runs
//! it, in the foreground or detached) holds the only connection to the guest's agent, so it
//! serves execs on a unix socket in the VM's run directory (`exec.sock`, 0600): the client
//! sends one JSON line with its stdin, stdout and stderr attached (SCM_RIGHTS, as with
//! berth-shim), the monitor asks the agent for an Exec, copies the process's streams
//! between those descriptors and the agent, and answers with one JSON line: the exit
//! status, or the error.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use berth_agent_proto::{Request, Stdio};
use berth_microvm::Sandbox;
use serde::{Deserialize, Serialize};

/// What the client asks for.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    pub args: Vec<String>,
    /// KEY=VALUE, added to (or replacing in) the container's environment.
    pub env: Vec<String>,
    pub cwd: Option<String>,
    pub tty: bool,
    pub interactive: bool,
    /// The client terminal's size, for a tty.
    pub rows: u16,
    pub cols: u16,
    /// `-u`, resolved by the client: uid, gid and supplementary groups.
    #[serde(default)]
    pub user: Option<(u32, u32, Vec<u32>)>,
}

/// The monitor's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecReply {
    pub code: Option<i32>,
    pub error: Option<String>,
}

/// The longest request line.
const REQUEST_MAX: usize = 256 * 1024;

/// The monitor's open execs: where each exec stream's output goes, and who waits for each
/// exec's exit.
#[derive(Default)]
pub struct Execs {
    outputs: Mutex<HashMap<u32, File>>,
    waiting: Mutex<HashMap<String, UnixStream>>,
    next: AtomicU32,
}

impl Execs {
    /// Output of an exec stream: written to its client's descriptor. False if the stream
    /// is not an exec's.
    pub fn output(&self, stream: u32, bytes: &[u8]) -> bool {
        let mut o = self.outputs.lock().unwrap_or_else(|p| p.into_inner());
        match o.get_mut(&stream) {
            Some(f) => {
                let _ = f.write_all(bytes);
                true
            }
            None => false,
        }
    }

    pub fn close(&self, stream: u32) {
        self.outputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&stream);
    }

    /// An exec has exited: its client hears the status.
    pub fn exited(&self, exec_id: &str, code: i32) {
        let conn = self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(exec_id);
        if let Some(mut c) = conn {
            reply(&mut c, Some(code), None);
        }
    }
}

fn reply(conn: &mut UnixStream, code: Option<i32>, error: Option<String>) {
    let mut line = serde_json::to_vec(&ExecReply { code, error }).unwrap_or_default();
    line.push(b'\n');
    let _ = conn.write_all(&line);
}

/// Serves execs for container `id` on `socket` until the process ends. `process` is the
/// container's own OCI process, which an exec's request overrides.
pub fn serve(
    socket: &Path,
    sb: Arc<Sandbox>,
    execs: Arc<Execs>,
    id: String,
    process: serde_json::Value,
) -> Result<()> {
    let listener =
        UnixListener::bind(socket).with_context(|| format!("listen on {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", socket.display()))?;
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (sb, execs, id, process) = (sb.clone(), execs.clone(), id.clone(), process.clone());
            std::thread::spawn(move || {
                let mut c = conn;
                if let Err(e) = start_exec(&sb, &execs, &id, &process, &mut c) {
                    reply(&mut c, None, Some(format!("{e:#}")));
                }
            });
        }
    });
    Ok(())
}

fn start_exec(
    sb: &Arc<Sandbox>,
    execs: &Arc<Execs>,
    id: &str,
    base: &serde_json::Value,
    conn: &mut UnixStream,
) -> Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let (n, fds) = berth_shim::fdpass::recv(conn.as_fd(), &mut buf).context("read the request")?;
    let mut line = buf[..n].to_vec();
    while !line.ends_with(b"\n") {
        if line.len() > REQUEST_MAX {
            bail!("the exec request is longer than {REQUEST_MAX} bytes");
        }
        let n = conn.read(&mut buf).context("read the request")?;
        if n == 0 {
            bail!("the exec request ended early");
        }
        line.extend_from_slice(&buf[..n]);
    }
    let req: ExecRequest = serde_json::from_slice(&line).context("parse the exec request")?;
    let [stdin, stdout, stderr]: [OwnedFd; 3] = fds
        .try_into()
        .map_err(|_| anyhow::anyhow!("the exec request must carry stdin, stdout and stderr"))?;
    if req.args.is_empty() {
        bail!("exec: no command");
    }
    let mut process = base.clone();
    process["args"] = serde_json::json!(req.args);
    process["terminal"] = req.tty.into();
    if let Some(cwd) = &req.cwd {
        process["cwd"] = cwd.clone().into();
    }
    if let Some((uid, gid, groups)) = &req.user {
        process["user"] = serde_json::json!({"uid": uid, "gid": gid, "additionalGids": groups});
    }
    let mut env: Vec<String> = process["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for e in &req.env {
        let key = e.split('=').next().unwrap_or_default();
        env.retain(|old| old.split('=').next() != Some(key));
        env.push(e.clone());
    }
    process["env"] = serde_json::json!(env);
    if req.tty && req.rows > 0 {
        process["consoleSize"] = serde_json::json!({"height": req.rows, "width": req.cols});
    }
    let n = execs.next.fetch_add(1, Ordering::Relaxed);
    let exec_id = format!("exec{n}");
    let base_stream = 1000 + 3 * n;
    let stdio = Stdio {
        stdin: req.interactive.then_some(base_stream),
        stdout: Some(base_stream + 1),
        stderr: (!req.tty).then_some(base_stream + 2),
        terminal: req.tty,
    };
    {
        let mut o = execs.outputs.lock().unwrap_or_else(|p| p.into_inner());
        o.insert(base_stream + 1, File::from(stdout));
        if !req.tty {
            o.insert(base_stream + 2, File::from(stderr));
        }
    }
    execs
        .waiting
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            exec_id.clone(),
            conn.try_clone().context("keep the connection")?,
        );
    let asked = sb.call(
        Request::Exec {
            id: id.to_string(),
            exec_id: exec_id.clone(),
            process,
            stdio,
        },
        Duration::from_secs(60),
    );
    if let Err(e) = asked {
        execs.close(base_stream + 1);
        execs.close(base_stream + 2);
        execs
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&exec_id);
        bail!("{e}");
    }
    if req.interactive {
        let sb = sb.clone();
        std::thread::spawn(move || {
            let mut input = File::from(stdin);
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match input.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if sb.data(base_stream, &buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = sb.close_stream(base_stream);
        });
    }
    Ok(())
}

/// The client: runs `req` in the VM container whose monitor serves `socket`, with this
/// process's stdio; the exec's exit status.
pub fn exec(socket: &Path, req: &ExecRequest) -> Result<i32> {
    let mut conn = UnixStream::connect(socket)
        .with_context(|| format!("connect to the container's monitor at {}", socket.display()))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    let null = File::open("/dev/null").context("open /dev/null")?;
    let stdin = if req.interactive {
        std::io::stdin().as_fd().try_clone_to_owned()?
    } else {
        null.as_fd().try_clone_to_owned()?
    };
    let out = std::io::stdout().as_fd().try_clone_to_owned()?;
    let err = std::io::stderr().as_fd().try_clone_to_owned()?;
    berth_shim::fdpass::send(
        conn.as_fd(),
        &line,
        &[stdin.as_fd(), out.as_fd(), err.as_fd()],
    )
    .context("send the exec request")?;
    drop((stdin, out, err));
    let mut answer = String::new();
    BufReader::new(&mut conn)
        .take(64 * 1024)
        .read_line(&mut answer)
        .context("read the monitor's answer")?;
    if answer.is_empty() {
        bail!("the container's monitor ended before the exec did");
    }
    let r: ExecReply = serde_json::from_str(&answer).context("parse the monitor's answer")?;
    match (r.code, r.error) {
        (Some(c), _) => Ok(c),
        (None, Some(e)) => bail!("{e}"),
        (None, None) => bail!("the container's monitor gave no exit status"),
    }
}

/// The exec socket of a VM's run directory.
pub fn socket_in(run_dir: &Path) -> PathBuf {
    run_dir.join("exec.sock")
}
