//! Exec and port-forward over WebSocket, with tokio-tungstenite as the client.

mod support;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use support::*;

type Ws = WebSocketStream<TcpStream>;

/// Messages by channel until the server closes.
async fn collect(ws: &mut Ws, binary: bool) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("the server closes in time");
        match m {
            Some(Ok(Message::Binary(b))) if binary => out.push((b[0], b[1..].to_vec())),
            Some(Ok(Message::Text(t))) if !binary => {
                let t = t.as_str();
                let data = base64::engine::general_purpose::STANDARD
                    .decode(&t[1..])
                    .unwrap();
                out.push((t.as_bytes()[0] - b'0', data));
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return out,
            Some(Ok(other)) => panic!("unexpected message {other:?}"),
        }
    }
}

fn channel(msgs: &[(u8, Vec<u8>)], ch: u8) -> Vec<u8> {
    msgs.iter()
        .filter(|(c, _)| *c == ch)
        .flat_map(|(_, d)| d.clone())
        .collect()
}

async fn send(ws: &mut Ws, ch: u8, data: &[u8]) {
    let mut m = vec![ch];
    m.extend_from_slice(data);
    ws.send(Message::binary(m)).await.unwrap();
}

#[tokio::test]
async fn v5_exec_with_stdin_and_its_close_signal() {
    let h = harness().await;
    let url = h
        .server
        .exec_url(exec_req(&["cat"], true, true, false, false))
        .unwrap();
    let (mut ws, p) = ws_connect(
        h.addr,
        &path_of(&url),
        &["v5.channel.k8s.io", "v4.channel.k8s.io"],
    )
    .await
    .unwrap();
    assert_eq!(p.as_deref(), Some("v5.channel.k8s.io"));
    send(&mut ws, 0, b"hello ").await;
    send(&mut ws, 0, b"world").await;
    // Channel 255: the client closed channel 0.
    send(&mut ws, 255, &[0]).await;
    let msgs = collect(&mut ws, true).await;
    assert_eq!(channel(&msgs, 1), b"hello world");
    assert_eq!(channel(&msgs, 3), br#"{"metadata":{},"status":"Success"}"#);
    assert_eq!(h.runtime.events().last(), Some(&Event::StdinClosed));
}

#[tokio::test]
async fn v4_exec_reports_the_exit_code() {
    let h = harness().await;
    let url = h
        .server
        .exec_url(exec_req(&["out", "x", "7"], false, true, true, false))
        .unwrap();
    let (mut ws, p) = ws_connect(h.addr, &path_of(&url), &["v4.channel.k8s.io"])
        .await
        .unwrap();
    assert_eq!(p.as_deref(), Some("v4.channel.k8s.io"));
    let msgs = collect(&mut ws, true).await;
    assert_eq!(channel(&msgs, 1), b"x");
    assert_eq!(channel(&msgs, 2), b"err:x");
    let s: serde_json::Value = serde_json::from_slice(&channel(&msgs, 3)).unwrap();
    assert_eq!(s["reason"], "NonZeroExitCode");
    assert_eq!(s["details"]["causes"][0]["message"], "7");
}

#[tokio::test]
async fn base64_exec_sends_text_messages() {
    let h = harness().await;
    let url = h
        .server
        .exec_url(exec_req(
            &["out", "\u{1}bin", "0"],
            false,
            true,
            false,
            false,
        ))
        .unwrap();
    let (mut ws, p) = ws_connect(h.addr, &path_of(&url), &["v4.base64.channel.k8s.io"])
        .await
        .unwrap();
    assert_eq!(p.as_deref(), Some("v4.base64.channel.k8s.io"));
    let msgs = collect(&mut ws, false).await;
    assert_eq!(channel(&msgs, 1), "\u{1}bin".as_bytes());
    assert_eq!(channel(&msgs, 3), br#"{"metadata":{},"status":"Success"}"#);
}

#[tokio::test]
async fn pre_v4_websocket_errors_are_text() {
    let h = harness().await;
    let url = h
        .server
        .exec_url(exec_req(&["out", "x", "2"], false, true, false, false))
        .unwrap();
    let (mut ws, p) = ws_connect(h.addr, &path_of(&url), &["channel.k8s.io"])
        .await
        .unwrap();
    assert_eq!(p.as_deref(), Some("channel.k8s.io"));
    let msgs = collect(&mut ws, true).await;
    let text = String::from_utf8(channel(&msgs, 3)).unwrap();
    assert!(
        text.contains("non-zero exit code") && !text.starts_with('{'),
        "{text}"
    );
}

#[tokio::test]
async fn websocket_resize_reaches_the_runtime() {
    let h = harness().await;
    let url = h
        .server
        .exec_url(exec_req(&["resize", "1"], false, true, false, true))
        .unwrap();
    let (mut ws, _) = ws_connect(h.addr, &path_of(&url), &["v5.channel.k8s.io"])
        .await
        .unwrap();
    send(&mut ws, 4, br#"{"Width":132,"Height":43}"#).await;
    let msgs = collect(&mut ws, true).await;
    assert_eq!(channel(&msgs, 3), br#"{"metadata":{},"status":"Success"}"#);
    assert!(h
        .runtime
        .events()
        .contains(&Event::Resize(berth_stream::TerminalSize {
            width: 132,
            height: 43
        })));
}

#[tokio::test]
async fn a_websocket_client_that_goes_away_cancels_the_command() {
    let h = harness().await;
    let url = h
        .server
        .exec_url(exec_req(&["hang"], false, true, false, false))
        .unwrap();
    let (ws, _) = ws_connect(h.addr, &path_of(&url), &["v5.channel.k8s.io"])
        .await
        .unwrap();
    h.runtime.wait_for(|e| !e.is_empty()).await;
    drop(ws);
    h.runtime.wait_for(|e| e.contains(&Event::Cancelled)).await;
}

#[tokio::test]
async fn websocket_port_forward_prefixes_ports_and_reports_a_failed_dial() {
    let h = harness().await;
    let echo = echo_server().await;
    let url = h.server.port_forward_url(pf_req()).unwrap();
    let path = format!("{}?port={echo}&port=1", path_of(&url));
    let (mut ws, p) = ws_connect(h.addr, &path, &["v4.channel.k8s.io"])
        .await
        .unwrap();
    assert_eq!(p.as_deref(), Some("v4.channel.k8s.io"));
    // The first message of each channel is its port, little-endian.
    let mut firsts = std::collections::HashMap::new();
    let mut error_1 = Vec::new();
    while firsts.len() < 4 || error_1.is_empty() {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let b = m.into_data();
        match firsts.entry(b[0]) {
            std::collections::hash_map::Entry::Occupied(_) => {
                assert_eq!(
                    b[0], 3,
                    "only the failing port's error channel speaks again"
                );
                error_1.extend_from_slice(&b[1..]);
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(b[1..].to_vec());
            }
        }
    }
    assert_eq!(firsts[&0], echo.to_le_bytes());
    assert_eq!(firsts[&1], echo.to_le_bytes());
    assert_eq!(firsts[&2], 1u16.to_le_bytes());
    assert_eq!(firsts[&3], 1u16.to_le_bytes());
    let msg = String::from_utf8(error_1).unwrap();
    assert!(msg.contains("error forwarding port 1"), "{msg}");
    // The echo port still works.
    send(&mut ws, 0, b"ping").await;
    let mut got = Vec::new();
    while got.len() < 4 {
        let b = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .into_data();
        assert_eq!(b[0], 0);
        got.extend_from_slice(&b[1..]);
    }
    assert_eq!(got, b"ping");
}

#[tokio::test]
async fn websocket_port_forward_needs_ports() {
    let h = harness().await;
    let url = h.server.port_forward_url(pf_req()).unwrap();
    match ws_connect(h.addr, &path_of(&url), &["portforward.k8s.io"]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 400),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("upgraded without a port"),
    }
}
