//! What goes into a unikernel-style image.

pub mod elf;
