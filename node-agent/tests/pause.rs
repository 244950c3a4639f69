//! The pod sandbox image imgbuild builds (OCI layout, the static agent as
//! `/pause`), run by the real containerd and runc from Debian: imported with
//! no registry, it runs as the sandbox's PID 1, shrugs off SIGHUP, and ends
//! with status 0 on SIGTERM, as a runtime stops a sandbox.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{agent_bin, run as run_ok};

struct Containerd(std::process::Child);

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ctr(sock: &Path) -> Command {
    let mut c = Command::new("ctr");
    c.arg("--address").arg(sock).args(["--namespace", "imgbuild-test"]);
    c
}

fn task_status(sock: &Path, id: &str) -> String {
    let o = ctr(sock).args(["task", "ls"]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).lines().find(|l| l.starts_with(id)).unwrap_or_default().to_owned()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_pause_image_runs_under_real_containerd_and_stops_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = std::fs::read(agent_bin()).unwrap();
    let image = tmp.path().join("pause.tar");
    let pause = node_agent::runtime::oci::pause_image(&agent);
    std::fs::write(&image, pause.layout_tar().unwrap()).unwrap();
    let name = pause.name.clone();
    // A containerd of the test's own: its own root, state and socket.
    let sock = tmp.path().join("containerd.sock");
    let config = tmp.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n[grpc]\n  address = \"{1}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
            tmp.path().display(),
            sock.display()
        ),
    )
    .unwrap();
    let _containerd = Containerd(
        Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(tmp.path().join("containerd.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for("containerd's socket", || sock.exists() && ctr(&sock).arg("version").output().unwrap().status.success());
    let o = run_ok(ctr(&sock).args(["images", "import", "--snapshotter", "native"]).arg(&image));
    let imported = String::from_utf8_lossy(&o.stdout);
    assert!(imported.contains(&name), "{imported}");
    let mut run = ctr(&sock)
        .args(["run", "--rm", "--snapshotter", "native", &name, "sandbox-1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the sandbox to run", || task_status(&sock, "sandbox-1").contains("RUNNING"));
    // Not a signal that stops a sandbox: it keeps running.
    run_ok(ctr(&sock).args(["task", "kill", "--signal", "SIGHUP", "sandbox-1"]));
    std::thread::sleep(Duration::from_millis(500));
    assert!(task_status(&sock, "sandbox-1").contains("RUNNING"));
    // As the pause process it is the container's PID 1.
    let ps = run_ok(ctr(&sock).args(["task", "ps", "sandbox-1"]));
    assert_eq!(String::from_utf8_lossy(&ps.stdout).lines().count(), 2, "one process in the sandbox");
    run_ok(ctr(&sock).args(["task", "kill", "--signal", "SIGTERM", "sandbox-1"]));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = run.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the sandbox did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(0), "exit status of the sandbox: {err}");
}
