//! Exec and attach over SPDY/3.1, with a client on the crate's framing.

mod support;

use std::time::Duration;

use support::*;

fn status(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(bytes)))
}

async fn connect(h: &Harness, url: &str, protocol: &str, keeps_windows: bool) -> SpdyClient {
    let (head, sock) = spdy_upgrade(h.addr, &path_of(url), &[protocol]).await;
    assert_eq!(head.status, 101, "{head:?}");
    assert_eq!(head.header("X-Stream-Protocol-Version"), [protocol]);
    assert_eq!(head.header("Upgrade"), ["SPDY/3.1"]);
    SpdyClient::start(sock, keeps_windows)
}

#[tokio::test]
async fn v4_exec_without_tty_sends_output_and_success() {
    let h = harness().await;
    let url = h
        .server
        .exec_url(exec_req(&["out", "hello", "0"], false, true, true, false))
        .unwrap();
    let c = connect(&h, &url, "v4.channel.k8s.io", true).await;
    let mut error = c.open(&[("streamtype", "error")]).await;
    let mut stdout = c.open(&[("streamtype", "stdout")]).await;
    let mut stderr = c.open(&[("streamtype", "stderr")]).await;
    assert_eq!(stdout.read_to_end().await, b"hello");
    assert_eq!(stderr.read_to_end().await, b"err:hello");
    assert_eq!(
        error.read_to_end().await,
        br#"{"metadata":{},"status":"Success"}"#
    );
    c.wait_closed().await;
    assert!(c.goaway(), "the server says GOAWAY before it closes");
    assert_eq!(
        h.runtime.events(),
        [Event::Exec(vec!["out".into(), "hello".into(), "0".into()])]
    );
}

#[tokio::test]
async fn v4_exec_reports_a_non_zero_exit_code() {
    let h = harness().await;
    let url = h
        .server
        .exec_url(exec_req(&["out", "x", "3"], false, true, true, false))
        .unwrap();
    let c = connect(&h, &url, "v4.channel.k8s.io", true).await;
    let mut error = c.open(&[("streamtype", "error")]).await;
    let mut stdout = c.open(&[("streamtype", "stdout")]).await;
    let _stderr = c.open(&[("streamtype", "stderr")]).await;
    assert_eq!(stdout.read_to_end().await, b"x");
    let s = status(&error.read_to_end().await);
    assert_eq!(s["status"], "Failure");
    assert_eq!(s["reason"], "NonZeroExitCode");
    assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(s["details"]["causes"][0]["message"], "3");
}

#[tokio::test]
async fn v4_exec_reports_a_runtime_failure() {
    let h = harness().await;
    let url = h
        .server
        .exec_url(exec_req(
            &["fail", "no such container"],
            false,
            true,
            false,
            false,
        ))
        .unwrap();
    let c = connect(&h, &url, "v4.channel.k8s.io", true).await;
    let mut error = c.open(&[("streamtype", "error")]).await;
    let _stdout = c.open(&[("streamtype", "stdout")]).await;
    let s = status(&error.read_to_end().await);
    assert_eq!(s["status"], "Failure");
    assert_eq!(s["reason"], "InternalError");
    assert!(s["message"].as_str().unwrap().contains("no such container"));
}

#[tokio::test]
async fn v3_and_v2_send_plain_text_errors() {
    for protocol in ["v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"] {
        let h = harness().await;
        let ok = h
            .server
            .exec_url(exec_req(&["out", "a", "0"], false, true, true, false))
            .unwrap();
        let bad = h
            .server
            .exec_url(exec_req(&["out", "b", "5"], false, true, true, false))
            .unwrap();
        for (url, code) in [(ok, 0), (bad, 5)] {
            let c = connect(&h, &url, protocol, true).await;
            let mut error = c.open(&[("streamtype", "error")]).await;
            let mut stdout = c.open(&[("streamtype", "stdout")]).await;
            let mut stderr = c.open(&[("streamtype", "stderr")]).await;
            let want = if code == 0 { "a" } else { "b" };
            assert_eq!(stdout.read_to_end().await, want.as_bytes(), "{protocol}");
            assert_eq!(stderr.read_to_end().await, format!("err:{want}").as_bytes());
            let text = String::from_utf8(error.read_to_end().await).unwrap();
            if code == 0 {
                assert_eq!(text, "", "{protocol}: nothing on success");
            } else {
                assert!(
                    text.contains("non-zero exit code") && text.contains('5'),
                    "{protocol}: {text}"
                );
                assert!(!text.starts_with('{'), "{protocol}: text, not JSON: {text}");
            }
        }
    }
}

#[tokio::test]
async fn tty_resize_events_reach_the_runtime() {
    let h = harness().await;
    let url = h
        .server
        .exec_url(exec_req(&["resize", "2"], false, true, false, true))
        .unwrap();
    let c = connect(&h, &url, "v4.channel.k8s.io", true).await;
    let mut error = c.open(&[("streamtype", "error")]).await;
    let _stdout = c.open(&[("streamtype", "stdout")]).await;
    let resize = c.open(&[("streamtype", "resize")]).await;
    resize
        .write(b"{\"Width\":80,\"Height\":24}\n{\"Width\":1")
        .await;
    resize.write(b"20,\"Height\":50}\n").await;
    assert_eq!(
        error.read_to_end().await,
        br#"{"metadata":{},"status":"Success"}"#
    );
    let sizes: Vec<_> = h
        .runtime
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::Resize(_)))
        .collect();
    assert_eq!(
        sizes,
        [
            Event::Resize(berth_stream::TerminalSize {
                width: 80,
                height: 24
            }),
            Event::Resize(berth_stream::TerminalSize {
                width: 120,
                height: 50
            })
        ]
    );
}

#[tokio::test]
async fn the_server_waits_for_the_resize_stream_with_a_tty() {
    let h = harness().await;
    let url = h
        .server
        .exec_url(exec_req(&["out", "x", "0"], false, true, false, true))
        .unwrap();
    let c = connect(&h, &url, "v3.channel.k8s.io", true).await;
    let _error = c.open(&[("streamtype", "error")]).await;
    let _stdout = c.open(&[("streamtype", "stdout")]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        h.runtime.events(),
        [],
        "not started before the resize stream"
    );
    let _resize = c.open(&[("streamtype", "resize")]).await;
    h.runtime.wait_for(|e| !e.is_empty()).await;
}

#[tokio::test]
async fn stdin_reaches_the_runtime_and_its_close_is_eof() {
    let h = harness().await;
    let url = h
        .server
        .exec_url(exec_req(&["cat"], true, true, false, false))
        .unwrap();
    let c = connect(&h, &url, "v4.channel.k8s.io", true).await;
    let mut error = c.open(&[("streamtype", "error")]).await;
    let stdin = c.open(&[("streamtype", "stdin")]).await;
    let mut stdout = c.open(&[("streamtype", "stdout")]).await;
    stdin.write(b"abc").await;
    assert_eq!(stdout.read_n(3).await, b"abc");
    stdin.write(b"def").await;
    stdin.close().await;
    assert_eq!(stdout.read_to_end().await, b"def");
    assert_eq!(
        error.read_to_end().await,
        br#"{"metadata":{},"status":"Success"}"#
    );
    let ev = h.runtime.events();
    assert_eq!(ev.last(), Some(&Event::StdinClosed), "{ev:?}");
}

#[tokio::test]
async fn large_stdin_from_a_client_without_flow_control_arrives_whole() {
    let h = harness().await;
    let url = h
        .server
        .exec_url(exec_req(&["cat"], true, true, false, false))
        .unwrap();
    let c = connect(&h, &url, "v4.channel.k8s.io", false).await;
    let mut error = c.open(&[("streamtype", "error")]).await;
    let stdin = c.open(&[("streamtype", "stdin")]).await;
    let mut stdout = c.open(&[("streamtype", "stdout")]).await;
    let data = pattern(0, 2 << 20);
    let writer = tokio::spawn(async move {
        for chunk in data.chunks(32 * 1024) {
            stdin.write(chunk).await;
        }
        stdin.close().await;
    });
    let got = stdout.read_to_end().await;
    writer.await.unwrap();
    assert_eq!(got.len(), 2 << 20);
    assert!(got == pattern(0, 2 << 20));
    assert_eq!(
        error.read_to_end().await,
        br#"{"metadata":{},"status":"Success"}"#
    );
}

#[tokio::test]
async fn ten_mib_of_stdout_pass_within_the_clients_windows() {
    let h = harness().await;
    let n = 10 << 20;
    let url = h
        .server
        .exec_url(exec_req(
            &["big", &n.to_string()],
            false,
            true,
            false,
            false,
        ))
        .unwrap();
    let c = connect(&h, &url, "v4.channel.k8s.io", true).await;
    let mut error = c.open(&[("streamtype", "error")]).await;
    let mut stdout = c.open(&[("streamtype", "stdout")]).await;
    let got = tokio::time::timeout(Duration::from_secs(60), stdout.read_to_end())
        .await
        .unwrap();
    assert_eq!(got.len(), n);
    assert!(got == pattern(0, n), "the bytes come in order, intact");
    assert_eq!(c.overrun(), 0, "the server never sent past a window");
    assert_eq!(
        error.read_to_end().await,
        br#"{"metadata":{},"status":"Success"}"#
    );
}

#[tokio::test]
async fn ten_mib_of_stdout_pass_to_a_client_that_keeps_no_windows() {
    // As moby/spdystream: no WINDOW_UPDATE ever. The server must not stall at 64 KiB.
    let h = harness().await;
    let n = 10 << 20;
    let url = h
        .server
        .exec_url(exec_req(
            &["big", &n.to_string()],
            false,
            true,
            false,
            false,
        ))
        .unwrap();
    let c = connect(&h, &url, "v4.channel.k8s.io", false).await;
    let mut error = c.open(&[("streamtype", "error")]).await;
    let mut stdout = c.open(&[("streamtype", "stdout")]).await;
    let got = tokio::time::timeout(Duration::from_secs(60), stdout.read_to_end())
        .await
        .unwrap();
    assert_eq!(got.len(), n);
    assert_eq!(
        error.read_to_end().await,
        br#"{"metadata":{},"status":"Success"}"#
    );
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_command() {
    let h = harness().await;
    let url = h
        .server
        .exec_url(exec_req(&["hang"], false, true, false, false))
        .unwrap();
    let c = connect(&h, &url, "v4.channel.k8s.io", true).await;
    let _error = c.open(&[("streamtype", "error")]).await;
    let _stdout = c.open(&[("streamtype", "stdout")]).await;
    h.runtime
        .wait_for(|e| e.iter().any(|e| matches!(e, Event::Exec(_))))
        .await;
    c.abort().await;
    h.runtime.wait_for(|e| e.contains(&Event::Cancelled)).await;
}

#[tokio::test]
async fn a_client_that_never_opens_its_streams_is_dropped() {
    let h = harness_with(|c| c.stream_creation_timeout = Duration::from_millis(300)).await;
    let url = h
        .server
        .exec_url(exec_req(&["out", "x", "0"], false, true, false, false))
        .unwrap();
    let c = connect(&h, &url, "v4.channel.k8s.io", true).await;
    let _error = c.open(&[("streamtype", "error")]).await;
    c.wait_closed().await;
    assert_eq!(h.runtime.events(), [], "nothing was started");
}

#[tokio::test]
async fn a_ping_is_answered() {
    let h = harness().await;
    let url = h
        .server
        .exec_url(exec_req(&["hang"], false, true, false, false))
        .unwrap();
    let (_, mut sock) = spdy_upgrade(h.addr, &path_of(&url), &["v4.channel.k8s.io"]).await;
    use berth_stream::spdy::frame::{decode, encode, Frame};
    use berth_stream::spdy::zlib::{Deflater, Inflater};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut out = bytes::BytesMut::new();
    encode(&Frame::Ping { id: 7 }, &mut Deflater::new(), &mut out).unwrap();
    sock.write_all(&out).await.unwrap();
    let mut buf = vec![0u8; 12];
    tokio::time::timeout(WAIT, sock.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        decode(&buf, &mut Inflater::new()).unwrap().unwrap().0,
        Frame::Ping { id: 7 }
    );
}

#[tokio::test]
async fn a_bad_frame_ends_the_connection_with_goaway() {
    let h = harness().await;
    let url = h
        .server
        .exec_url(exec_req(&["hang"], false, true, false, false))
        .unwrap();
    let (_, mut sock) = spdy_upgrade(h.addr, &path_of(&url), &["v4.channel.k8s.io"]).await;
    use berth_stream::spdy::frame::{decode, Frame};
    use berth_stream::spdy::zlib::Inflater;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A SYN_STREAM whose header block is not zlib.
    sock.write_all(&[
        0x80, 3, 0, 1, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4,
    ])
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, sock.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let (f, _) = decode(&buf, &mut Inflater::new()).unwrap().unwrap();
    assert_eq!(
        f,
        Frame::GoAway {
            last_good_stream_id: 0,
            status: berth_stream::spdy::frame::goaway::PROTOCOL_ERROR
        }
    );
}

#[tokio::test]
async fn attach_gets_the_same_streams() {
    let h = harness().await;
    let url = h
        .server
        .attach_url(berth_stream::AttachRequest {
            container_id: "c9".into(),
            tty: false,
            stdin: true,
            stdout: true,
            stderr: false,
        })
        .unwrap();
    assert!(url.contains("/attach/"));
    let c = connect(&h, &url, "v4.channel.k8s.io", true).await;
    let mut error = c.open(&[("streamtype", "error")]).await;
    let stdin = c.open(&[("streamtype", "stdin")]).await;
    let mut stdout = c.open(&[("streamtype", "stdout")]).await;
    stdin.write(b"hi").await;
    stdin.close().await;
    assert_eq!(stdout.read_to_end().await, b"hi");
    assert_eq!(
        error.read_to_end().await,
        br#"{"metadata":{},"status":"Success"}"#
    );
    assert_eq!(h.runtime.events()[0], Event::Attach("c9".into()));
}
