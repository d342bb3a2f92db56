//! A secret setting (a password, an authorization value): zeroized when
//! dropped, and never shown by `Debug`, so no config dump, log line or
//! error message can carry it.

use std::fmt;
use std::ops::Deref;

use zeroize::{Zeroize, Zeroizing};

/// A secret value; reads as `T` through `Deref`.
#[derive(Clone, Default)]
pub struct Secret<T: Zeroize>(Zeroizing<T>);

impl<T: Zeroize> Secret<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        Self(Zeroizing::new(value))
    }
}

impl<T: Zeroize> Deref for Secret<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize + AsRef<[u8]>> fmt::Debug for Secret<T> {
    /// `<set>` or `<unset>`: whether there is one, never what it is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.as_ref().is_empty() {
            "<unset>"
        } else {
            "<set>"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_says_whether_set_never_what() {
        assert_eq!(
            format!("{:?}", Secret::new(String::from("hunter2"))),
            "<set>"
        );
        assert_eq!(format!("{:?}", Secret::new(Vec::<u8>::new())), "<unset>");
    }
}
