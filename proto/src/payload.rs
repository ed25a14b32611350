//! [`Payload`]: opaque game bytes that are forwarded without being copied.
//!
//! Relays never look inside a game payload; they forward it. When a message is
//! decoded from a [`Bytes`] buffer (as every decoder in [`crate::codec`] does), each
//! payload becomes a slice of that same buffer: a reference-count increment, not a
//! copy. Decoding from a plain slice (for example in another serde format) falls
//! back to one copy.

use std::cell::RefCell;
use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Opaque game bytes (an action's parameters, an event's body, a keyframe's state).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Payload(pub Bytes);

impl Payload {
    /// An empty payload.
    pub const fn empty() -> Self {
        Self(Bytes::new())
    }

    /// A payload that borrows static bytes (no allocation).
    pub const fn from_static(bytes: &'static [u8]) -> Self {
        Self(Bytes::from_static(bytes))
    }

    /// The shared buffer behind the payload.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.0.len())
    }
}

impl Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Self {
        Self(b)
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Self {
        Self(Bytes::from(v))
    }
}

impl From<&'static str> for Payload {
    fn from(s: &'static str) -> Self {
        Self(Bytes::from_static(s.as_bytes()))
    }
}

thread_local! {
    /// The buffer currently being decoded on this thread, if any.
    static SOURCE: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Runs `f` with `source` registered as the buffer that borrowed payloads come from,
/// so [`Payload`]'s deserializer can slice it instead of copying.
pub(crate) fn with_source<R>(source: &Bytes, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Bytes>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0.take();
            SOURCE.with(|s| *s.borrow_mut() = prev);
        }
    }
    let prev = SOURCE.with(|s| s.borrow_mut().replace(source.clone()));
    let _restore = Restore(prev);
    f()
}

/// Turns a borrowed sub-slice into `Bytes`: a slice of the registered source when the
/// sub-slice lies inside it, otherwise a copy.
fn share_or_copy(borrowed: &[u8]) -> Bytes {
    SOURCE.with(|s| {
        if let Some(src) = s.borrow().as_ref() {
            let base = src.as_ptr() as usize;
            let start = borrowed.as_ptr() as usize;
            if start >= base && start + borrowed.len() <= base + src.len() {
                let off = start - base;
                return src.slice(off..off + borrowed.len());
            }
        }
        Bytes::copy_from_slice(borrowed)
    })
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PayloadVisitor;

        impl<'de> Visitor<'de> for PayloadVisitor {
            type Value = Payload;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }

            fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Payload, E> {
                Ok(Payload(share_or_copy(v)))
            }

            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Payload, E> {
                Ok(Payload(Bytes::copy_from_slice(v)))
            }

            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Payload, E> {
                Ok(Payload(Bytes::from(v)))
            }

            // Self-describing formats (JSON in tools and reports) write bytes as a sequence.
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Payload, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element::<u8>()? {
                    v.push(b);
                }
                Ok(Payload(Bytes::from(v)))
            }
        }

        deserializer.deserialize_bytes(PayloadVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_decoded_from_a_source_shares_its_buffer() {
        let encoded = postcard::to_stdvec(&Payload::from(vec![7u8; 64])).unwrap();
        let source = Bytes::from(encoded);
        let decoded: Payload = with_source(&source, || postcard::from_bytes(&source)).unwrap();
        assert_eq!(&decoded[..], &[7u8; 64][..]);
        // The payload points into the source buffer: no copy was made.
        let src_range = source.as_ptr() as usize..source.as_ptr() as usize + source.len();
        assert!(src_range.contains(&(decoded.as_ptr() as usize)));
    }

    #[test]
    fn payload_without_a_source_is_copied() {
        let encoded = postcard::to_stdvec(&Payload::from(vec![1u8, 2, 3])).unwrap();
        let decoded: Payload = postcard::from_bytes(&encoded).unwrap();
        assert_eq!(&decoded[..], &[1, 2, 3]);
    }

    #[test]
    fn payload_round_trips_through_json() {
        let p = Payload::from(vec![0u8, 255, 9]);
        let json = serde_json::to_string(&p).unwrap();
        let back: Payload = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        assert_eq!(format!("{p:?}"), "Payload(3 bytes)");
    }

    #[test]
    fn source_is_restored_after_nested_use() {
        let a = Bytes::from_static(b"aaaa");
        let b = Bytes::from_static(b"bbbb");
        with_source(&a, || {
            with_source(&b, || {});
            SOURCE.with(|s| assert_eq!(s.borrow().as_deref(), Some(&b"aaaa"[..])));
        });
        SOURCE.with(|s| assert!(s.borrow().is_none()));
    }
}
