//! The one error a user can fix by editing their input: it names the file,
//! the field and the reason, and makes `imgbuild` exit with status 2.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InputError {
    /// The file (or `--flag`) the bad value came from.
    pub origin: String,
    /// A dotted path to the value, like `node[2].ip`.
    pub field: String,
    pub reason: String,
}

impl InputError {
    pub fn new(origin: impl Into<String>, field: impl Into<String>, reason: impl Into<String>) -> Self {
        InputError { origin: origin.into(), field: field.into(), reason: reason.into() }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.origin, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.field, self.reason)
        }
    }
}
