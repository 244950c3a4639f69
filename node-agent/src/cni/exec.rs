//! Running the CNI plugins exactly as kubelet (through its container
//! runtime, via libcni) does: each plugin of the conflist in order with the
//! CNI_* environment, the plugin's config plus `name`, `cniVersion` and the
//! previous result on stdin; `loopback` for `lo` on its own.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// One pod sandbox, as kubelet describes it to CNI.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub container_id: String,
    pub netns: PathBuf,
    pub namespace: String,
    pub name: String,
    /// More `KEY=VALUE` CNI_ARGS (host-local reads `IP` to pin an address).
    pub extra_args: Vec<(String, String)>,
}

impl Sandbox {
    fn cni_args(&self) -> String {
        let mut s = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
            self.namespace, self.name, self.container_id
        );
        for (k, v) in &self.extra_args {
            s.push_str(&format!(";{k}={v}"));
        }
        s
    }
}

/// The plugins' view of one conflist.
pub struct Runner {
    pub conflist: Value,
    pub bin_dir: PathBuf,
}

impl Runner {
    pub fn load(conflist: &Path, bin_dir: &Path) -> Result<Self> {
        let text = std::fs::read(conflist).with_context(|| format!("reading {}", conflist.display()))?;
        let conflist = serde_json::from_slice(&text).with_context(|| format!("parsing {}", conflist.display()))?;
        Ok(Runner { conflist, bin_dir: bin_dir.to_owned() })
    }

    /// ADD: `lo` up, then each plugin on `eth0`; returns the final result.
    pub fn add(&self, sb: &Sandbox) -> Result<Value> {
        let lo = json!({ "cniVersion": self.version(), "name": "cni-loopback", "type": "loopback" });
        self.exec("ADD", &lo, sb, "lo")?;
        let mut prev: Option<Value> = None;
        for plugin in self.plugins()? {
            let conf = self.plugin_conf(plugin, prev.as_ref());
            prev = Some(self.exec("ADD", &conf, sb, "eth0")?);
        }
        prev.context("the conflist has no plugins")
    }

    /// DEL: each plugin in reverse order; missing state is not an error.
    pub fn del(&self, sb: &Sandbox) -> Result<()> {
        for plugin in self.plugins()?.iter().rev() {
            self.exec("DEL", &self.plugin_conf(plugin, None), sb, "eth0")?;
        }
        Ok(())
    }

    fn version(&self) -> Value {
        self.conflist["cniVersion"].clone()
    }

    fn plugins(&self) -> Result<&Vec<Value>> {
        self.conflist["plugins"].as_array().context("conflist has no plugins array")
    }

    fn plugin_conf(&self, plugin: &Value, prev: Option<&Value>) -> Value {
        let mut conf = plugin.clone();
        conf["name"] = self.conflist["name"].clone();
        conf["cniVersion"] = self.version();
        if let Some(p) = prev {
            conf["prevResult"] = p.clone();
        }
        // Capabilities become runtimeConfig; kubelet passes none for a probe pod.
        if conf["capabilities"]["portMappings"] == json!(true) {
            conf["runtimeConfig"] = json!({ "portMappings": [] });
        }
        conf
    }

    fn exec(&self, command: &str, conf: &Value, sb: &Sandbox, ifname: &str) -> Result<Value> {
        let kind = conf["type"].as_str().context("plugin config has no type")?;
        let bin = self.bin_dir.join(kind);
        let mut child = Command::new(&bin)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &sb.container_id)
            .env("CNI_NETNS", &sb.netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", &self.bin_dir)
            .env("CNI_ARGS", sb.cni_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running CNI plugin {}", bin.display()))?;
        child.stdin.take().expect("piped").write_all(conf.to_string().as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "CNI {command} {kind}: {} {}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&out.stdout).with_context(|| format!("CNI {command} {kind}: result is not JSON"))
    }
}

/// The first IPv4 address of a CNI result (`ips[].address`, CIDR form).
pub fn result_ipv4(result: &Value) -> Option<std::net::Ipv4Addr> {
    result["ips"].as_array()?.iter().find_map(|ip| ip["address"].as_str()?.split('/').next()?.parse().ok())
}
