//! Reading one whole message from a QUIC stream: the one loop the relay's first
//! message, probes and peer links share.

use skylane_proto::{DecodeError, FrameDecoder, WireMessage};

/// Why no message was read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The bytes are not a valid frame or message.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The stream ended before a whole message.
    #[error("stream finished")]
    Finished,
    /// The stream or connection failed.
    #[error(transparent)]
    Stream(#[from] quinn::ReadError),
}

impl ReadError {
    /// A metric label.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::Decode(e) => e.label(),
            Self::Finished | Self::Stream(_) => "closed",
        }
    }
}

/// The next message of type `M` from `recv` (bytes already in `dec` first),
/// reading chunks of at most `max` bytes.
pub(crate) async fn read_message<M: WireMessage>(
    recv: &mut quinn::RecvStream,
    dec: &mut FrameDecoder,
    max: usize,
) -> Result<M, ReadError> {
    loop {
        if let Some(m) = dec.poll_message::<M>()? {
            return Ok(m);
        }
        match recv.read_chunk(max, true).await? {
            Some(c) => dec.push(&c.bytes),
            None => return Err(ReadError::Finished),
        }
    }
}
