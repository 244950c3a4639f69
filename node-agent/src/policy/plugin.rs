//! `imgbuild-endpoint`, the last plugin of our conflist (as Calico's is in
//! its own): the agent's binary under that name in the CNI plugin folder.
//! On ADD it records the pod (the sandbox CNI was given, its address from
//! the previous plugin's result, namespace/name/uid from kubelet's
//! CNI_ARGS) in the agent's endpoints folder, and waits until the agent
//! says the pod's rules are in place: until the runtime gives the pod's
//! labels, those drop all of its traffic. On DEL it removes the record.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::Record;

/// The plugin's name in the conflist, and its file name.
pub const NAME: &str = "imgbuild-endpoint";
const VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];
/// How long ADD waits for the agent to put the pod's rules in place.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether this process was started as the plugin (by its file name).
pub fn invoked() -> bool {
    std::env::args_os().next().is_some_and(|a| Path::new(&a).file_name().is_some_and(|n| n == NAME))
}

/// Runs the CNI command in the environment and exits: 0, or 1 with a CNI
/// error on stdout.
pub fn main() -> ! {
    let mut stdin = String::new();
    let res = std::io::stdin().take(1 << 20).read_to_string(&mut stdin).context("reading the network config").and_then(
        |_| {
            let env = |k: &str| std::env::var(k).unwrap_or_default();
            command(&env("CNI_COMMAND"), &env("CNI_CONTAINERID"), &env("CNI_ARGS"), &stdin)
        },
    );
    match res {
        Ok(out) => {
            print!("{out}");
            std::process::exit(0)
        }
        Err(e) => {
            let err = json!({ "cniVersion": "1.0.0", "code": 999, "msg": format!("{NAME}: {e:#}") });
            println!("{err}");
            std::process::exit(1)
        }
    }
}

/// One CNI command; returns what goes to stdout.
pub fn command(cmd: &str, container: &str, args: &str, stdin: &str) -> Result<String> {
    if cmd == "VERSION" {
        return Ok(json!({ "cniVersion": "1.0.0", "supportedVersions": VERSIONS }).to_string());
    }
    let conf: Value = serde_json::from_str(stdin).context("the network config is not JSON")?;
    let run_dir = conf["runDir"].as_str().map(PathBuf::from).filter(|p| p.is_absolute());
    let run_dir = run_dir.context("the network config has no absolute runDir")?;
    if !imgbuild_policy::store::is_container_id(container) {
        bail!("CNI_CONTAINERID {container:?} is not a sandbox ID");
    }
    let record_path = run_dir.join("endpoints").join(format!("{container}.json"));
    match cmd {
        "ADD" => {
            let prev = conf.get("prevResult").cloned().context("no prevResult: the plugin chains after bridge")?;
            let ip = first_ipv4(&prev).context("the previous result has no IPv4 address")?;
            let arg = |k: &str| cni_arg(args, k).unwrap_or_default();
            let record = Record {
                sandbox: container.into(),
                ip,
                namespace: arg("K8S_POD_NAMESPACE"),
                name: arg("K8S_POD_NAME"),
                uid: arg("K8S_POD_UID"),
            };
            let text = serde_json::to_string(&record)?;
            crate::cni::write_atomic(&record_path, &text)?;
            if let Err(e) = sync(&run_dir, ACK_TIMEOUT) {
                let _ = std::fs::remove_file(&record_path);
                return Err(e.context("the node agent did not put the pod's policy rules in place"));
            }
            let mut out = prev;
            out["cniVersion"] = conf["cniVersion"].clone();
            Ok(out.to_string())
        }
        "DEL" => {
            match std::fs::remove_file(&record_path) {
                Ok(()) => {
                    // The agent follows the folder too; telling it is only faster.
                    let _ = sync(&run_dir, Duration::from_secs(2));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", record_path.display())),
            }
            Ok(String::new())
        }
        "CHECK" => {
            if !record_path.is_file() {
                bail!("the pod's endpoint is not recorded ({})", record_path.display());
            }
            Ok(String::new())
        }
        other => bail!("unknown CNI_COMMAND {other:?}"),
    }
}

/// Asks the agent to take the endpoints folder as it is now, and waits
/// for its `ok` (sent once the table is applied).
fn sync(run_dir: &Path, timeout: Duration) -> Result<()> {
    let socket = run_dir.join("agent.sock");
    let mut s = UnixStream::connect(&socket).with_context(|| format!("connecting to {}", socket.display()))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(b"sync\n")?;
    let mut line = String::new();
    BufReader::new(s.take(256)).read_line(&mut line).context("waiting for the agent")?;
    match line.trim_end() {
        "ok" => Ok(()),
        other => bail!("the agent answered {other:?}"),
    }
}

/// The first IPv4 address (without its prefix length) of a CNI result.
fn first_ipv4(result: &Value) -> Option<IpAddr> {
    result["ips"].as_array()?.iter().filter_map(|ip| ip["address"].as_str()).find_map(|a| {
        let ip: IpAddr = a.split('/').next()?.parse().ok()?;
        ip.is_ipv4().then_some(ip)
    })
}

/// One `KEY=VALUE` of CNI_ARGS (`;`-separated).
fn cni_arg(args: &str, key: &str) -> Option<String> {
    args.split(';').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_args_and_results() {
        let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=x;K8S_POD_NAME=a;K8S_POD_UID=u-1";
        assert_eq!(cni_arg(args, "K8S_POD_NAME").as_deref(), Some("a"));
        assert_eq!(cni_arg(args, "K8S_POD"), None);
        let r = json!({"ips": [{"address": "fd00::2/64"}, {"address": "10.1.5.2/24", "gateway": "10.1.5.1"}]});
        assert_eq!(first_ipv4(&r), Some("10.1.5.2".parse().unwrap()));
        assert_eq!(first_ipv4(&json!({})), None);
    }

    #[test]
    fn refuses_what_it_cannot_record_safely() {
        let conf =
            r#"{"cniVersion":"1.0.0","name":"n","type":"imgbuild-endpoint","runDir":"/tmp/x","prevResult":{"ips":[]}}"#;
        let e = command("ADD", "../../etc", "", conf).unwrap_err().to_string();
        assert!(e.contains("is not a sandbox ID"), "{e}");
        let e = command("ADD", "abc", "", conf).unwrap_err().to_string();
        assert!(e.contains("no IPv4 address"), "{e}");
        let e = command("ADD", "abc", "", &conf.replace("/tmp/x", "tmp/x")).unwrap_err().to_string();
        assert!(e.contains("no absolute runDir"), "{e}");
        assert!(command("VERSION", "", "", "").unwrap().contains("1.0.0"));
    }
}
