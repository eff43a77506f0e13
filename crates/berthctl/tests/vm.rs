//! `berthctl run --isolation vm` end to end: real guests under QEMU (TCG here) booting
//! Debian's cloud kernel with the static berth-agent as init, real images, as root. Each
//! test skips (and says so) without the guest kernel cache scripts/vm-kernel.sh makes.

#[path = "../../berth-image/tests/support/layout.rs"]
mod layout;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use layout::Layout;

struct Ctl {
    dir: tempfile::TempDir,
    kernel_version: String,
}

impl Ctl {
    /// None (after saying why) where no guest kernel is set up.
    fn new(test: &str) -> Option<Ctl> {
        let kernel = berth_testkit::vm_kernel_or_skip(test)?;
        let version = std::fs::read_to_string(kernel.join("VERSION"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("kernel=").map(str::to_string))
            .expect("kernel= in VERSION");
        // Short: the VM's control socket lives under the run directory.
        let dir = tempfile::Builder::new()
            .prefix("bvm.")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::create_dir(dir.path().join("run")).unwrap();
        Some(Ctl {
            dir,
            kernel_version: version,
        })
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_berthctl"));
        c.arg("--root")
            .arg(self.root())
            .arg("--runroot")
            .arg(self.run_dir())
            .arg("--registries-conf")
            .arg(self.dir.path().join("registries.toml"))
            .args(args)
            .env("BERTH_AGENT", berth_testkit::static_agent())
            .stdin(Stdio::null());
        c
    }

    fn out(&self, args: &[&str]) -> Output {
        let o = self.cmd(args).output().unwrap();
        eprintln!(
            "berthctl {args:?} -> {:?}\nstdout: {}\nstderr: {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    /// No container record, no VM directory, no VMM of this test's left.
    fn assert_clean(&self) {
        let ps = self.out(&["ps", "-a", "-q"]);
        assert_eq!(
            String::from_utf8_lossy(&ps.stdout).trim(),
            "",
            "containers left"
        );
        let vm_dirs: Vec<_> = std::fs::read_dir(self.run_dir().join("vm"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(vm_dirs.is_empty(), "VM directories left: {vm_dirs:?}");
        let mine = self.dir.path().to_string_lossy().into_owned();
        let vmms = processes()
            .into_iter()
            .filter(|(_, cmdline)| cmdline.contains("qemu-system") && cmdline.contains(&mine))
            .collect::<Vec<_>>();
        assert!(vmms.is_empty(), "VMMs left: {vmms:?}");
    }
}

/// Every process on the host: pid and command line (NULs as spaces).
fn processes() -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            out.push((pid, String::from_utf8_lossy(&c).replace('\0', " ")));
        }
    }
    out
}

/// Runs berthctl with `args` (shell words) on a terminal of `rows` x `cols` of its own,
/// which script(1) gives it.
fn in_terminal(ctl: &Ctl, rows: u16, cols: u16, args: &str) -> Output {
    let cmd = ctl.cmd(&[]);
    let mut line = format!(
        "stty rows {rows} cols {cols}; BERTH_AGENT={} {}",
        berth_testkit::static_agent().display(),
        cmd.get_program().to_string_lossy()
    );
    for a in cmd.get_args() {
        line.push(' ');
        line.push_str(&a.to_string_lossy());
    }
    line.push(' ');
    line.push_str(args);
    Command::new("script")
        .args(["-eqc", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Starts berthctl with stdout piped and waits for `line` on it.
fn spawn_until(
    ctl: &Ctl,
    args: &[&str],
    line: &str,
) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut child = ctl
        .cmd(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut got = String::new();
    out.read_line(&mut got).unwrap();
    assert_eq!(got.trim_end(), line, "the container's first line");
    (child, out)
}

fn wait_with_deadline(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            panic!("berthctl still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_container_runs_on_the_guest_kernel_with_its_status_stdout_and_stderr() {
    let Some(ctl) =
        Ctl::new("a_container_runs_on_the_guest_kernel_with_its_status_stdout_and_stderr")
    else {
        return;
    };
    let o = ctl.out(&[
        "run",
        "--rm",
        "--isolation",
        "vm",
        "berth-busybox",
        "sh",
        "-c",
        "uname -r; cat /etc/hostname >/dev/null && echo hostname-ok; echo to-stderr >&2; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(stdout, format!("{}\nhostname-ok\n", ctl.kernel_version));
    assert_ne!(
        host.trim(),
        ctl.kernel_version,
        "the guest ran the host's kernel"
    );
    assert_eq!(String::from_utf8_lossy(&o.stderr), "to-stderr\n");
    ctl.assert_clean();
    // The layer's disk is cached for the next run, by chain ID.
    let disks = std::fs::read_dir(ctl.root().join("vm/layers"))
        .unwrap()
        .count();
    assert_eq!(disks, 1);
}

#[test]
fn stdin_reaches_the_container_and_its_end_too() {
    let Some(ctl) = Ctl::new("stdin_reaches_the_container_and_its_end_too") else {
        return;
    };
    let mut child = ctl
        .cmd(&[
            "run",
            "--rm",
            "-i",
            "--isolation",
            "vm",
            "berth-busybox",
            "sh",
            "-c",
            "tr a-z A-Z; echo eof-seen",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        // More than one Data frame's worth, so that the pipe in the guest fills and drains.
        let big = "abc\n".repeat(300_000);
        stdin.write_all(big.as_bytes()).unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.len(), 1_200_000 + "eof-seen\n".len());
    assert!(out.starts_with("ABC\nABC\n") && out.ends_with("ABC\neof-seen\n"));
    ctl.assert_clean();
}

#[test]
fn a_terminal_is_given_with_the_callers_size() {
    let Some(ctl) = Ctl::new("a_terminal_is_given_with_the_callers_size") else {
        return;
    };
    let o = in_terminal(
        &ctl,
        40,
        100,
        "run --rm -t --isolation vm berth-busybox sh -c 'tty; stty size; exit 5'",
    );
    let out = String::from_utf8_lossy(&o.stdout);
    eprintln!("{out}");
    assert_eq!(o.status.code(), Some(5), "{out}");
    assert!(out.contains("/dev/pts/0"), "{out}");
    assert!(out.contains("40 100"), "{out}");
    ctl.assert_clean();
}

#[test]
fn signals_reach_the_container_whose_processes_the_host_does_not_see() {
    let Some(ctl) = Ctl::new("signals_reach_the_container_whose_processes_the_host_does_not_see")
    else {
        return;
    };
    let (mut child, mut out) = spawn_until(
        &ctl,
        &[
            "run",
            "--rm",
            "--isolation",
            "vm",
            "berth-busybox",
            "sh",
            "-c",
            "trap 'echo got TERM; exit 7' TERM; sleep 31337 & echo ready; wait",
        ],
        "ready",
    );
    // The container's sleep runs in the guest: on the host there is only the VMM (and
    // berthctl, whose own command line holds the words inside its sh -c script). The
    // number is the container's own, so that no other sleep on the host matches.
    let seen: Vec<_> = processes()
        .into_iter()
        .filter(|(_, c)| c.trim_end() == "sleep 31337")
        .collect();
    assert!(seen.is_empty(), "container processes on the host: {seen:?}");
    let vmm = processes()
        .into_iter()
        .any(|(_, c)| c.contains("qemu-system") && c.contains(&*ctl.dir.path().to_string_lossy()));
    assert!(vmm, "no VMM for the container on the host");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = wait_with_deadline(&mut child, Duration::from_secs(60));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(rest, "got TERM\n");
    assert_eq!(st.code(), Some(7));
    ctl.assert_clean();
}

#[test]
fn a_memory_limit_is_enforced_in_the_guest_and_an_oom_kill_reported() {
    let Some(ctl) = Ctl::new("a_memory_limit_is_enforced_in_the_guest_and_an_oom_kill_reported")
    else {
        return;
    };
    let o = ctl.out(&[
        "run",
        "--rm",
        "--isolation",
        "vm",
        "-m",
        "32m",
        "berth-busybox",
        "sh",
        "-c",
        "cat /sys/fs/cgroup/memory.max; x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived",
    ]);
    assert_eq!(o.status.code(), Some(137));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "33554432\n");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("lack of memory (OOM)"),
        "no OOM report"
    );
    ctl.assert_clean();
}

#[test]
fn a_killed_vmm_fails_the_container_with_a_clear_error_and_leaves_nothing() {
    let Some(ctl) =
        Ctl::new("a_killed_vmm_fails_the_container_with_a_clear_error_and_leaves_nothing")
    else {
        return;
    };
    let (mut child, _out) = spawn_until(
        &ctl,
        &[
            "run",
            "--name",
            "doomed",
            "--isolation",
            "vm",
            "berth-busybox",
            "sh",
            "-c",
            "echo ready; sleep 600",
        ],
        "ready",
    );
    let mine = ctl.dir.path().to_string_lossy().into_owned();
    let (vmm, _) = processes()
        .into_iter()
        .find(|(_, c)| c.contains("qemu-system") && c.contains(&mine))
        .expect("the VMM");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(vmm),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let st = wait_with_deadline(&mut child, Duration::from_secs(60));
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    eprintln!("{err}");
    assert_eq!(st.code(), Some(125));
    assert!(err.contains("container doomed"), "{err}");
    assert!(
        err.contains("the VM ended before the container did"),
        "{err}"
    );
    assert!(err.contains("vmm killed by SIGKILL"), "{err}");
    ctl.assert_clean();
}

#[test]
fn layers_stack_in_the_guest_as_on_the_host_whiteouts_and_opaque_directories_included() {
    let Some(ctl) = Ctl::new(
        "layers_stack_in_the_guest_as_on_the_host_whiteouts_and_opaque_directories_included",
    ) else {
        return;
    };
    // Three layers: busybox with /etc/motd and /data/{a,b}; a whiteout of /etc/motd; /data
    // made opaque with only c.
    let tree = ctl.dir.path().join("tree");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::create_dir_all(tree.join("data")).unwrap();
    std::fs::copy("/bin/busybox", tree.join("bin/busybox")).unwrap();
    for applet in ["sh", "ls", "cat"] {
        std::os::unix::fs::symlink("busybox", tree.join("bin").join(applet)).unwrap();
    }
    std::fs::write(tree.join("etc/motd"), "base\n").unwrap();
    std::fs::write(tree.join("data/a"), "a\n").unwrap();
    std::fs::write(tree.join("data/b"), "b\n").unwrap();
    let newdata = ctl.dir.path().join("newdata");
    std::fs::create_dir_all(&newdata).unwrap();
    std::fs::write(newdata.join("c"), "c\n").unwrap();
    let layout = Layout::new("stack");
    layout.insert("stack", &tree, "/");
    layout.insert_whiteout("stack", "/etc/motd");
    layout.insert_opaque("stack", &newdata, "/data");
    let index_path = layout.path().join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] =
        "localhost/stack:latest".into();
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let o = ctl.out(&["load", "-i", layout.path().to_str().unwrap()]);
    assert!(o.status.success());
    let script =
        "ls /data; cat /etc/motd 2>&1 || echo no-motd; echo x > /data/new && cat /data/new";
    let mut outs = Vec::new();
    for iso in ["process", "vm"] {
        let o = ctl.out(&[
            "run",
            "--rm",
            "--isolation",
            iso,
            "stack",
            "sh",
            "-c",
            script,
        ]);
        assert_eq!(o.status.code(), Some(0), "{iso}");
        outs.push(String::from_utf8_lossy(&o.stdout).into_owned());
    }
    assert!(outs[1].starts_with("c\n"), "{}", outs[1]);
    assert!(outs[1].contains("no-motd"), "{}", outs[1]);
    assert_eq!(
        outs[0], outs[1],
        "the guest's stack differs from the host's"
    );
    let disks = std::fs::read_dir(ctl.root().join("vm/layers"))
        .unwrap()
        .count();
    assert_eq!(disks, 3, "one disk per layer");
    ctl.assert_clean();
}

#[test]
fn what_vm_mode_cannot_do_is_refused_before_anything_is_made() {
    let Some(ctl) = Ctl::new("what_vm_mode_cannot_do_is_refused_before_anything_is_made") else {
        return;
    };
    for (args, words) in [
        (vec!["-d", "-t"], "no terminal or input"),
        (
            vec!["-v", "/etc/hostname:/mnt/h"],
            "only directories can be shared with a VM",
        ),
        (vec!["--network", "host"], "use --network none"),
    ] {
        let mut all = vec!["run", "--isolation", "vm"];
        all.extend(args);
        all.extend(["berth-busybox", "true"]);
        let o = ctl.out(&all);
        assert_eq!(o.status.code(), Some(125));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(words),
            "{all:?}"
        );
    }
    let o = ctl.out(&["run", "--isolation", "kvm", "berth-busybox", "true"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("use process or vm"));
    ctl.assert_clean();
}

/// The guest's console is kept with the container (for a failure's post-mortem) while its
/// record is: a run without --rm leaves the record, its exit status and console.log.
#[test]
fn a_run_without_rm_records_the_exit_status_and_keeps_the_console() {
    let Some(ctl) = Ctl::new("a_run_without_rm_records_the_exit_status_and_keeps_the_console")
    else {
        return;
    };
    let o = ctl.out(&[
        "run",
        "--name",
        "kept",
        "--isolation",
        "vm",
        "berth-busybox",
        "sh",
        "-c",
        "exit 4",
    ]);
    assert_eq!(o.status.code(), Some(4));
    let ps = ctl.out(&["ps", "-a", "--format", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&ps.stdout).unwrap();
    let c = &list[0];
    assert_eq!(c["Names"][0], "kept", "{list}");
    assert_eq!(c["ExitCode"], 4, "{list}");
    let id = c["Id"].as_str().unwrap().to_string();
    let console = ctl.root().join("containers").join(&id).join("console.log");
    let text = std::fs::read_to_string(&console).unwrap_or_default();
    assert!(
        text.contains("berth-agent: serving on"),
        "{}: {text}",
        console.display()
    );
    assert!(ctl.out(&["rm", "kept"]).status.success());
    ctl.assert_clean();
}

#[test]
fn a_running_vm_container_is_listed_stopped_killed_and_removed_from_another_command() {
    let Some(ctl) = Ctl::new(
        "a_running_vm_container_is_listed_stopped_killed_and_removed_from_another_command",
    ) else {
        return;
    };
    let stdout = |args: &[&str]| String::from_utf8_lossy(&ctl.out(args).stdout).into_owned();
    let script = "trap 'echo got TERM; exit 7' TERM; echo ready; sleep 600 & wait";
    let run = |name: &str, extra: &[&str]| {
        let mut args = vec!["run", "--name", name, "--isolation", "vm"];
        args.extend(extra);
        args.extend(["berth-busybox", "sh", "-c", script]);
        spawn_until(&ctl, &args, "ready")
    };

    // stop: the image's stop signal reaches the container's init through the monitor.
    let (mut child, mut out) = run("s1", &[]);
    let ps = stdout(&["ps"]);
    assert!(ps.contains("s1") && ps.contains("Up"), "{ps}");
    // exec, through the monitor: status, stdout and stderr apart, the container's env.
    let o = ctl.out(&[
        "exec",
        "-e",
        "X=from-exec",
        "s1",
        "sh",
        "-c",
        "echo out $X; echo err >&2; cat /proc/1/cmdline | tr '\\0' ' '; echo; exit 4",
    ]);
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("out from-exec\nsh -c {script} \n")
    );
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err\n");
    // -i: stdin reaches the exec, and its end too.
    let mut exec = ctl
        .cmd(&["exec", "-i", "s1", "tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        exec.stdin
            .take()
            .unwrap()
            .write_all(b"hello exec\n")
            .unwrap();
    }
    let o = exec.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "HELLO EXEC\n");
    // -t: a pty of the caller's size.
    let o = in_terminal(&ctl, 30, 90, "exec -t s1 sh -c 'tty; stty size; exit 6'");
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(6), "{text}");
    assert!(
        text.contains("/dev/pts/") && text.contains("30 90"),
        "{text}"
    );
    // -u: resolved in the image's /etc/passwd (busybox's has nobody, 65534).
    let o = ctl.out(&["exec", "-u", "nobody", "s1", "id"]);
    assert!(o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("uid=65534(nobody) gid=65534(nogroup)"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = ctl.out(&["exec", "-u", "no-such-user", "s1", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no-such-user"));
    assert!(ctl.out(&["stop", "-t", "30", "s1"]).status.success());
    assert_eq!(
        wait_with_deadline(&mut child, Duration::from_secs(60)).code(),
        Some(7)
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(rest, "got TERM\n");
    let ps = stdout(&["ps", "-a"]);
    assert!(ps.contains("Exited (7)"), "{ps}");
    assert!(!stdout(&["ps"]).contains("s1"));
    assert!(ctl.out(&["rm", "s1"]).status.success());

    // kill -s KILL: no process can forward it, so the VM is killed; recorded as 137.
    let (mut child, _out) = run("k1", &[]);
    assert!(ctl.out(&["kill", "-s", "KILL", "k1"]).status.success());
    assert_eq!(
        wait_with_deadline(&mut child, Duration::from_secs(60)).code(),
        Some(137)
    );
    assert!(stdout(&["ps", "-a"]).contains("Exited (137)"));
    assert!(ctl.out(&["rm", "k1"]).status.success());

    // rm -f of a running --rm container.
    let (mut child, _out) = run("r1", &["--rm"]);
    assert!(
        !ctl.out(&["rm", "r1"]).status.success(),
        "rm without -f of a running container"
    );
    assert!(ctl.out(&["rm", "-f", "r1"]).status.success());
    assert_eq!(
        wait_with_deadline(&mut child, Duration::from_secs(60)).code(),
        Some(137)
    );
    ctl.assert_clean();
}

#[test]
fn volumes_are_shared_with_the_guest_read_write_and_read_only() {
    let Some(ctl) = Ctl::new("volumes_are_shared_with_the_guest_read_write_and_read_only") else {
        return;
    };
    let rw = ctl.dir.path().join("rw");
    let ro = ctl.dir.path().join("ro");
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(rw.join("from-host"), "host wrote this\n").unwrap();
    std::fs::write(ro.join("kept"), "read me\n").unwrap();
    let rw_arg = format!("{}:/data", rw.display());
    let ro_arg = format!("{}:/conf:ro", ro.display());
    // The container reads what the host wrote, writes back, and cannot write the ro one
    // (read-only in the container, and on the host's side too: virtiofsd serves it from a
    // read-only mount).
    let script = "cat /data/from-host /conf/kept; echo guest wrote this > /data/from-guest; \
                  echo x > /conf/nope 2>/dev/null && echo ro-written || echo ro-refused";
    let o = ctl.out(&[
        "run",
        "--rm",
        "--isolation",
        "vm",
        "-v",
        &rw_arg,
        "-v",
        &ro_arg,
        "berth-busybox",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "host wrote this\nread me\nro-refused\n"
    );
    assert_eq!(
        std::fs::read_to_string(rw.join("from-guest")).unwrap(),
        "guest wrote this\n"
    );
    assert!(!ro.join("nope").exists());
    ctl.assert_clean();
    // No virtiofsd of this test is left.
    let mine = ctl.dir.path().to_string_lossy().into_owned();
    let left: Vec<_> = processes()
        .into_iter()
        .filter(|(_, c)| c.contains("virtiofsd") && c.contains(&mine))
        .collect();
    assert!(left.is_empty(), "virtiofsd left: {left:?}");
}

#[test]
fn a_detached_vm_container_runs_under_its_monitor_with_logs_and_stop() {
    let Some(ctl) = Ctl::new("a_detached_vm_container_runs_under_its_monitor_with_logs_and_stop")
    else {
        return;
    };
    let o = ctl.out(&[
        "run",
        "-d",
        "--name",
        "bg",
        "--isolation",
        "vm",
        "berth-busybox",
        "sh",
        "-c",
        "echo started; trap 'echo bye; exit 3' TERM; sleep 600 & wait",
    ]);
    assert!(o.status.success());
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    let ps = String::from_utf8_lossy(&ctl.out(&["ps"]).stdout).into_owned();
    assert!(ps.contains("bg") && ps.contains("Up"), "{ps}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !String::from_utf8_lossy(&ctl.out(&["logs", "bg"]).stdout).contains("started") {
        assert!(Instant::now() < deadline, "no output in the logs");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(ctl.out(&["stop", "-t", "30", "bg"]).status.success());
    let logs = String::from_utf8_lossy(&ctl.out(&["logs", "bg"]).stdout).into_owned();
    assert!(logs.contains("started\nbye\n"), "{logs}");
    let ps = String::from_utf8_lossy(&ctl.out(&["ps", "-a"]).stdout).into_owned();
    assert!(ps.contains("Exited (3)"), "{ps}");
    assert!(ctl.out(&["rm", "bg"]).status.success());
    ctl.assert_clean();
}

#[test]
fn info_reports_the_accelerator_kernel_and_agent_or_what_is_missing() {
    let Some(ctl) = Ctl::new("info_reports_the_accelerator_kernel_and_agent_or_what_is_missing")
    else {
        return;
    };
    let o = ctl.out(&["info", "--format", "json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let accel = v["vm"]["accel"].as_str().unwrap();
    assert!(accel == "tcg" || accel == "kvm", "{v}");
    assert!(!v["vm"]["accel_reason"].as_str().unwrap().is_empty());
    assert_eq!(v["vm"]["kernel"]["version"], ctl.kernel_version.as_str());
    assert_eq!(
        v["vm"]["agent"]["path"],
        berth_testkit::static_agent().to_str().unwrap()
    );
    let o = ctl
        .cmd(&["info"])
        .env("BERTH_AGENT", "/nonexistent/berth-agent")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("vm agent:       unavailable: berth-agent /nonexistent/berth-agent"),
        "{text}"
    );
}

#[test]
fn an_image_with_more_layers_than_a_vm_takes_is_refused_clearly() {
    let Some(ctl) = Ctl::new("an_image_with_more_layers_than_a_vm_takes_is_refused_clearly") else {
        return;
    };
    let tree = ctl.dir.path().join("tree");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", tree.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", tree.join("bin/sh")).unwrap();
    let layout = Layout::new("deep");
    layout.insert("deep", &tree, "/");
    let f = ctl.dir.path().join("f");
    for i in 0..22 {
        std::fs::write(&f, format!("{i}\n")).unwrap();
        layout.insert("deep", &f, &format!("/layer{i}"));
    }
    let index_path = layout.path().join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] =
        "localhost/deep:latest".into();
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    assert!(ctl
        .out(&["load", "-i", layout.path().to_str().unwrap()])
        .status
        .success());
    let o = ctl.out(&["run", "--rm", "--isolation", "vm", "deep", "true"]);
    assert_eq!(o.status.code(), Some(125));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("the image has 23 layers; a VM takes at most 22 (one disk each)"),
        "{err}"
    );
    // Refused before any of its layers was made a disk.
    let disks = std::fs::read_dir(ctl.root().join("vm/layers"))
        .map(|rd| rd.count())
        .unwrap_or(0);
    assert_eq!(disks, 0);
    ctl.assert_clean();
}
