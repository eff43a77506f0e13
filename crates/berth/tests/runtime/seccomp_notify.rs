//! SCMP_ACT_NOTIFY with linux.seccomp.listenerPath: a seccomp agent written here receives
//! the container process state and the notify fd over its socket, then answers the
//! container's notified syscalls with an errno of its choosing. The container seeing that
//! errno proves the whole path: filter flag, fd hand-over, SCM_RIGHTS, state payload.

use std::io::{IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use serde_json::{json, Value};

use crate::common::*;

/// What the agent saw on one connection.
#[derive(Debug)]
struct Connection {
    payload: Value,
    /// The syscall numbers it answered.
    answered: Vec<i32>,
}

/// A seccomp agent listening on a socket in a temp dir; every connection is served in its
/// own thread, answering each notification with `-errno`.
struct Agent {
    _dir: tempfile::TempDir,
    path: PathBuf,
    results: mpsc::Receiver<Result<Connection, String>>,
}

impl Agent {
    fn start(errno: i32) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (tx, results) = mpsc::channel();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let tx = tx.clone();
                match conn {
                    Ok(stream) => {
                        thread::spawn(move || {
                            let _ = tx.send(serve(stream, errno));
                        });
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("accept: {e}")));
                        return;
                    }
                }
            }
        });
        Agent {
            _dir: dir,
            path,
            results,
        }
    }

    /// The next finished connection; panics after WAIT_LIMIT.
    fn next(&self) -> Connection {
        self.results
            .recv_timeout(WAIT_LIMIT)
            .expect("the agent got no connection in time")
            .unwrap_or_else(|e| panic!("agent: {e}"))
    }
}

/// One connection: the payload and the fd, then notifications until the filter's last
/// process is gone.
fn serve(mut stream: std::os::unix::net::UnixStream, errno: i32) -> Result<Connection, String> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let (n, fd) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        )
        .map_err(|e| format!("recvmsg: {e}"))?;
        let mut fd = None;
        for c in msg.cmsgs().map_err(|e| format!("cmsgs: {e}"))? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                // SAFETY: the kernel just installed these fds in this process for us.
                fd = fds.first().map(|&f| unsafe { OwnedFd::from_raw_fd(f) });
            }
        }
        (msg.bytes, fd)
    };
    let fd = fd.ok_or("no fd came with the payload")?;
    let mut data = buf[..n].to_vec();
    stream
        .read_to_end(&mut data)
        .map_err(|e| format!("read the rest: {e}"))?;
    let payload: Value =
        serde_json::from_slice(&data).map_err(|e| format!("payload is not JSON: {e}"))?;
    let mut answered = Vec::new();
    let deadline = Instant::now() + WAIT_LIMIT;
    while Instant::now() < deadline {
        let mut pfd = [PollFd::new(
            std::os::fd::AsFd::as_fd(&fd),
            PollFlags::POLLIN,
        )];
        poll(&mut pfd, PollTimeout::from(200u16)).map_err(|e| format!("poll: {e}"))?;
        let ev = pfd[0].revents().unwrap_or(PollFlags::empty());
        if ev.contains(PollFlags::POLLIN) {
            // SAFETY: an all-zero seccomp_notif is what NOTIF_RECV requires as input.
            let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
            // SAFETY: NOTIF_RECV fills `req`, a valid seccomp_notif, on the notify fd.
            let rc =
                unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) };
            if rc != 0 {
                // The process went away between poll and recv.
                continue;
            }
            let mut resp = libc::seccomp_notif_resp {
                id: req.id,
                val: 0,
                error: -errno,
                flags: 0,
            };
            // SAFETY: NOTIF_SEND reads `resp`, a valid seccomp_notif_resp.
            let rc =
                unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
            if rc == 0 {
                answered.push(req.data.nr);
            }
        } else if ev.contains(PollFlags::POLLHUP) {
            return Ok(Connection { payload, answered });
        }
    }
    Err(format!(
        "the filter's processes did not go away; answered {answered:?}"
    ))
}

/// A seccomp profile that notifies mkdir and mkdirat, to the agent at `path`.
fn notify_profile(c: &mut Value, path: &std::path::Path) {
    c["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "listenerPath": path,
        "listenerMetadata": "berth-test-metadata",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    });
}

fn agent_answers_the_init(no_new_privileges: bool) {
    let agent = Agent::start(libc::EXDEV);
    let berth = Berth::new();
    let b = Bundle::new()
        .sh("mkdir /tmp/notified-by-agent; echo rc=$?")
        .edit(|c| {
            notify_profile(c, &agent.path);
            c["process"]["noNewPrivileges"] = json!(no_new_privileges);
        });
    let id = unique_id("notify");
    berth.create(&id, b.path(), &[]).assert_ok("create");
    let pid = berth.pid(&id);
    berth.cmd(&["start", &id]).assert_ok("start");
    berth.wait_status(&id, "stopped");

    let conn = agent.next();

    assert_eq!(berth.container_stdout(&id).trim(), "rc=1");
    assert!(
        berth
            .container_stderr(&id)
            .contains("Invalid cross-device link"),
        "mkdir did not fail with the agent's EXDEV: {}",
        berth.container_stderr(&id)
    );
    assert!(!conn.answered.is_empty(), "{conn:?}");
    let p = &conn.payload;
    assert_eq!(p["fds"], json!(["seccompFd"]), "{p}");
    assert_eq!(p["pid"], pid, "{p}");
    assert_eq!(p["metadata"], "berth-test-metadata", "{p}");
    assert!(p["ociVersion"].as_str().unwrap().starts_with("1."), "{p}");
    assert_eq!(p["state"]["id"], id.as_str(), "{p}");
    assert_eq!(p["state"]["status"], "creating", "{p}");
    assert_eq!(p["state"]["pid"], pid, "{p}");
    assert_eq!(p["state"]["bundle"], b.path().to_str().unwrap(), "{p}");
    berth.cmd(&["delete", &id]).assert_ok("delete");
}

#[test]
fn notify_fd_reaches_the_listener_which_answers_the_syscall() {
    agent_answers_the_init(true);
}

#[test]
fn notify_works_without_no_new_privileges() {
    agent_answers_the_init(false);
}

#[test]
fn exec_sends_its_own_notify_fd_to_the_listener() {
    let agent = Agent::start(libc::ENOTSUP);
    let berth = Berth::new();
    let b = Bundle::new()
        .sh("echo ready; exec sleep 1000")
        .edit(|c| notify_profile(c, &agent.path));
    let id = unique_id("notifyexec");
    berth.start_and_wait(&id, &b, "ready");

    let out = berth.cmd(&["exec", &id, "sh", "-c", "mkdir /tmp/x 2>&1; echo rc=$?"]);

    out.assert_ok("exec");
    assert!(
        out.stdout.contains("Operation not supported"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("rc=1"), "{}", out.stdout);
    // One connection per fd: the exec's arrives once its process is gone.
    let first = agent.next();
    assert_eq!(first.payload["state"]["status"], "running", "{:?}", first);
    assert!(!first.answered.is_empty(), "{first:?}");
    berth.cmd(&["kill", &id, "KILL"]).assert_ok("kill");
    berth.wait_status(&id, "stopped");
    let init = agent.next();
    assert_eq!(init.payload["state"]["status"], "creating", "{init:?}");
    assert!(init.answered.is_empty(), "the init made no mkdir: {init:?}");
}

#[test]
fn unreachable_listener_fails_create_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-agent.sock");
    let berth = Berth::new();
    let b = Bundle::new().edit(|c| notify_profile(c, &missing));
    let id = unique_id("noagent");

    let out = berth.create(&id, b.path(), &[]);

    out.assert_error("create with no listener")
        .assert_stderr_has(
            "create",
            &[&id, "linux.seccomp.listenerPath", missing.to_str().unwrap()],
        );
    assert_no_leftovers(&berth, &id, b.path());
}

#[test]
fn notify_without_listener_path_is_refused() {
    let berth = Berth::new();
    let b = Bundle::new().edit(|c| {
        notify_profile(c, std::path::Path::new("/x"));
        c["linux"]["seccomp"]
            .as_object_mut()
            .unwrap()
            .remove("listenerPath");
        c["linux"]["seccomp"]
            .as_object_mut()
            .unwrap()
            .remove("listenerMetadata");
    });
    let id = unique_id("nolistener");

    berth
        .create(&id, b.path(), &[])
        .assert_error("notify without listenerPath")
        .assert_stderr_has("create", &["SCMP_ACT_NOTIFY", "listenerPath"]);
    assert_no_leftovers(&berth, &id, b.path());
}
