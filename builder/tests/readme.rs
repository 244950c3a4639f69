//! Every command in the README works as written. The commands a reader can
//! run here run in order in one shell, in a scratch folder whose
//! `target/x86_64-unknown-linux-gnu/release/` holds the binaries this test
//! was built with; the others are run by the test named for them (booting a
//! Flatcar image, Vagrant, etcdctl, the suite itself). A command added to
//! the README without a place here fails this test.

mod common;

use std::path::Path;

use common::{agent_path, test_cache};

/// Run here, in this order. `cargo build --release && ` is what building
/// this test already did.
const RUN: &[&str] = &[
    "cargo build --release && ./target/x86_64-unknown-linux-gnu/release/imgbuild --role worker",
    "export PATH=$PWD/target/x86_64-unknown-linux-gnu/release:$PATH",
    "imgbuild init",
    "imgbuild --all --cluster cluster.toml",
    "imgbuild completions bash > imgbuild.bash",
    "imgbuild man > imgbuild.1",
    "imgbuild --node worker-1 --only ignition",
    "imgbuild --all --agent-url https://boot.example.internal/assets --stub-url https://boot.example.internal --out cloud",
    "node-agent check --ignition out/worker-1/worker-1.ign",
    "imgbuild policy test --pods policy/tests/cluster/pods.yaml --policies policy/tests/cluster/policies",
];

/// Run elsewhere: (command, file, what that file holds that runs it).
const ELSEWHERE: &[(&str, &str, &str)] = &[
    ("bash tests/run.sh", ".ci/run", "bash tests/run.sh"),
    ("imgbuild up --check --cluster cluster.toml", "builder/tests/up.rs", "fn up_check_passes_on_the_reference_cluster("),
    // No Flatcar image comes from Debian's registry: real Ignition applies
    // and validates every role's NODE.ign instead.
    (
        "qemu-system-x86_64 -m 2048 -accel kvm -nographic -drive if=virtio,file=flatcar_production_qemu_image.img -fw_cfg name=opt/org.flatcar-linux/config,file=out/worker-1/worker-1.ign",
        "builder/tests/ignition_apply.rs",
        "fn every_role_validates_and_applies(",
    ),
    (
        "./target/x86_64-unknown-linux-gnu/release/imgbuild --all   # boxes into out/",
        "builder/tests/vagrant.rs",
        "fn vagrant_up_gives_a_cluster_whose_pods_reach_each_other(",
    ),
    (
        "cd vagrant && vagrant up                                   # adds the boxes itself",
        "builder/tests/vagrant.rs",
        "fn vagrant_up_gives_a_cluster_whose_pods_reach_each_other(",
    ),
    (
        "vagrant ssh worker-1 -c 'cat /run/flannel/subnet.env'",
        "builder/tests/vagrant.rs",
        "fn vagrant_up_gives_a_cluster_whose_pods_reach_each_other(",
    ),
    (
        "etcdctl --endpoints https://172.17.8.101:2379 --cacert ca.crt --cert admin.crt --key admin.key get --prefix /coreos.com/network/",
        "builder/tests/etcd_tls.rs",
        "fn only_holders_of_the_cluster_ca_certificates_reach_etcd(",
    ),
    ("bash release/build.sh", ".ci/run", "bash release/build.sh"),
    ("imgbuild etcd status --cluster cluster.toml", "builder/tests/etcd_admin.rs", "fn status_membership_snapshot_and_restore("),
    (
        "imgbuild etcd access --cluster cluster.toml",
        "builder/tests/etcd_admin.rs",
        "fn access_makes_users_and_turns_authentication_on(",
    ),
    (
        "imgbuild etcd snapshot backup.db --cluster cluster.toml",
        "builder/tests/etcd_admin.rs",
        "fn status_membership_snapshot_and_restore(",
    ),
    (
        "imgbuild policy apply -f policies/ --cluster cluster.toml",
        "builder/tests/policy.rs",
        "fn apply_get_and_delete_against_a_real_etcd_with_client_certificates(",
    ),
    (
        "imgbuild policy get prod/web --cluster cluster.toml",
        "builder/tests/policy.rs",
        "fn apply_get_and_delete_against_a_real_etcd_with_client_certificates(",
    ),
    (
        "imgbuild policy label prod/web-1 tier=front canary- --cluster cluster.toml",
        "builder/tests/policy.rs",
        "fn apply_get_and_delete_against_a_real_etcd_with_client_certificates(",
    ),
    (
        "cargo fmt --all && cargo clippy --workspace --all-targets -- -D warnings",
        ".ci/run",
        "cargo clippy --workspace --all-targets",
    ),
    (
        "UPDATE_GOLDEN=1 cargo test --workspace   # rewrite golden files after an intended change",
        "testkit/src/lib.rs",
        "fn update_golden_rewrites_the_file(",
    ),
];

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The README's command lines: indented code blocks outside fences.
fn readme_commands() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let (mut fenced, mut prev_blank, mut in_block) = (false, true, false);
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            prev_blank = false;
            continue;
        }
        let code = !fenced && line.starts_with("    ") && !line.trim().is_empty() && (prev_blank || in_block);
        if code {
            out.push(line.trim().to_owned());
        }
        in_block = code;
        prev_blank = line.trim().is_empty();
    }
    out
}

#[test]
fn every_readme_command_has_a_test() {
    let commands = readme_commands();
    assert!(commands.len() >= 15, "{commands:?}");
    for c in &commands {
        let known = RUN.contains(&c.as_str()) || ELSEWHERE.iter().any(|(e, _, _)| e == c);
        assert!(known, "README command without a test: {c}\n(add it to RUN or ELSEWHERE in builder/tests/readme.rs)");
    }
    for c in RUN.iter().chain(ELSEWHERE.iter().map(|(c, _, _)| c)) {
        assert!(commands.iter().any(|r| r == c), "not in the README any more: {c}");
    }
    for (c, file, holds) in ELSEWHERE {
        let text = std::fs::read_to_string(repo().join(file)).unwrap_or_default();
        assert!(text.contains(holds), "{file} does not hold {holds:?}, which runs: {c}");
    }
}

#[test]
fn readme_commands_run_as_written() {
    common::require_tool("bash");
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("target/x86_64-unknown-linux-gnu/release");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_imgbuild"), bin.join("imgbuild")).unwrap();
    std::os::unix::fs::symlink(agent_path(), bin.join("node-agent")).unwrap();
    // The repository's example policies, where the README names them.
    std::os::unix::fs::symlink(repo().join("policy"), tmp.path().join("policy")).unwrap();
    let mut script = String::from("set -euo pipefail\n");
    for c in RUN {
        script.push_str(c.strip_prefix("cargo build --release && ").unwrap_or(c));
        script.push('\n');
    }
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(tmp.path())
        .env("IMGBUILD_CACHE", test_cache())
        .env("HOME", tmp.path())
        .env("XDG_DATA_HOME", tmp.path().join("data"))
        .env_remove("IMGBUILD_AGENT")
        .output()
        .unwrap();
    let said = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{script}\n{said}");
    let d = tmp.path();
    for f in [
        "cluster.toml",
        "out/etcd-1/etcd-1.box",
        "out/master-1/master-1.ipxe",
        "out/worker-1/worker-1.ign",
        "cloud/worker-1/worker-1.stub.ign",
        "cloud/worker-1/node-agent",
        "imgbuild.bash",
        "imgbuild.1",
    ] {
        assert!(d.join(f).is_file(), "{f} was not written:\n{said}");
    }
    assert!(said.contains("node-agent: config out/worker-1/worker-1.ign ok: node worker-1 role worker"), "{said}");
    assert!(said.contains("dev/client prod/web 80/TCP allow\n"), "{said}");
    let stub = std::fs::read(d.join("cloud/worker-1/worker-1.stub.ign")).unwrap();
    assert!(stub.len() < 16 * 1024, "the stub fits AWS's 16 KiB user data: {} bytes", stub.len());
}

/// The README's picture is drawn from its source (`UPDATE_GOLDEN=1` redraws it).
#[test]
fn architecture_picture_is_drawn_from_its_source() {
    common::require_tool("dot");
    let out = std::process::Command::new("dot")
        .args(["-Tsvg", "architecture.dot"])
        .current_dir(repo().join("docs"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    testkit::assert_golden(&repo().join("docs/architecture.svg"), &String::from_utf8(out.stdout).unwrap());
}
