//! berthd's streaming server as kubectl and the kubelet use it: exec (with and without a
//! terminal), attach, port-forward, over WebSocket (tungstenite, a framing independent of
//! berth-stream's); streams left open never block a stop. Root only.

mod common;

use std::time::Duration;

use common::*;
use k8s_cri::v1::*;
use tonic::Code;

/// A WebSocket client of berthd's streaming server (tungstenite: an implementation of the
/// framing independent of ours), speaking Kubernetes' channel protocol.
mod ws {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    pub type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

    pub async fn connect(url: &str, protocol: &str) -> Ws {
        let ws_url = url.replacen("http://", "ws://", 1);
        let mut req = ws_url.as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
        let host = ws_url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let sock = tokio::net::TcpStream::connect(host).await.unwrap();
        let (ws, resp) = tokio_tungstenite::client_async(req, sock).await.unwrap();
        assert_eq!(
            resp.headers()["Sec-WebSocket-Protocol"].to_str().unwrap(),
            protocol
        );
        ws
    }

    pub async fn send(ws: &mut Ws, channel: u8, data: &[u8]) {
        let mut m = vec![channel];
        m.extend_from_slice(data);
        ws.send(Message::Binary(m.into())).await.unwrap();
    }

    /// Reads until the server closes: the bytes of each channel.
    pub async fn collect(ws: &mut Ws) -> std::collections::BTreeMap<u8, Vec<u8>> {
        let mut out = std::collections::BTreeMap::new();
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Binary(b) = m {
                if !b.is_empty() {
                    out.entry(b[0])
                        .or_insert_with(Vec::new)
                        .extend_from_slice(&b[1..]);
                }
            }
        }
        out
    }

    /// Reads until channel `ch` has produced something containing `needle`.
    pub async fn until(ws: &mut Ws, ch: u8, needle: &str) -> String {
        let mut got = Vec::new();
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Binary(b) = m {
                if b.first() == Some(&ch) {
                    got.extend_from_slice(&b[1..]);
                    if String::from_utf8_lossy(&got).contains(needle) {
                        break;
                    }
                }
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }
}

/// The URL of an exec of `cmd` in `ctr`; `io`: tty, stdin, stdout, stderr.
fn exec_url(b: &Berthd, ctr: &str, cmd: Vec<String>, io: [bool; 4]) -> String {
    let mut rs = b.rs.clone();
    b.call(
        "Exec",
        rs.exec(ExecRequest {
            container_id: ctr.to_string(),
            cmd,
            tty: io[0],
            stdin: io[1],
            stdout: io[2],
            stderr: io[3],
        }),
    )
    .unwrap()
    .url
}

#[test]
fn exec_attach_and_port_forward_through_the_streaming_server() {
    if skip_unless_root("exec_attach_and_port_forward_through_the_streaming_server") {
        return;
    }
    let b = Berthd::start();
    let pc = pod_config("streams", &b.dir.path().join("logs"));
    let pod = b.run_pod(&pc).unwrap();
    let mut cc = container_config(
        "app",
        "httpd -p 8080 -h /etc; while read l; do echo got:$l; done",
    );
    cc.stdin = true;
    let ctr = b.create(&pod, &cc, &pc).unwrap();
    b.start_ctr(&ctr).unwrap();
    let mut rs = b.rs.clone();

    // Exec without a terminal: stdin in, both streams out, the exit code in the v5 status.
    let url = exec_url(
        &b,
        &ctr,
        vec![
            "sh".into(),
            "-c".into(),
            "read x; echo out:$x; echo err >&2; exit 3".into(),
        ],
        [false, true, true, true],
    );
    let got = b.block_on("exec", async {
        let mut s = ws::connect(&url, "v5.channel.k8s.io").await;
        ws::send(&mut s, 0, b"hello\n").await;
        ws::send(&mut s, 255, &[0]).await; // v5: stdin is done
        ws::collect(&mut s).await
    });
    assert_eq!(String::from_utf8_lossy(&got[&1]), "out:hello\n");
    assert_eq!(String::from_utf8_lossy(&got[&2]), "err\n");
    let status = String::from_utf8_lossy(&got[&3]).into_owned();
    assert!(
        status.contains("NonZeroExitCode") && status.contains("\"3\""),
        "{status}"
    );

    // With a terminal: the size sent on the resize channel reaches the command's terminal.
    let url = exec_url(
        &b,
        &ctr,
        vec!["sh".into(), "-c".into(), "read x; stty size; exit 0".into()],
        [true, true, true, false],
    );
    let got = b.block_on("exec -t", async {
        let mut s = ws::connect(&url, "v5.channel.k8s.io").await;
        ws::send(&mut s, 4, br#"{"Width":101,"Height":31}"#).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        ws::send(&mut s, 0, b"go\r").await;
        ws::collect(&mut s).await
    });
    let out = String::from_utf8_lossy(&got[&1]).into_owned();
    assert!(out.contains("31 101"), "{out:?}");
    assert!(
        String::from_utf8_lossy(&got[&3]).contains("Success"),
        "{got:?}"
    );

    // A command that leaves a process holding its stdout still ends the session.
    let url = exec_url(
        &b,
        &ctr,
        vec!["sh".into(), "-c".into(), "sleep 4567 & echo bg".into()],
        [false, false, true, false],
    );
    let got = b.block_on("exec with a background process", async {
        let mut s = ws::connect(&url, "v5.channel.k8s.io").await;
        ws::collect(&mut s).await
    });
    assert_eq!(String::from_utf8_lossy(&got[&1]), "bg\n");
    assert!(String::from_utf8_lossy(&got[&3]).contains("Success"));

    // An exec whose client leaves is killed with what it started.
    let url = exec_url(
        &b,
        &ctr,
        vec!["sh".into(), "-c".into(), "sleep 3456 & sleep 3456".into()],
        [false, false, true, false],
    );
    b.block_on("exec, then leave", async {
        let s = ws::connect(&url, "v5.channel.k8s.io").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(s);
    });
    wait_for("the abandoned exec's processes to go", || {
        processes_with("sleep 3456").is_empty().then_some(())
    });

    // Attach: stdin reaches the container's own, its output comes back.
    let url = b
        .call(
            "Attach",
            rs.attach(AttachRequest {
                container_id: ctr.clone(),
                stdin: true,
                tty: false,
                stdout: true,
                stderr: false,
            }),
        )
        .unwrap()
        .url;
    let echoed = b.block_on("attach", async {
        let mut s = ws::connect(&url, "v5.channel.k8s.io").await;
        ws::send(&mut s, 0, b"ping\n").await;
        ws::until(&mut s, 1, "got:ping").await
    });
    assert!(echoed.contains("got:ping"), "{echoed:?}");

    // stdin_once: when the first attach closes its stdin, the container reads EOF.
    let mut once = container_config("once", "cat; echo stdin-closed");
    once.stdin = true;
    once.stdin_once = true;
    let once = b.create(&pod, &once, &pc).unwrap();
    b.start_ctr(&once).unwrap();
    let url = b
        .call(
            "Attach",
            rs.attach(AttachRequest {
                container_id: once.clone(),
                stdin: true,
                tty: false,
                stdout: true,
                stderr: false,
            }),
        )
        .unwrap()
        .url;
    let out = b.block_on("attach, stdin once", async {
        let mut s = ws::connect(&url, "v5.channel.k8s.io").await;
        ws::send(&mut s, 0, b"ping\n").await;
        ws::send(&mut s, 255, &[0]).await; // v5: stdin is done
        ws::until(&mut s, 1, "stdin-closed").await
    });
    assert!(out.contains("ping\nstdin-closed"), "{out:?}");
    let st = b.wait_state(&once, ContainerState::ContainerExited);
    assert_eq!(st.exit_code, 0, "{st:?}");

    // Port-forward: the pod's own 127.0.0.1:8080, inside its network namespace.
    let url = b
        .call(
            "PortForward",
            rs.port_forward(PortForwardRequest {
                pod_sandbox_id: pod.clone(),
                port: vec![8080],
            }),
        )
        .unwrap()
        .url;
    let page = b.block_on("port-forward", async {
        let mut s = ws::connect(&format!("{url}?port=8080"), "v4.channel.k8s.io").await;
        ws::send(&mut s, 0, b"GET /hostname HTTP/1.0\r\n\r\n").await;
        ws::until(&mut s, 0, "streams-host").await
    });
    assert!(
        page.contains("200 OK") && page.contains("streams-host"),
        "{page:?}"
    );

    // Exec into what is not running is refused before any URL is made.
    let err = b
        .call(
            "Exec",
            rs.exec(ExecRequest {
                container_id: "nosuch".into(),
                cmd: vec!["true".into()],
                stdout: true,
                ..Default::default()
            }),
        )
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    b.remove_pod(&pod).unwrap();
}

#[test]
fn streams_left_open_never_block_stop_container() {
    if skip_unless_root("streams_left_open_never_block_stop_container") {
        return;
    }
    let b = Berthd::start();
    let pc = pod_config("stuck", &b.dir.path().join("logs"));
    let pod = b.run_pod(&pc).unwrap();
    let mut cc = container_config("app", "exec sleep 1000");
    cc.stdin = true;
    let ctr = b.create(&pod, &cc, &pc).unwrap();
    b.start_ctr(&ctr).unwrap();
    let mut rs = b.rs.clone();
    // An exec waiting on its stdin and an attach, both left open by clients that never
    // read nor write again.
    let exec = exec_url(&b, &ctr, vec!["cat".into()], [false, true, true, false]);
    let attach = b
        .call(
            "Attach",
            rs.attach(AttachRequest {
                container_id: ctr.clone(),
                stdin: true,
                tty: false,
                stdout: true,
                stderr: true,
            }),
        )
        .unwrap()
        .url;
    let (mut e, mut a) = b.block_on("open the streams", async {
        (
            ws::connect(&exec, "v5.channel.k8s.io").await,
            ws::connect(&attach, "v5.channel.k8s.io").await,
        )
    });
    wait_for("the exec's cat", || {
        (!processes_with("cat").is_empty()).then_some(())
    });
    // sleep as PID 1 ignores SIGTERM: the timeout ends in SIGKILL, streams or not.
    b.stop_ctr(&ctr, 1).unwrap();
    let s = b.wait_state(&ctr, ContainerState::ContainerExited);
    assert_eq!(s.exit_code, 137, "{s:?}");
    // Both streams are ended by the server, not left hanging.
    b.block_on("the streams to close", async {
        let limit = Duration::from_secs(30);
        tokio::time::timeout(limit, ws::collect(&mut e))
            .await
            .expect("the exec stream ends with its container");
        tokio::time::timeout(limit, ws::collect(&mut a))
            .await
            .expect("the attach stream ends with its container");
    });
    b.remove_pod(&pod).unwrap();
}
