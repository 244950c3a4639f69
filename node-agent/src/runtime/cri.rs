//! The CRI calls the agent makes itself, over containerd's socket, as
//! kubelet makes them: its probe pod is a real sandbox. Only the messages
//! and fields used are declared, with the field numbers of the CRI proto
//! (`runtime.v1`); protobuf skips what a side does not know, both ways.
//! The tests speak to containerd through the generated client instead.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tonic::transport::Channel;

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub uid: String,
    #[prost(string, tag = "3")]
    pub namespace: String,
    #[prost(uint32, tag = "4")]
    pub attempt: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxConfig {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<PodSandboxMetadata>,
    #[prost(string, tag = "2")]
    pub hostname: String,
    #[prost(map = "string, string", tag = "6")]
    pub labels: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RunPodSandboxRequest {
    #[prost(message, optional, tag = "1")]
    config: Option<PodSandboxConfig>,
    #[prost(string, tag = "2")]
    runtime_handler: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RunPodSandboxResponse {
    #[prost(string, tag = "1")]
    pod_sandbox_id: String,
}

/// The request of PodSandboxStatus, StopPodSandbox and RemovePodSandbox
/// (`verbose` is field 2 of the first alone).
#[derive(Clone, PartialEq, prost::Message)]
struct SandboxRequest {
    #[prost(string, tag = "1")]
    pod_sandbox_id: String,
    #[prost(bool, tag = "2")]
    verbose: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

#[derive(Clone, PartialEq, prost::Message)]
struct PodSandboxStatusResponse {
    #[prost(message, optional, tag = "1")]
    status: Option<PodSandboxStatus>,
    #[prost(map = "string, string", tag = "2")]
    info: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PodSandboxStatus {
    #[prost(message, optional, tag = "5")]
    network: Option<PodSandboxNetworkStatus>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PodSandboxNetworkStatus {
    #[prost(string, tag = "1")]
    ip: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ListPodSandboxRequest {
    #[prost(message, optional, tag = "1")]
    filter: Option<PodSandboxFilter>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PodSandboxFilter {
    #[prost(map = "string, string", tag = "3")]
    label_selector: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ListPodSandboxResponse {
    #[prost(message, repeated, tag = "1")]
    items: Vec<PodSandbox>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PodSandbox {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(message, optional, tag = "2")]
    metadata: Option<PodSandboxMetadata>,
    #[prost(map = "string, string", tag = "5")]
    labels: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ListContainersRequest {
    #[prost(message, optional, tag = "1")]
    filter: Option<ContainerFilter>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ContainerFilter {
    #[prost(string, tag = "3")]
    pod_sandbox_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ListContainersResponse {
    #[prost(message, repeated, tag = "1")]
    containers: Vec<Container>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Container {
    #[prost(string, tag = "2")]
    pod_sandbox_id: String,
    #[prost(map = "string, string", tag = "9")]
    annotations: HashMap<String, String>,
}

/// A sandbox as ListPodSandbox gives it: the pod's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub id: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: HashMap<String, String>,
}

/// What PodSandboxStatus says of a sandbox's network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxNetwork {
    pub ip: String,
    /// The sandbox's network namespace (from the verbose runtime spec).
    pub netns: PathBuf,
}

/// A CRI client on a runtime's socket.
pub struct Cri {
    grpc: tonic::client::Grpc<Channel>,
}

const SERVICE: &str = "/runtime.v1.RuntimeService/";

impl Cri {
    pub async fn connect(socket: &Path) -> Result<Cri> {
        let socket = socket.to_owned();
        let connector = tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        // The URI is a placeholder: the connector dials the socket.
        let channel = tonic::transport::Endpoint::from_static("http://localhost")
            .connect_with_connector(connector)
            .await
            .context("connecting to the CRI socket")?;
        Ok(Cri { grpc: tonic::client::Grpc::new(channel) })
    }

    async fn call<Req, Resp>(&mut self, method: &'static str, req: Req) -> Result<Resp>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        self.grpc.ready().await.context("CRI channel")?;
        let path = http::uri::PathAndQuery::try_from(format!("{SERVICE}{method}")).expect("a valid path");
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        let resp = self.grpc.unary(tonic::Request::new(req), path, codec).await.with_context(|| method.to_owned())?;
        Ok(resp.into_inner())
    }

    pub async fn run_sandbox(&mut self, config: PodSandboxConfig) -> Result<String> {
        let req = RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() };
        let resp: RunPodSandboxResponse = self.call("RunPodSandbox", req).await?;
        Ok(resp.pod_sandbox_id)
    }

    pub async fn sandbox_network(&mut self, id: &str) -> Result<SandboxNetwork> {
        let req = SandboxRequest { pod_sandbox_id: id.into(), verbose: true };
        let resp: PodSandboxStatusResponse = self.call("PodSandboxStatus", req).await?;
        let ip = resp.status.and_then(|s| s.network).map(|n| n.ip).unwrap_or_default();
        let netns = resp.info.get("info").and_then(|i| netns_of(i)).context("no network namespace in the status")?;
        Ok(SandboxNetwork { ip, netns })
    }

    /// Every sandbox the runtime has, with its pod's identity.
    pub async fn sandboxes(&mut self) -> Result<Vec<Sandbox>> {
        let list: ListPodSandboxResponse = self.call("ListPodSandbox", ListPodSandboxRequest { filter: None }).await?;
        Ok(list
            .items
            .into_iter()
            .map(|s| {
                let m = s.metadata.unwrap_or_default();
                Sandbox { id: s.id, namespace: m.namespace, name: m.name, uid: m.uid, labels: s.labels }
            })
            .collect())
    }

    /// Every container's sandbox and annotations (kubelet puts a
    /// container's ports, with their names, in `io.kubernetes.container.ports`).
    pub async fn container_annotations(&mut self) -> Result<Vec<(String, HashMap<String, String>)>> {
        let list: ListContainersResponse = self.call("ListContainers", ListContainersRequest { filter: None }).await?;
        Ok(list.containers.into_iter().map(|c| (c.pod_sandbox_id, c.annotations)).collect())
    }

    /// Stops and removes every sandbox with all of `labels`.
    pub async fn remove_labelled(&mut self, labels: &HashMap<String, String>) -> Result<usize> {
        let req = ListPodSandboxRequest { filter: Some(PodSandboxFilter { label_selector: labels.clone() }) };
        let list: ListPodSandboxResponse = self.call("ListPodSandbox", req).await?;
        for s in &list.items {
            let req = SandboxRequest { pod_sandbox_id: s.id.clone(), verbose: false };
            let _: Empty = self.call("StopPodSandbox", req.clone()).await?;
            let _: Empty = self.call("RemovePodSandbox", req).await?;
        }
        Ok(list.items.len())
    }
}

/// The network namespace path in containerd's verbose sandbox info (its
/// runtime spec's namespaces).
fn netns_of(info: &str) -> Option<PathBuf> {
    let v: serde_json::Value = serde_json::from_str(info).ok()?;
    let namespaces = v["runtimeSpec"]["linux"]["namespaces"].as_array()?;
    namespaces.iter().find(|n| n["type"] == "network").and_then(|n| n["path"].as_str()).map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// The bytes of a RunPodSandboxRequest as the CRI proto numbers them.
    #[test]
    fn fields_carry_the_proto_numbers() {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata { name: "p".into(), uid: "u".into(), namespace: "n".into(), attempt: 1 }),
            hostname: "h".into(),
            labels: [("k".to_owned(), "v".to_owned())].into(),
        };
        let bytes = RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() }.encode_to_vec();
        let want: &[u8] = &[
            0x0a, 24, // field 1 (config), 24 bytes
            0x0a, 11, 0x0a, 1, b'p', 0x12, 1, b'u', 0x1a, 1, b'n', 0x20,
            1, // metadata: name 1, uid 2, namespace 3, attempt 4
            0x12, 1, b'h', // hostname 2
            0x32, 6, 0x0a, 1, b'k', 0x12, 1, b'v', // labels 6: a map entry (key 1, value 2)
        ];
        assert_eq!(bytes, want);
    }

    #[test]
    fn netns_comes_from_the_runtime_spec() {
        let info = r#"{"pid":42,"runtimeSpec":{"linux":{"namespaces":[{"type":"pid"},{"type":"network","path":"/var/run/netns/cni-1"}]}}}"#;
        assert_eq!(netns_of(info), Some(PathBuf::from("/var/run/netns/cni-1")));
        assert_eq!(netns_of("{}"), None);
    }
}
