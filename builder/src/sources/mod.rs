//! Where bytes come from: kernels and payload packages.

mod spec;

pub use spec::SourceSpec;
