//! etcd's users and roles for a cluster with client certificates: etcd
//! takes a certificate's CN as the user name (over gRPC; its JSON gateway
//! ignores it), so each node is a user. The etcd members and the
//! administrator hold `root`; a node with pods reads the network config and
//! the policies and writes only the keys it owns: subnet leases, probe
//! addresses, and its own policy endpoints.

use anyhow::{Context, Result};
use node_config::EtcdAccess;

use crate::client::{prefix_end, Client};
use crate::keys;
use crate::pb::*;

/// The role every node with pods holds.
pub const NODE_ROLE: &str = "imgbuild-node";

/// A role and what it may touch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    pub perms: Vec<Permission>,
}

/// A user (a certificate CN) and its roles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub roles: Vec<String>,
}

fn key(perm_type: i32, key: &str) -> Permission {
    Permission { perm_type, key: key.as_bytes().to_vec(), range_end: vec![] }
}

fn prefix(perm_type: i32, prefix: &str) -> Permission {
    Permission { perm_type, key: prefix.as_bytes().to_vec(), range_end: prefix_end(prefix.as_bytes()) }
}

/// The role that lets `node` write its own policy endpoints.
pub fn node_role(node: &str) -> String {
    format!("{NODE_ROLE}:{node}")
}

/// The roles and users `access` asks for, in the order they are made.
pub fn plan(access: &EtcdAccess) -> (Vec<Role>, Vec<User>) {
    let mut roles = vec![
        Role { name: "root".into(), perms: vec![] },
        Role {
            name: NODE_ROLE.into(),
            perms: vec![
                key(PERM_READ, keys::NETWORK_CONFIG),
                prefix(PERM_READWRITE, keys::SUBNETS),
                prefix(PERM_READWRITE, keys::PROBES),
                prefix(PERM_READ, keys::POLICY),
            ],
        },
    ];
    let mut users = vec![User { name: "root".into(), roles: vec!["root".into()] }];
    users.extend(access.admins.iter().map(|a| User { name: a.clone(), roles: vec!["root".into()] }));
    for n in &access.nodes {
        let own = node_role(n);
        roles.push(Role { name: own.clone(), perms: vec![prefix(PERM_READWRITE, &keys::endpoints_of(n))] });
        users.push(User { name: n.clone(), roles: vec![NODE_ROLE.into(), own] });
    }
    (roles, users)
}

/// Whether an error says the thing is already there.
fn exists(e: &anyhow::Error) -> bool {
    format!("{e:#}").contains("already exists")
}

/// Makes every role and user of `access` (those already there are kept
/// and granted what they lack), then turns authentication on. Run by each
/// etcd member's agent, possibly at once, and again on every start: every
/// step may be repeated. Users are never deleted here: a member with an
/// older cluster file must not take a newer node's access away.
pub async fn ensure(client: &Client, access: &EtcdAccess) -> Result<()> {
    let (roles, users) = plan(access);
    for r in &roles {
        match client.role_add(&r.name).await {
            Err(e) if !exists(&e) => return Err(e).with_context(|| format!("adding etcd role {}", r.name)),
            _ => {}
        }
        for p in &r.perms {
            client.role_grant(&r.name, p.clone()).await.with_context(|| format!("granting etcd role {}", r.name))?;
        }
    }
    for u in &users {
        match client.user_add(&u.name).await {
            Err(e) if !exists(&e) => return Err(e).with_context(|| format!("adding etcd user {}", u.name)),
            _ => {}
        }
        for r in &u.roles {
            client.user_grant(&u.name, r).await.with_context(|| format!("granting {r} to etcd user {}", u.name))?;
        }
    }
    client.auth_enable().await.context("turning etcd authentication on")
}

/// The first release of each etcd line without the known ways past its
/// authorization (nested transactions, GHSA-rfx7-8w68-q57q; reads and
/// leases through puts nested in transactions, GHSA-x35m-3gp4-4fh5).
const FIXED: [(u32, u32, u32); 3] = [(3, 4, 44), (3, 5, 30), (3, 6, 11)];

/// Why roles do not hold on etcd `version` (its `Status` version), if a
/// known flaw lets a node's certificate past them.
pub fn known_bypass(version: &str) -> Option<String> {
    let mut parts = version.trim().split(['.', '-', '+']).map(|p| p.parse::<u32>());
    let (Some(Ok(major)), Some(Ok(minor)), Some(Ok(patch))) = (parts.next(), parts.next(), parts.next()) else {
        return Some(format!("etcd {version:?}: not a version this check knows; its authorization may be bypassable"));
    };
    let fixed = match FIXED.iter().find(|(ma, mi, _)| (*ma, *mi) == (major, minor)) {
        Some(f) => (major, minor, patch) >= *f,
        // Newer lines carry the fixes; older ones never got them.
        None => (major, minor) > (3, 6),
    };
    (!fixed).then(|| {
        format!(
            "etcd {version} has known ways past its authorization (GHSA-rfx7-8w68-q57q, GHSA-x35m-3gp4-4fh5; fixed in 3.4.44, 3.5.30, 3.6.11): a node's certificate can reach keys outside its role; use a fixed etcd ([artifacts] etcd)"
        )
    })
}

/// [`known_bypass`] for the etcd `client` reaches.
pub async fn bypass_warning(client: &Client) -> Result<Option<String>> {
    Ok(known_bypass(&client.status().await?.version))
}

impl Client {
    pub async fn role_add(&self, name: &str) -> Result<()> {
        let _: Empty = self.unary("Auth/RoleAdd", Name { name: name.into() }).await?;
        Ok(())
    }

    pub async fn role_grant(&self, role: &str, perm: Permission) -> Result<()> {
        let req = AuthRoleGrantPermissionRequest { name: role.into(), perm: Some(perm) };
        let _: Empty = self.unary("Auth/RoleGrantPermission", req).await?;
        Ok(())
    }

    /// A user without a password: only a certificate with its CN is it.
    pub async fn user_add(&self, name: &str) -> Result<()> {
        let req = AuthUserAddRequest {
            name: name.into(),
            password: String::new(),
            options: Some(UserAddOptions { no_password: true }),
        };
        let _: Empty = self.unary("Auth/UserAdd", req).await?;
        Ok(())
    }

    pub async fn user_grant(&self, user: &str, role: &str) -> Result<()> {
        let req = AuthUserGrantRoleRequest { user: user.into(), role: role.into() };
        let _: Empty = self.unary("Auth/UserGrantRole", req).await?;
        Ok(())
    }

    /// The roles of `user`.
    pub async fn user_roles(&self, user: &str) -> Result<Vec<String>> {
        let r: AuthUserGetResponse = self.unary("Auth/UserGet", Name { name: user.into() }).await?;
        Ok(r.roles)
    }

    pub async fn auth_enable(&self) -> Result<()> {
        let _: Empty = self.unary("Auth/AuthEnable", Empty {}).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_with_known_bypasses_are_named() {
        for v in ["3.4.23", "3.4.43", "3.5.29", "3.6.10", "3.3.27", "junk"] {
            assert!(known_bypass(v).is_some(), "{v}");
        }
        for v in ["3.4.44", "3.5.30", "3.6.11", "3.7.0", "3.4.45-rc.0"] {
            assert_eq!(known_bypass(v), None, "{v}");
        }
    }

    #[test]
    fn nodes_get_their_own_endpoints_and_shared_reads() {
        let access = EtcdAccess { admins: vec!["etcd-1".into(), "imgbuild:admin".into()], nodes: vec!["w1".into()] };
        let (roles, users) = plan(&access);
        let names: Vec<_> = users.iter().map(|u| (u.name.as_str(), u.roles.join("+"))).collect();
        assert_eq!(
            names,
            [
                ("root", "root".into()),
                ("etcd-1", "root".into()),
                ("imgbuild:admin", "root".into()),
                ("w1", "imgbuild-node+imgbuild-node:w1".to_string())
            ]
        );
        let own = roles.iter().find(|r| r.name == "imgbuild-node:w1").unwrap();
        assert_eq!(own.perms[0].key, b"/imgbuild/policy/v1/endpoints/w1/");
        assert_eq!(own.perms[0].range_end, b"/imgbuild/policy/v1/endpoints/w10");
        let shared = roles.iter().find(|r| r.name == NODE_ROLE).unwrap();
        // The network config is read, never written.
        assert_eq!(shared.perms[0], key(PERM_READ, "/coreos.com/network/config"));
        assert!(shared.perms.iter().all(|p| p.perm_type == PERM_READ || p.key != b"/imgbuild/policy/v1/"));
    }
}
