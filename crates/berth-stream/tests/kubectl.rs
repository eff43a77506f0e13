//! An independent client: kubectl itself (client-go, moby/spdystream, gorilla/websocket),
//! talking to the streaming server through a fake API server that answers the pod lookup
//! and passes the upgrade requests on, rewritten to the URL berth-stream handed out, as the
//! kubelet's proxy does. Skipped where no kubectl is installed.

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

use support::*;

fn kubectl() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
}

const POD: &str = r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p1","namespace":"default","uid":"u1"},"spec":{"containers":[{"name":"c1","image":"busybox"}]},"status":{"phase":"Running"}}"#;

// Discovery, as kubectl asks for it before it looks a pod up.
const API_VERSIONS: &str =
    r#"{"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[]}"#;
const API_GROUPS: &str = r#"{"kind":"APIGroupList","apiVersion":"v1","groups":[]}"#;
const API_V1: &str = r#"{"kind":"APIResourceList","groupVersion":"v1","resources":[
{"name":"pods","singularName":"pod","namespaced":true,"kind":"Pod","verbs":["get","list"],"shortNames":["po"]},
{"name":"pods/exec","singularName":"","namespaced":true,"kind":"PodExecOptions","verbs":["create","get"]},
{"name":"pods/attach","singularName":"","namespaced":true,"kind":"PodAttachOptions","verbs":["create","get"]},
{"name":"pods/portforward","singularName":"","namespaced":true,"kind":"PodPortForwardOptions","verbs":["create","get"]}]}"#;

/// The fake API server: where streaming requests go, and which upgrades were asked for.
struct ApiServer {
    addr: SocketAddr,
    target: Arc<Mutex<String>>,
    upgrades: Arc<Mutex<Vec<String>>>,
}

async fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.ok()? == 0 {
            return None;
        }
        buf.push(b[0]);
        if buf.len() > 64 * 1024 {
            return None;
        }
    }
    String::from_utf8(buf).ok()
}

async fn api_server(stream: SocketAddr) -> ApiServer {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let target = Arc::new(Mutex::new(String::new()));
    let upgrades = Arc::new(Mutex::new(Vec::new()));
    let (t, u) = (target.clone(), upgrades.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (t, u) = (t.clone(), u.clone());
            tokio::spawn(async move {
                while let Some(head) = read_head(&mut s).await {
                    let first = head.lines().next().unwrap_or("").to_string();
                    let mut parts = first.split(' ');
                    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    let mut body = vec![0u8; len];
                    if s.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let route = path.split('?').next().unwrap_or("");
                    if route.ends_with("/exec")
                        || route.ends_with("/attach")
                        || route.ends_with("/portforward")
                    {
                        let upgrade = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("upgrade:")
                                    .map(|v| v.trim().to_string())
                            })
                            .unwrap_or_default();
                        u.lock().unwrap().push(upgrade);
                        let query = path
                            .split_once('?')
                            .map(|(_, q)| format!("?{q}"))
                            .unwrap_or_default();
                        let to = format!("{}{}", t.lock().unwrap(), query);
                        let rest = &head[first.len()..];
                        let rewritten = format!("{method} {to} HTTP/1.1{rest}");
                        let Ok(mut up) = TcpStream::connect(stream).await else {
                            return;
                        };
                        if up.write_all(rewritten.as_bytes()).await.is_err() {
                            return;
                        }
                        let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
                        return;
                    }
                    let (status, body) = if method != "GET" {
                        ("405 Method Not Allowed", String::new())
                    } else if route == "/api/v1/namespaces/default/pods/p1" {
                        ("200 OK", POD.to_string())
                    } else if route == "/api" {
                        ("200 OK", API_VERSIONS.to_string())
                    } else if route == "/apis" {
                        ("200 OK", API_GROUPS.to_string())
                    } else if route == "/api/v1" {
                        ("200 OK", API_V1.to_string())
                    } else {
                        (
                            "404 Not Found",
                            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","reason":"NotFound","code":404}"#.to_string(),
                        )
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    ApiServer {
        addr,
        target,
        upgrades,
    }
}

fn kubectl_cmd(
    bin: &std::path::Path,
    api: &ApiServer,
    home: &std::path::Path,
    websockets: bool,
) -> Command {
    let mut c = Command::new(bin);
    c.arg(format!("--server=http://{}", api.addr))
        .arg("--namespace=default")
        .arg("--request-timeout=20s")
        .env("HOME", home)
        .env("KUBECONFIG", home.join("none"))
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", websockets.to_string())
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets.to_string())
        .kill_on_drop(true);
    c
}

struct Setup {
    bin: std::path::PathBuf,
    h: Harness,
    api: ApiServer,
    home: tempfile::TempDir,
}

async fn setup(test: &str) -> Option<Setup> {
    let Some(bin) = kubectl() else {
        berth_testkit::skip(test, "no kubectl in PATH");
        return None;
    };
    let h = harness().await;
    let api = api_server(h.addr).await;
    let home = tempfile::tempdir().unwrap();
    Some(Setup { bin, h, api, home })
}

async fn run_exec(
    s: &Setup,
    websockets: bool,
    stdin: Option<&[u8]>,
    args: &[&str],
) -> std::process::Output {
    let mut c = kubectl_cmd(&s.bin, &s.api, s.home.path(), websockets);
    c.arg("exec");
    if stdin.is_some() {
        c.arg("-i");
    }
    c.args(["p1", "-c", "c1", "--"]).args(args);
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(data) = stdin {
        let mut w = child.stdin.take().unwrap();
        let data = data.to_vec();
        tokio::spawn(async move {
            w.write_all(&data).await.unwrap();
        });
    }
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("kubectl ends")
        .unwrap()
}

#[tokio::test]
async fn kubectl_exec_over_spdy_and_websocket() {
    let Some(s) = setup("kubectl_exec_over_spdy_and_websocket").await else {
        return;
    };
    for websockets in [false, true] {
        let url =
            s.h.server
                .exec_url(exec_req(&["out", "hello", "0"], false, true, true, false))
                .unwrap();
        *s.api.target.lock().unwrap() = path_of(&url);
        let out = run_exec(&s, websockets, None, &["ignored"]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "websockets={websockets}: {stderr}");
        assert_eq!(out.stdout, b"hello", "websockets={websockets}");
        assert!(stderr.contains("err:hello"), "{stderr}");

        let url =
            s.h.server
                .exec_url(exec_req(&["out", "bye", "3"], false, true, true, false))
                .unwrap();
        *s.api.target.lock().unwrap() = path_of(&url);
        let out = run_exec(&s, websockets, None, &["ignored"]).await;
        assert_eq!(
            out.status.code(),
            Some(3),
            "websockets={websockets}: kubectl exits with the command's code: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, b"bye");
    }
    let ups = s.api.upgrades.lock().unwrap().clone();
    assert_eq!(ups[0], "spdy/3.1", "{ups:?}");
    assert!(
        ups.iter().any(|u| u == "websocket"),
        "kubectl used WebSocket too: {ups:?}"
    );
}

#[tokio::test]
async fn kubectl_exec_with_large_stdin_and_stdout() {
    let Some(s) = setup("kubectl_exec_with_large_stdin_and_stdout").await else {
        return;
    };
    for websockets in [false, true] {
        let url =
            s.h.server
                .exec_url(exec_req(&["cat"], true, true, true, false))
                .unwrap();
        *s.api.target.lock().unwrap() = path_of(&url);
        let data = pattern(7, 3 << 20);
        let out = run_exec(&s, websockets, Some(&data), &["cat"]).await;
        assert!(
            out.status.success(),
            "websockets={websockets}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout.len(), data.len(), "websockets={websockets}");
        assert!(out.stdout == data);
    }
}

#[tokio::test]
async fn kubectl_port_forward_with_a_failing_port() {
    let Some(s) = setup("kubectl_port_forward_with_a_failing_port").await else {
        return;
    };
    // Both with kubectl's default (SPDY tunnelled in WebSocket, which we refuse, so it falls
    // back to SPDY on the same URL) and with SPDY straight away.
    for websockets in [false, true] {
        let echo = echo_server().await;
        let url = s.h.server.port_forward_url(pf_req()).unwrap();
        *s.api.target.lock().unwrap() = path_of(&url);
        let free = |()| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (l1, l2) = (free(()), free(()));
        let mut c = kubectl_cmd(&s.bin, &s.api, s.home.path(), websockets);
        c.args(["port-forward", "--address=127.0.0.1", "pod/p1"])
            .arg(format!("{l1}:{echo}"))
            .arg(format!("{l2}:1"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        while seen < 2 {
            let line = tokio::time::timeout(WAIT, lines.next_line())
                .await
                .expect("kubectl listens")
                .unwrap();
            let Some(line) = line else {
                let mut err = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .await
                    .unwrap();
                panic!("kubectl port-forward ended: {err}");
            };
            if line.starts_with("Forwarding from") {
                seen += 1;
            }
        }
        // Two at once to the echo port.
        let mut a = TcpStream::connect(("127.0.0.1", l1)).await.unwrap();
        let mut b = TcpStream::connect(("127.0.0.1", l1)).await.unwrap();
        b.write_all(b"bravo").await.unwrap();
        a.write_all(b"alpha").await.unwrap();
        let mut buf = [0u8; 5];
        tokio::time::timeout(WAIT, a.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"alpha");
        tokio::time::timeout(WAIT, b.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"bravo");
        // A connection to the failing port gets our message to kubectl. (kubectl then
        // chooses to end the whole port-forward; the server would go on, see
        // spdy_portforward.rs.)
        let mut bad = TcpStream::connect(("127.0.0.1", l2)).await.unwrap();
        let _ = bad.write_all(b"x").await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(WAIT, bad.read_to_end(&mut sink))
            .await
            .expect("the failing connection ends");
        let mut err = child.stderr.take().unwrap();
        let mut text = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = err.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                text.extend_from_slice(&chunk[..n]);
                if String::from_utf8_lossy(&text).contains("error forwarding port 1") {
                    break;
                }
            }
        })
        .await;
        let text = String::from_utf8_lossy(&text);
        assert!(
            text.contains("error forwarding port 1 to pod pod1"),
            "websockets={websockets}: {text}"
        );
        let _ = child.kill().await;
        assert!(s.h.runtime.events().contains(&Event::Dial(1)));
    }
    let ups = s.api.upgrades.lock().unwrap().clone();
    assert_eq!(
        ups,
        ["spdy/3.1", "websocket", "spdy/3.1"],
        "the second kubectl fell back to SPDY on the same URL"
    );
}
