//! What goes into a unikernel-style image.

pub mod cpio;
pub mod elf;
pub mod initramfs;
pub mod modules;
pub mod recipe;
