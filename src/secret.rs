//! Secret values (client secrets, passwords, API keys, tokens).
//!
//! A [`Secret`] never prints its value: `Debug` shows `[redacted]`, there is no `Display`, and there is
//! no derived equality (compare with [`Secret::ct_eq`], which runs in constant time). The value is read
//! through one explicitly named method, [`Secret::expose`], so every place that hands a secret to a sink
//! (an upstream request, an IdP request) is easy to find with grep.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer};
use subtle::ConstantTimeEq;

/// A string that must never reach logs, error messages, metrics or admin output.
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Secret(value.into())
    }

    /// Returns the secret value.
    ///
    /// Security: call this only where the value goes to the party it is meant for (the upstream or the
    /// identity provider) or into a constant-time comparison. Never format the result into a message.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length in bytes: safe to show (A6: "name, length").
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Constant-time comparison with a candidate value (admin tokens).
    pub fn ct_eq(&self, candidate: &[u8]) -> bool {
        // Lengths may differ; `ct_eq` on slices of different length returns false without leaking
        // where they differ.
        self.0.as_bytes().ct_eq(candidate).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Deserialize through a visitor that never quotes the value in its error.
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }
            // An all-digit value (a PIN, or an environment override, which the loader turns into
            // a number) is taken as its decimal text.
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom(
                    "invalid type: a number, expected a string (quote it)",
                ))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::custom("invalid type: a boolean, expected a string"))
            }
        }
        deserializer.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2-canary");
        let shown = format!("{s:?} {:?}", Some(&s));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn constant_time_equality() {
        let s = Secret::new("abc");
        assert!(s.ct_eq(b"abc"));
        assert!(!s.ct_eq(b"abd"));
        assert!(!s.ct_eq(b"ab"));
        assert!(!s.ct_eq(b""));
    }

    #[test]
    fn numbers_are_taken_as_text_and_other_types_not_echoed() {
        let s = toml::Value::Integer(987654321)
            .try_into::<Secret>()
            .unwrap();
        assert_eq!(s.expose(), "987654321");
        let err = toml::Value::Float(98765.4321)
            .try_into::<Secret>()
            .unwrap_err()
            .to_string();
        assert!(!err.contains("98765"), "{err}");
    }
}
