//! Vagrant boxes for the libvirt provider, and the box catalog that gives
//! `vagrant box add` versions and checksums.
//!
//! A box is a tar of `metadata.json`, a box `Vagrantfile`, `box.img` (a blank
//! qcow2 disk: vda, which an etcd node formats for its data) and the node's
//! kernel and box initramfs, which the box Vagrantfile boots directly
//! (vagrant-libvirt's `kernel`/`initrd`/`cmd_line`).

use anyhow::Result;
use serde_json::json;

use super::qcow2;

/// The blank data disk's size; vagrant-libvirt reads it from metadata.json.
pub const DISK_GIB: u64 = 2;

/// One node's box contents.
pub struct BoxSpec<'a> {
    pub node: &'a str,
    pub role: &'a str,
    pub cluster: &'a str,
    pub vmlinuz: &'a [u8],
    pub initrd: &'a [u8],
    /// The kernel command line, without a trailing newline.
    pub cmdline: &'a str,
    pub mtime: u32,
}

/// `metadata.json` as vagrant-libvirt reads it.
pub fn metadata() -> String {
    let m = json!({ "provider": "libvirt", "format": "qcow2", "virtual_size": DISK_GIB, "architecture": "amd64" });
    format!("{}\n", serde_json::to_string_pretty(&m).expect("JSON value"))
}

/// The box's own Vagrantfile: the defaults every machine from this box gets.
pub fn box_vagrantfile(b: &BoxSpec) -> String {
    format!(
        r##"# imgbuild box: node {node} ({role}) of cluster {cluster}.
# Boots this box's kernel and initramfs directly (PID 1 is node-agent); vda is
# a blank disk that an etcd node formats for its data.
# digest/sha2 itself, not "digest": Digest::SHA256 autoloaded by several
# threads at once fails ("Digest::Base cannot be directly inherited").
require "digest/sha2"
require "securerandom"

# QEMU runs as libvirt-qemu, which cannot enter a private home holding this
# box: where we may, boot from copies in libvirt's own boot directory, named
# and checked by their sha256. Local variables, not a method: every box's
# Vagrantfile is loaded into the same Ruby process, and a method (with its
# __dir__) would be redefined by the last box loaded.
# vagrant-libvirt loads machines in parallel threads, and boxes of one kernel
# share its copy: each copy goes through a temporary name of its own (created
# exclusively, never through a link), is checked, then renamed into place.
imgbuild_box_dir = __dir__
imgbuild_boot_file = lambda do |name, digest|
  src = File.join(imgbuild_box_dir, name)
  dir = "/var/lib/libvirt/boot"
  return src unless File.directory?(dir) && File.writable?(dir)
  dest = File.join(dir, "imgbuild-#{{digest[0, 16]}}-#{{name}}")
  ok = lambda {{ |path| File.file?(path) && !File.symlink?(path) && Digest::SHA256.file(path).hexdigest == digest }}
  return dest if ok.call(dest)
  tmp = "#{{dest}}.#{{Process.pid}}-#{{SecureRandom.hex(8)}}.tmp"
  begin
    File.open(tmp, File::WRONLY | File::CREAT | File::EXCL, 0o600) {{ |f| File.open(src, "rb") {{ |s| IO.copy_stream(s, f) }} }}
    raise "#{{src}}: its sha256 is not #{{digest}}: the box is damaged" unless ok.call(tmp)
    File.chmod(0o644, tmp)
    File.rename(tmp, dest)
  ensure
    File.unlink(tmp) if File.exist?(tmp)
  end
  dest
end

Vagrant.configure("2") do |config|
  config.vm.synced_folder ".", "/vagrant", disabled: true
  # The image has no package manager or sudo: it accepts only Vagrant's
  # insecure key, and its shell is busybox sh.
  config.ssh.insert_key = false
  config.ssh.shell = "sh"
  config.ssh.sudo_command = "%c" # the box's user is already root
  config.vm.provider :libvirt do |lv|
    # KVM only where the CPU offers it; TCG otherwise.
    kvm = File.writable?("/dev/kvm") && File.read("/proc/cpuinfo").match?(/\b(vmx|svm)\b/)
    lv.driver = ENV.fetch("IMGBUILD_LIBVIRT_DRIVER", kvm ? "kvm" : "qemu")
    lv.memory = 512
    lv.cpus = 1
    lv.graphics_type = "none"
    # A virtio RNG seeds the kernel's CRNG at once: without it, the first
    # TLS handshake to etcd waits on (and burns CPU for) jitter entropy.
    lv.random :model => "random"
    lv.kernel = imgbuild_boot_file.call("vmlinuz", "{kernel_sha}")
    lv.initrd = imgbuild_boot_file.call("initrd.img", "{initrd_sha}")
    lv.cmd_line = "{cmdline}"
    # A serial log (lv.serial) belongs in the project's Vagrantfile:
    # vagrant-libvirt 0.11 fails to merge a box's serial list into a project
    # that sets none.
  end
end
"##,
        node = b.node,
        role = b.role,
        cluster = b.cluster,
        cmdline = b.cmdline,
        kernel_sha = sha256_hex(b.vmlinuz),
        initrd_sha = sha256_hex(b.initrd),
    )
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The `.box` file: an uncompressed tar (its large members are compressed already).
pub fn node_box(b: &BoxSpec) -> Result<Vec<u8>> {
    let disk = qcow2::from_raw(&[], DISK_GIB << 30)?;
    let (meta, vagrantfile) = (metadata(), box_vagrantfile(b));
    let members: [(&str, &[u8]); 5] = [
        ("metadata.json", meta.as_bytes()),
        ("Vagrantfile", vagrantfile.as_bytes()),
        ("box.img", &disk),
        ("vmlinuz", b.vmlinuz),
        ("initrd.img", b.initrd),
    ];
    let mut tar = tar::Builder::new(Vec::new());
    for (name, bytes) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(u64::from(b.mtime));
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, name, bytes)?;
    }
    Ok(tar.into_inner()?)
}

/// The box's catalog (`vagrant box add CATALOG` gets `name` at `version`).
pub fn catalog(name: &str, version: &str, url: &str, sha256: &str) -> String {
    let c = json!({
        "name": name,
        "versions": [{
            "version": version,
            "providers": [{
                "name": "libvirt",
                "architecture": "amd64",
                "url": url,
                "checksum_type": "sha256",
                "checksum": sha256,
            }],
        }],
    });
    format!("{}\n", serde_json::to_string_pretty(&c).expect("JSON value"))
}

/// The box name users `vagrant box add` and a Vagrantfile's `config.vm.box` names.
pub fn box_name(cluster: &str, node: &str) -> String {
    format!("{cluster}/{node}")
}

/// Whether `v` is a version Vagrant accepts for a box (digits and dots).
pub fn valid_version(v: &str) -> bool {
    !v.is_empty() && v.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::assert_golden;

    #[test]
    fn box_files_are_golden() {
        let b = BoxSpec {
            node: "worker-1",
            role: "worker",
            cluster: "imgbuild",
            vmlinuz: b"kernel",
            initrd: b"initrd",
            cmdline: "console=ttyS0 quiet",
            mtime: 0,
        };
        assert_golden("golden/vagrant/Vagrantfile", &box_vagrantfile(&b));
        assert_golden("golden/vagrant/metadata.json", &metadata());
        let sha = "0".repeat(64);
        let c = catalog(
            &box_name("imgbuild", "worker-1"),
            "0.1.0",
            "http://192.0.2.1:8080/assets/worker-1/worker-1.box",
            &sha,
        );
        assert_golden("golden/vagrant/worker-1.box.json", &c);
    }

    #[test]
    fn versions() {
        assert!(valid_version("0.1.0") && valid_version("20261126"));
        assert!(!valid_version("") && !valid_version("1..2") && !valid_version("v1") && !valid_version("1.0-rc"));
    }

    #[test]
    fn box_is_a_tar_with_the_five_members() {
        let b =
            BoxSpec { node: "w", role: "worker", cluster: "c", vmlinuz: b"k", initrd: b"i", cmdline: "x", mtime: 0 };
        let bytes = node_box(&b).unwrap();
        let mut ar = tar::Archive::new(&bytes[..]);
        let names: Vec<String> =
            ar.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
        assert_eq!(names, ["metadata.json", "Vagrantfile", "box.img", "vmlinuz", "initrd.img"]);
        assert_eq!(bytes, node_box(&b).unwrap());
    }
}
