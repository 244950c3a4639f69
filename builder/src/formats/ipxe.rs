//! iPXE scripts. `NODE.ipxe` boots a node's image over HTTP from `${base}`
//! (set by `imgbuild serve`'s `/boot.ipxe` to the address the client used;
//! `http://${next-server}:8080` when chained to directly); downloads retry.

use crate::plan::NodePlan;

/// `NODE.ipxe`: the node's kernel, initramfs and config, all from `${base}`;
/// with `token`, every URL carries it (`imgbuild serve --token-secret`).
pub fn node_script(plan: &NodePlan, cmdline: &str, token: Option<&str>) -> String {
    let name = &plan.node.name;
    let cmdline = cmdline.trim();
    let (q, amp) = match token {
        Some(t) => (format!("?token={t}"), format!("&token={t}")),
        None => (String::new(), String::new()),
    };
    // A node picked by its machine's UUID takes its config by that UUID too,
    // not by a MAC that may be another node's (or none).
    let by = if plan.node.uuid.is_some() { "uuid=${uuid}&mac=${net0/mac}" } else { "mac=${net0/mac}" };
    format!(
        "#!ipxe\n\
         # {name} ({role}): imgbuild's image over HTTP.\n\
         isset ${{base}} || set base http://${{next-server}}:8080\n\
         set tries:int32 0\n\
         :fetch\n\
         kernel ${{base}}/assets/{name}/vmlinuz{q} initrd=initrd.img {cmdline} ignition.config.url=${{base}}/ignition?{by}{amp} && \
         initrd --name initrd.img ${{base}}/assets/{name}/initrd.img{q} && goto boot\n\
         inc tries\n\
         iseq ${{tries}} 10 && goto fail\n\
         echo download failed; retrying in 3 s\n\
         sleep 3\n\
         goto fetch\n\
         :boot\n\
         boot\n\
         :fail\n\
         echo {name}: giving up after ${{tries}} tries\n\
         shell\n",
        role = plan.node.role,
    )
}

/// `/boot.ipxe`: sets `${base}` to where this script came from and chains
/// to the node's script by MAC.
pub fn boot_script(base: &str) -> String {
    format!(
        "#!ipxe\n\
         set base {base}\n\
         set tries:int32 0\n\
         :chain\n\
         chain --autofree ${{base}}/ipxe?uuid=${{uuid}}&mac=${{net0/mac}} && exit\n\
         inc tries\n\
         iseq ${{tries}} 10 && shell\n\
         sleep 3\n\
         goto chain\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Cluster;
    use crate::plan::{plan, Selection};
    use crate::testutil::assert_golden;

    #[test]
    fn golden_scripts() {
        let p = plan(
            &Cluster::embedded_default(),
            &Selection { node: Some("worker-1".into()), ..Default::default() },
            Some(&crate::pki::test_pki()),
        )
        .unwrap();
        assert_golden(
            "golden/ipxe/worker-1.ipxe",
            &node_script(&p[0], "console=ttyS0,115200n8 panic=10 quiet\n", None),
        );
        assert_golden(
            "golden/ipxe/worker-1.token.ipxe",
            &node_script(&p[0], "console=ttyS0,115200n8 panic=10 quiet\n", Some("0123456789abcdef0123456789abcdef")),
        );
        assert_golden("golden/ipxe/boot.ipxe", &boot_script("http://10.0.2.2:8080"));
        let mut by_uuid = p[0].clone();
        by_uuid.node.uuid = Some("4c4c4544-0042-3510-8052-b2c04f4e4b31".into());
        assert_golden(
            "golden/ipxe/worker-1.uuid.ipxe",
            &node_script(&by_uuid, "console=ttyS0,115200n8 panic=10 quiet\n", Some("0123456789abcdef0123456789abcdef")),
        );
    }
}
