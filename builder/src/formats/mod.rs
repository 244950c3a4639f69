//! One module per output format. Each builds its file as bytes; writing is
//! the output module's job.

pub mod disk;
pub mod ignition;
pub mod ipxe;
pub mod manifest;
pub mod qcow2;
pub mod vagrant;
