//! The identifiers the gateway passes between its parts, each its own type so a call id cannot
//! be handed where an agent or a SIP leg is meant. They are strings underneath (they appear in
//! the call log, the agent protocol and the HTTP API as they are), read as `&str` wherever only
//! their text matters.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(id: impl Into<String>) -> $name {
                $name(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        /// Maps keyed by the id are looked up with a plain `&str` (a path segment, a JSON field).
        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> $name {
                $name(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> $name {
                $name(id.to_string())
            }
        }

        impl From<&String> for $name {
            fn from(id: &String) -> $name {
                $name(id.clone())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }
    };
}

string_id!(
    /// One call: what the agent protocol, the HTTP API and the call log call `call_id`.
    CallId
);
string_id!(
    /// An agent as configured (`[[agents]] id`).
    AgentId
);
string_id!(
    /// One SIP leg of the B2BUA (a dialog toward a trunk), named by us.
    LegId
);

/// A call's SIP leg carries the call's own id, so the call log, the SIP logs and the agent
/// protocol name a call the same way; these say where one is read as the other.
impl CallId {
    pub fn leg(&self) -> LegId {
        LegId(self.0.clone())
    }
}

impl LegId {
    pub fn call(&self) -> CallId {
        CallId(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn ids_read_as_their_text_and_key_maps_by_it() {
        let call = CallId::new("c_1");
        assert_eq!(call, "c_1");
        assert_eq!(call.len(), 3);
        assert_eq!(format!("{call} {call:?}"), "c_1 \"c_1\"");
        let mut calls = HashMap::new();
        calls.insert(call.clone(), 1);
        assert_eq!(calls.get("c_1"), Some(&1));
        assert_eq!(serde_json::to_string(&call).unwrap(), "\"c_1\"");
        let back: CallId = serde_json::from_str("\"c_1\"").unwrap();
        assert_eq!(back, call);
    }
}
