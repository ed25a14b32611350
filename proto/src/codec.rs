//! Encoding and decoding: length-prefixed frames on streams, one message per datagram.
//!
//! A stream frame is `varint(len) | version | postcard(message)`, where `len` counts
//! the version byte and the message. A datagram is `version | postcard(message)`.
//! The version byte lets a receiver reject a peer from another protocol version with
//! a clear error instead of misreading its bytes.
//!
//! Decoding never panics: any byte string gives a message or a [`DecodeError`]. A
//! length prefix above the limit is rejected before its body is buffered, so a peer
//! cannot make a receiver allocate more than `max_frame` bytes per stream.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::message::{ClientMsg, LinkMsg, PeerMsg, ServerMsg, PROTOCOL_VERSION};
use crate::payload::with_source;

/// Default maximum size of one stream frame (version byte and message).
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024;

/// Pings a relay answers on one tokenless probe connection (a connection whose
/// first message is a ping) before it closes it.
pub const MAX_PROBE_PINGS: usize = 64;

/// Maximum encoded size of a datagram message. QUIC datagrams must fit a packet;
/// 1,200 bytes is the minimum QUIC MTU, so a datagram this size always fits.
pub const MAX_DATAGRAM: usize = 1200;

/// The longest varint length prefix we accept (enough for `u32`).
const MAX_VARINT_LEN: usize = 5;

/// A message type that may be put on the wire (sealed: [`ClientMsg`], [`ServerMsg`],
/// [`LinkMsg`], [`PeerMsg`], [`ReplMsg`](crate::ReplMsg)).
pub trait WireMessage: Serialize + DeserializeOwned + sealed::Sealed {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::ClientMsg {}
    impl Sealed for super::ServerMsg {}
    impl Sealed for super::LinkMsg {}
    impl Sealed for super::PeerMsg {}
    impl Sealed for crate::repl::ReplMsg {}
    impl Sealed for crate::zones::ZoneMsg {}
}

impl WireMessage for ClientMsg {}
impl WireMessage for ServerMsg {}
impl WireMessage for LinkMsg {}
impl WireMessage for crate::repl::ReplMsg {}
impl WireMessage for PeerMsg {}
impl WireMessage for crate::zones::ZoneMsg {}

/// Why bytes could not be decoded into a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended inside a message (a datagram or a closed stream).
    #[error("truncated message")]
    Truncated,
    /// The declared frame (or datagram) size exceeds the limit.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Declared size.
        size: usize,
        /// Limit in force.
        limit: usize,
    },
    /// The length prefix is not a valid varint.
    #[error("malformed length prefix")]
    BadLength,
    /// The frame is empty (no version byte).
    #[error("empty frame")]
    Empty,
    /// The peer speaks another protocol version.
    #[error("unknown protocol version {found} (this build speaks {PROTOCOL_VERSION})")]
    UnknownVersion {
        /// Version byte found.
        found: u8,
    },
    /// The bytes are not a valid message of the expected type.
    #[error("malformed message: {0}")]
    Malformed(postcard::Error),
    /// A complete message was followed by extra bytes inside its frame.
    #[error("{0} unexpected bytes after the message")]
    TrailingBytes(usize),
}

impl DecodeError {
    /// A short, stable label for metrics.
    pub const fn label(&self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::TooLarge { .. } => "too_large",
            Self::BadLength => "bad_length",
            Self::Empty => "empty",
            Self::UnknownVersion { .. } => "unknown_version",
            Self::Malformed(_) => "malformed",
            Self::TrailingBytes(_) => "trailing_bytes",
        }
    }
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoded message exceeds the limit.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// Limit in force.
        limit: usize,
    },
    /// Serialization failed (does not happen for the protocol's own types).
    #[error("cannot serialize message: {0}")]
    Serialize(postcard::Error),
}

/// Lets postcard write straight into a `BytesMut` (slices are copied whole).
struct BytesMutFlavor<'a>(&'a mut BytesMut);

impl postcard::ser_flavors::Flavor for BytesMutFlavor<'_> {
    type Output = ();

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.put_u8(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

fn varint_len(mut v: usize) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut [u8], mut v: usize) {
    for b in out.iter_mut() {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        *b = if v == 0 { byte } else { byte | 0x80 };
    }
}

/// Reads a varint from the start of `buf`: `Ok(None)` if more bytes are needed.
fn read_varint(buf: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut value: u64 = 0;
    for (i, &b) in buf.iter().take(MAX_VARINT_LEN).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if i > 0 && b == 0 {
                // Over-long encoding: one value must have one encoding.
                return Err(DecodeError::BadLength);
            }
            let value = usize::try_from(value).map_err(|_| DecodeError::BadLength)?;
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= MAX_VARINT_LEN {
        Err(DecodeError::BadLength)
    } else {
        Ok(None)
    }
}

/// Appends one length-prefixed frame holding `msg` to `out`.
///
/// On error `out` is left as it was.
pub fn encode_frame<M: WireMessage>(
    msg: &M,
    max_frame: usize,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let start = out.len();
    // Assume a one-byte length prefix (most frames are short); move the body if not.
    out.put_u8(0);
    out.put_u8(PROTOCOL_VERSION);
    if let Err(e) = postcard::serialize_with_flavor(msg, BytesMutFlavor(out)) {
        out.truncate(start);
        return Err(EncodeError::Serialize(e));
    }
    let body_len = out.len() - start - 1;
    if body_len > max_frame {
        out.truncate(start);
        return Err(EncodeError::TooLarge {
            size: body_len,
            limit: max_frame,
        });
    }
    let prefix = varint_len(body_len);
    if prefix > 1 {
        out.resize(out.len() + prefix - 1, 0);
        out.copy_within(start + 1..start + 1 + body_len, start + prefix);
    }
    put_varint(&mut out[start..start + prefix], body_len);
    Ok(())
}

/// Encodes `msg` as one stream frame in a new buffer.
pub fn encode_frame_to_bytes<M: WireMessage>(
    msg: &M,
    max_frame: usize,
) -> Result<Bytes, EncodeError> {
    let mut out = BytesMut::with_capacity(128);
    encode_frame(msg, max_frame, &mut out)?;
    Ok(out.freeze())
}

/// Decodes the body of one frame or datagram (`version | postcard(message)`).
///
/// Payloads in the message are slices of `body`, not copies.
pub fn decode_message<M: WireMessage>(body: Bytes) -> Result<M, DecodeError> {
    let (&version, rest) = body.split_first().ok_or(DecodeError::Empty)?;
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnknownVersion { found: version });
    }
    let (msg, trailing) =
        with_source(&body, || postcard::take_from_bytes::<M>(rest)).map_err(|e| match e {
            postcard::Error::DeserializeUnexpectedEnd => DecodeError::Truncated,
            other => DecodeError::Malformed(other),
        })?;
    if !trailing.is_empty() {
        return Err(DecodeError::TrailingBytes(trailing.len()));
    }
    Ok(msg)
}

/// postcard's variant index of `LinkMsg::Events` and `ServerMsg::Events`.
const LINK_EVENTS_TAG: u8 = 5;
const SERVER_EVENTS_TAG: u8 = 3;

/// Turns the body of a received `LinkMsg::Events` frame (as returned by
/// [`FrameDecoder::poll_frame`]) into a complete `ServerMsg::Events` stream frame
/// without decoding and re-encoding the batch: the two messages differ only in
/// their variant tag, so the relay swaps the tag and copies the body once, however
/// many clients receive it. `None` if `body` is not an events frame.
pub fn link_events_to_client_frame(body: &[u8]) -> Option<Bytes> {
    match body {
        [PROTOCOL_VERSION, LINK_EVENTS_TAG, rest @ ..] => {
            let len = rest.len() + 2;
            let mut out = BytesMut::with_capacity(len + MAX_VARINT_LEN);
            out.resize(varint_len(len), 0);
            put_varint(&mut out[..], len);
            out.put_u8(PROTOCOL_VERSION);
            out.put_u8(SERVER_EVENTS_TAG);
            out.extend_from_slice(rest);
            Some(out.freeze())
        }
        _ => None,
    }
}

const SERVER_KEYFRAME_TAG: u8 = 4;
const SERVER_RESYNC_TAG: u8 = 11;

/// Turns a complete `ServerMsg::Keyframe` frame into the equivalent
/// `ServerMsg::Resync` frame (same body, other variant tag), so the relay can
/// resynchronise one session from a keyframe frame it shares with every other.
/// `None` if `frame` is not a keyframe frame.
pub fn keyframe_frame_as_resync(frame: &[u8]) -> Option<Bytes> {
    let (_, n) = read_varint(frame).ok()??;
    match frame.get(n..)? {
        [PROTOCOL_VERSION, SERVER_KEYFRAME_TAG, ..] => {
            let mut out = BytesMut::from(frame);
            out[n + 1] = SERVER_RESYNC_TAG;
            Some(out.freeze())
        }
        _ => None,
    }
}

/// Encodes `msg` as one datagram (at most [`MAX_DATAGRAM`] bytes).
pub fn encode_datagram<M: WireMessage>(msg: &M) -> Result<Bytes, EncodeError> {
    let mut out = Vec::with_capacity(64);
    out.push(PROTOCOL_VERSION);
    let out = postcard::to_extend(msg, out).map_err(EncodeError::Serialize)?;
    if out.len() > MAX_DATAGRAM {
        return Err(EncodeError::TooLarge {
            size: out.len(),
            limit: MAX_DATAGRAM,
        });
    }
    Ok(Bytes::from(out))
}

/// Decodes one datagram.
pub fn decode_datagram<M: WireMessage>(datagram: Bytes) -> Result<M, DecodeError> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(DecodeError::TooLarge {
            size: datagram.len(),
            limit: MAX_DATAGRAM,
        });
    }
    decode_message(datagram)
}

/// Reassembles frames from the chunks of a QUIC stream.
///
/// Feed it whatever arrives ([`FrameDecoder::push`]) and take complete messages out
/// ([`FrameDecoder::poll_frame`] or [`FrameDecoder::poll_message`]). It never
/// buffers more than one frame's limit plus one read.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_frame: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl FrameDecoder {
    /// A decoder that rejects frames larger than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_frame,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame body (`version | message`), if one has arrived.
    ///
    /// After an error the stream is out of sync and should be closed.
    pub fn poll_frame(&mut self) -> Result<Option<Bytes>, DecodeError> {
        let Some((len, prefix)) = read_varint(&self.buf)? else {
            return Ok(None);
        };
        if len > self.max_frame {
            return Err(DecodeError::TooLarge {
                size: len,
                limit: self.max_frame,
            });
        }
        if len == 0 {
            return Err(DecodeError::Empty);
        }
        if self.buf.len() < prefix + len {
            self.buf.reserve(prefix + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(prefix);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// The next complete message, if one has arrived.
    pub fn poll_message<M: WireMessage>(&mut self) -> Result<Option<M>, DecodeError> {
        self.poll_frame()?.map(decode_message).transpose()
    }

    /// Call when the stream has ended: an error if a partial frame is left.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Truncated)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn relabelled_events_frame_equals_a_fresh_server_encoding() {
        use crate::{BatchEvent, ChannelId, EventBatch, EventClass, LinkMsg, ServerMsg, WorldId};
        for n in [0usize, 1, 3, 200] {
            let batch = EventBatch {
                world: WorldId(3),
                channel: ChannelId::Cell { x: 4, y: 9 },
                tick: 77,
                origin_time_us: 123_456,
                events: (0..n)
                    .map(|i| BatchEvent {
                        seq: i as u64 + 1,
                        class: EventClass::Movement,
                        entity: None,
                        payload: vec![7u8; 40].into(),
                    })
                    .collect(),
                prev_hash: Default::default(),
                signature: vec![1u8; 64].into(),
                cosignature: Default::default(),
            };
            let link =
                encode_frame_to_bytes(&LinkMsg::Events(batch.clone()), DEFAULT_MAX_FRAME).unwrap();
            let mut dec = FrameDecoder::default();
            dec.push(&link);
            let body = dec.poll_frame().unwrap().unwrap();
            let relabelled = link_events_to_client_frame(&body).unwrap();
            let fresh =
                encode_frame_to_bytes(&ServerMsg::Events(batch), DEFAULT_MAX_FRAME).unwrap();
            assert_eq!(relabelled, fresh, "{n} events");
        }
        let other = encode_frame_to_bytes(
            &LinkMsg::SessionClose {
                session: crate::SessionId(1),
            },
            DEFAULT_MAX_FRAME,
        )
        .unwrap();
        assert!(link_events_to_client_frame(&other[1..]).is_none());
    }

    #[test]
    fn a_keyframe_frame_becomes_the_same_resync_frame() {
        for size in [0usize, 10, 300, 70_000] {
            let kf = crate::Keyframe {
                world: WorldId(1),
                channel: crate::ChannelId::World,
                tick: 9,
                seq: 41,
                state: vec![3u8; size].into(),
            };
            let frame = encode_frame_to_bytes(&ServerMsg::Keyframe(kf.clone()), 1 << 20).unwrap();
            let fresh = encode_frame_to_bytes(&ServerMsg::Resync(kf), 1 << 20).unwrap();
            assert_eq!(keyframe_frame_as_resync(&frame).unwrap(), fresh, "{size}");
        }
        let pong = encode_frame_to_bytes(
            &ServerMsg::Pong(crate::Pong {
                nonce: 1,
                sent_us: 2,
                received_us: 3,
                replied_us: 4,
            }),
            DEFAULT_MAX_FRAME,
        )
        .unwrap();
        assert!(keyframe_frame_as_resync(&pong).is_none());
        assert!(keyframe_frame_as_resync(&[]).is_none());
    }

    use super::*;
    use crate::message::{Ping, ServerMsg};
    use crate::{EventBatch, EventClass, Payload, WorldId};

    fn ping(n: u64) -> ClientMsg {
        ClientMsg::Ping(Ping {
            nonce: n,
            sent_us: n * 3,
        })
    }

    #[test]
    fn frames_round_trip_across_arbitrary_chunking() {
        let mut wire = BytesMut::new();
        for n in 0..50 {
            encode_frame(&ping(n), DEFAULT_MAX_FRAME, &mut wire).unwrap();
        }
        let wire = wire.freeze();
        for chunk in [1, 2, 3, 7, 64, wire.len()] {
            let mut dec = FrameDecoder::default();
            let mut got = Vec::new();
            for part in wire.chunks(chunk) {
                dec.push(part);
                while let Some(m) = dec.poll_message::<ClientMsg>().unwrap() {
                    got.push(m);
                }
            }
            dec.finish().unwrap();
            assert_eq!(got, (0..50).map(ping).collect::<Vec<_>>());
        }
    }

    #[test]
    fn long_frames_get_multi_byte_prefixes() {
        let batch = ServerMsg::Events(EventBatch {
            world: WorldId(1),
            channel: crate::ChannelId::World,
            tick: 9,
            origin_time_us: 1,
            events: vec![crate::BatchEvent {
                seq: 1,
                class: EventClass::Bulk,
                entity: None,
                payload: Payload::from(vec![42u8; 20_000]),
            }],
            prev_hash: crate::Hash32([0; 32]),
            signature: Payload::empty(),
            cosignature: Default::default(),
        });
        let bytes = encode_frame_to_bytes(&batch, DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(bytes[0] & 0x80, 0x80, "needs a multi-byte prefix");
        let mut dec = FrameDecoder::default();
        dec.push(&bytes);
        assert_eq!(dec.poll_message::<ServerMsg>().unwrap(), Some(batch));
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn oversize_is_refused_on_both_sides() {
        let big = ServerMsg::Error(crate::ErrorMsg {
            code: crate::ErrorCode::Internal,
            message: "x".repeat(500),
        });
        let mut out = BytesMut::from(&b"keep"[..]);
        let err = encode_frame(&big, 100, &mut out).unwrap_err();
        assert!(matches!(err, EncodeError::TooLarge { limit: 100, .. }));
        assert_eq!(
            &out[..],
            b"keep",
            "failed encode leaves the buffer untouched"
        );

        let bytes = encode_frame_to_bytes(&big, DEFAULT_MAX_FRAME).unwrap();
        let mut dec = FrameDecoder::new(100);
        dec.push(&bytes[..3]); // only the prefix has to arrive to be refused
        assert!(matches!(
            dec.poll_frame(),
            Err(DecodeError::TooLarge { limit: 100, .. })
        ));
    }

    #[test]
    fn typed_errors_for_bad_input() {
        assert_eq!(
            decode_message::<ClientMsg>(Bytes::new()),
            Err(DecodeError::Empty)
        );
        assert_eq!(
            decode_message::<ClientMsg>(Bytes::from_static(&[9, 0])),
            Err(DecodeError::UnknownVersion { found: 9 })
        );
        // Variant index far past the last variant.
        assert!(matches!(
            decode_message::<ClientMsg>(Bytes::from(vec![PROTOCOL_VERSION, 77])),
            Err(DecodeError::Malformed(_))
        ));
        // A ping cut short.
        let full = encode_datagram(&ping(1_000_000)).unwrap();
        assert_eq!(
            decode_datagram::<ClientMsg>(full.slice(..full.len() - 1)),
            Err(DecodeError::Truncated)
        );
        let mut extra = full.to_vec();
        extra.push(0);
        assert_eq!(
            decode_datagram::<ClientMsg>(Bytes::from(extra)),
            Err(DecodeError::TrailingBytes(1))
        );
        assert!(matches!(
            decode_datagram::<ClientMsg>(Bytes::from(vec![1u8; MAX_DATAGRAM + 1])),
            Err(DecodeError::TooLarge { .. })
        ));
        let mut dec = FrameDecoder::default();
        dec.push(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
        assert_eq!(dec.poll_frame(), Err(DecodeError::BadLength));
        let mut dec = FrameDecoder::default();
        dec.push(&[0x81, 0x00]); // over-long encoding of 1
        assert_eq!(dec.poll_frame(), Err(DecodeError::BadLength));
        let mut dec = FrameDecoder::default();
        dec.push(&[0]);
        assert_eq!(dec.poll_frame(), Err(DecodeError::Empty));
        let mut dec = FrameDecoder::default();
        dec.push(&[5, 1]);
        assert_eq!(dec.poll_frame(), Ok(None));
        assert_eq!(dec.finish(), Err(DecodeError::Truncated));
        assert_eq!(DecodeError::Truncated.label(), "truncated");
    }

    #[test]
    fn datagram_limit_applies_on_encode() {
        let msg = ServerMsg::Error(crate::ErrorMsg {
            code: crate::ErrorCode::Internal,
            message: "y".repeat(MAX_DATAGRAM),
        });
        assert!(matches!(
            encode_datagram(&msg),
            Err(EncodeError::TooLarge { .. })
        ));
    }
}
