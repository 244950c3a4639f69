//! A CRI client over containerd's unix socket, as kubelet calls it, for
//! plain (blocking) test code: sandboxes with Kubernetes metadata, their
//! status, containers in them, and commands run inside.

use std::path::Path;

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
pub use k8s_cri::v1::*;
use tonic::transport::Channel;

pub struct Cri {
    rt: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
}

/// A pod as kubelet describes one: name, namespace, uid and an `app`
/// label, in a network namespace of its own.
pub fn pod_config(namespace: &str, name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            namespace: namespace.into(),
            uid: format!("uid-{namespace}-{name}"),
            attempt: 0,
        }),
        hostname: name.into(),
        labels: [("app".to_owned(), name.to_owned())].into(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Cri {
    /// Connects to the runtime's socket (it must be there).
    pub fn connect(socket: &Path) -> Cri {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let socket = socket.to_owned();
        let connector = tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        // The URI is a placeholder: the connector dials the socket.
        let endpoint = tonic::transport::Endpoint::from_static("http://localhost");
        let channel = rt.block_on(endpoint.connect_with_connector(connector)).expect("connecting to the CRI socket");
        Cri { rt, client: RuntimeServiceClient::new(channel) }
    }

    /// The runtime's own status: conditions (RuntimeReady, NetworkReady)
    /// and, verbose, its config as JSON (`info`).
    pub fn status(&mut self) -> StatusResponse {
        self.rt.block_on(self.client.status(StatusRequest { verbose: true })).unwrap().into_inner()
    }

    pub fn run_sandbox(&mut self, config: &PodSandboxConfig) -> Result<String, tonic::Status> {
        let req = RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
        self.rt.block_on(self.client.run_pod_sandbox(req)).map(|r| r.into_inner().pod_sandbox_id)
    }

    /// The sandbox's pod IP from `PodSandboxStatus` ("" when it has none).
    pub fn sandbox_ip(&mut self, id: &str) -> String {
        let req = PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: false };
        let status = self.rt.block_on(self.client.pod_sandbox_status(req)).unwrap().into_inner();
        status.status.and_then(|s| s.network).map(|n| n.ip).unwrap_or_default()
    }

    /// `StopPodSandbox`, then `RemovePodSandbox`, as kubelet ends a pod.
    pub fn remove_sandbox(&mut self, id: &str) {
        let stop = StopPodSandboxRequest { pod_sandbox_id: id.into() };
        self.rt.block_on(self.client.stop_pod_sandbox(stop)).unwrap();
        let remove = RemovePodSandboxRequest { pod_sandbox_id: id.into() };
        self.rt.block_on(self.client.remove_pod_sandbox(remove)).unwrap();
    }

    /// Creates and starts a container of `image` (its own entrypoint) in a sandbox.
    pub fn start_container(&mut self, sandbox: &str, config: &PodSandboxConfig, name: &str, image: &str) -> String {
        self.start_container_annotated(sandbox, config, name, image, &[])
    }

    /// As [`Cri::start_container`], with container annotations (kubelet
    /// puts a container's ports in `io.kubernetes.container.ports`).
    pub fn start_container_annotated(
        &mut self,
        sandbox: &str,
        config: &PodSandboxConfig,
        name: &str,
        image: &str,
        annotations: &[(&str, &str)],
    ) -> String {
        let container = ContainerConfig {
            metadata: Some(ContainerMetadata { name: name.into(), attempt: 0 }),
            image: Some(ImageSpec { image: image.into(), ..Default::default() }),
            annotations: annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        };
        let req = CreateContainerRequest {
            pod_sandbox_id: sandbox.into(),
            config: Some(container),
            sandbox_config: Some(config.clone()),
        };
        let id = self.rt.block_on(self.client.create_container(req)).unwrap().into_inner().container_id;
        let start = StartContainerRequest { container_id: id.clone() };
        self.rt.block_on(self.client.start_container(start)).unwrap();
        id
    }

    /// Runs `cmd` in a container (`ExecSync`): exit code, stdout + stderr.
    pub fn exec(&mut self, container: &str, cmd: &[&str]) -> (i32, String) {
        let req = ExecSyncRequest {
            container_id: container.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 30,
        };
        let r = self.rt.block_on(self.client.exec_sync(req)).unwrap().into_inner();
        (r.exit_code, format!("{}{}", String::from_utf8_lossy(&r.stdout), String::from_utf8_lossy(&r.stderr)))
    }
}
