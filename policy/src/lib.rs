//! Kubernetes NetworkPolicy (`networking.k8s.io/v1`), the policy language
//! users already know: manifests read from YAML or JSON and refused with
//! the document's index and the field's path, and an evaluator that says
//! whether one pod may reach another on a port exactly as Kubernetes
//! defines it. The builder's `imgbuild policy` commands use it; the agent's
//! enforcement compiles the same model to nftables ([`nft`]), from what
//! [`store`] reads back from etcd.

mod eval;
mod load;
mod model;
pub mod nft;
mod pods;
mod selector;
pub mod store;
mod strict;

pub use eval::{Cluster, Verdict};
pub use load::{check_label, is_object_name, load_manifests, parse_manifests, Manifests};
pub use model::{
    EgressRule, IngressRule, IntOrString, IpBlock, LabelSelector, Labels, Namespace, NetworkPolicy, Operator, Peer,
    PolicyPort, PolicyType, Protocol, Requirement, Rule,
};
pub use pods::{load_pods, parse_pods, Pod, PodPort, PodsFile};

/// A refused input: where (file, document index, field path) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {}{reason}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
pub struct Invalid {
    pub origin: String,
    /// `documents[N].spec...` for manifests, the field path for a pods file.
    pub field: String,
    pub reason: String,
}

impl Invalid {
    pub fn new(origin: impl Into<String>, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Invalid { origin: origin.into(), field: field.into(), reason: reason.into() }
    }
}

/// Kubernetes' own label for a namespace's name, set on every namespace.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
