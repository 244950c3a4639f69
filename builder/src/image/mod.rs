//! What goes into a unikernel-style image.

pub mod cpio;
pub mod elf;
