//! The typed channel between `berth create` and the processes it forks (the intermediate
//! process and the container init). Messages are JSON over a SOCK_SEQPACKET socketpair, one
//! message per packet; file descriptors travel beside a message as SCM_RIGHTS.

use std::io::{IoSlice, IoSliceMut, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

/// Everything the runtime processes say to each other during `create`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub enum Msg {
    /// child → parent: the child made a user namespace; write its id maps.
    MapIds,
    /// parent → child: the id maps are written.
    IdsMapped,
    /// intermediate → parent: the init's pid in the parent's pid namespace.
    InitPid(i32),
    /// init → parent: the rootfs is mounted; run prestart and createRuntime hooks.
    RunHooks,
    /// parent → init: hooks done; go on. Carries the init's pid in the runtime's pid
    /// namespace, for the state that createContainer and startContainer hooks receive.
    Resume(i32),
    /// init → parent: the pty master follows as SCM_RIGHTS.
    Console,
    /// init or exec process → parent: the seccomp notify fd follows as SCM_RIGHTS, for
    /// linux.seccomp.listenerPath.
    SeccompFd,
    /// init → parent: set up and waiting on the exec fifo.
    Ready,
    /// child → parent: setup failed; the text is the full error chain.
    Failed(String),
}

/// One end of the channel.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// A connected pair; both ends are close-on-exec.
    pub fn pair() -> Result<(Channel, Channel)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .ctx(|| "socketpair for the init channel".into())?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    pub fn send(&self, msg: &Msg) -> Result<()> {
        self.send_with_fd(msg, None)
    }

    pub fn send_with_fd(&self, msg: &Msg, fd: Option<BorrowedFd<'_>>) -> Result<()> {
        let buf = serde_json::to_vec(msg).expect("messages always serialize");
        let iov = [IoSlice::new(&buf)];
        let raw: [RawFd; 1];
        let cmsgs: Vec<ControlMessage> = match fd {
            Some(f) => {
                raw = [f.as_raw_fd()];
                vec![ControlMessage::ScmRights(&raw)]
            }
            None => Vec::new(),
        };
        sendmsg::<()>(
            self.fd.as_raw_fd(),
            &iov,
            &cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .ctx(|| format!("send {msg:?} on the init channel"))?;
        Ok(())
    }

    /// Receives one message; `Ok(None)` when the other end closed.
    pub fn recv(&self) -> Result<Option<(Msg, Option<OwnedFd>)>> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let (n, fd) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(r) => {
                    let mut fd = None;
                    for c in r.cmsgs().ctx(|| "read control message".into())? {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            for f in fds {
                                // SAFETY: the kernel just installed `f` in our fd table
                                // for this message; nothing else owns it.
                                let owned = unsafe { OwnedFd::from_raw_fd(f) };
                                fd.get_or_insert(owned);
                            }
                        }
                    }
                    break (r.bytes, fd);
                }
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(Error::sys("receive on the init channel", e)),
            }
        };
        if n == 0 {
            return Ok(None);
        }
        let msg = serde_json::from_slice(&buf[..n])
            .map_err(|e| Error::Init(format!("malformed message on the init channel: {e}")))?;
        Ok(Some((msg, fd)))
    }

    /// Receives a message and requires it to be `want`.
    pub fn expect(&self, want: Msg) -> Result<()> {
        match self.recv()? {
            Some((m, _)) if m == want => Ok(()),
            Some((Msg::Failed(e), _)) => Err(Error::Init(e)),
            Some((m, _)) => Err(Error::Init(format!("expected {want:?}, got {m:?}"))),
            None => Err(Error::Init(format!(
                "channel closed while waiting for {want:?}"
            ))),
        }
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }
}

/// Connects to the unix stream socket `socket` (named `what` in errors), sends `payload`
/// with `fd` as SCM_RIGHTS on the first sendmsg and the rest of the payload after it, and
/// closes the connection.
pub fn send_to_unix_socket(
    socket: &Path,
    what: &str,
    payload: &[u8],
    fd: BorrowedFd<'_>,
) -> Result<()> {
    let mut s = UnixStream::connect(socket)
        .map_err(|e| Error::io(format!("connect to {what} {}", socket.display()), e))?;
    let fds = [fd.as_raw_fd()];
    let sent = sendmsg::<()>(
        s.as_raw_fd(),
        &[IoSlice::new(payload)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .ctx(|| format!("send to {what} {}", socket.display()))?;
    s.write_all(&payload[sent..])
        .map_err(|e| Error::io(format!("send to {what} {}", socket.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn messages_round_trip() {
        let (a, b) = Channel::pair().unwrap();
        a.send(&Msg::InitPid(42)).unwrap();
        a.send(&Msg::Failed("boom: x".into())).unwrap();
        assert_eq!(b.recv().unwrap().unwrap().0, Msg::InitPid(42));
        assert_eq!(b.recv().unwrap().unwrap().0, Msg::Failed("boom: x".into()));
        drop(a);
        assert!(b.recv().unwrap().is_none());
    }

    #[test]
    fn passes_a_file_descriptor() {
        let (a, b) = Channel::pair().unwrap();
        let f = std::fs::File::open("/dev/null").unwrap();
        a.send_with_fd(&Msg::Console, Some(f.as_fd())).unwrap();
        let (m, fd) = b.recv().unwrap().unwrap();
        assert_eq!(m, Msg::Console);
        assert!(fd.is_some());
    }

    #[test]
    fn expect_reports_child_failure() {
        let (a, b) = Channel::pair().unwrap();
        a.send(&Msg::Failed("mount /proc: EPERM".into())).unwrap();
        let e = b.expect(Msg::Ready).unwrap_err();
        assert_eq!(e.to_string(), "container init: mount /proc: EPERM");
    }
}
