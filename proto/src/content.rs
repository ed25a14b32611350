//! Content delivery on a player's existing relay connection (bulk class):
//! the signed manifest, and a pack's bytes pulled window by window, so a
//! download holds at most one window of the relay's memory per client, can
//! never crowd out game traffic (bulk goes last in the scheduler), and
//! resumes from any offset after a cut.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Largest window a client may ask for at once, bytes.
pub const MAX_CONTENT_WINDOW: u32 = 256 * 1024;
/// Largest piece of a window in one [`ContentChunk`], bytes (frames stay
/// well under the 64 KiB frame limit).
pub const CONTENT_PIECE: usize = 32 * 1024;

/// Asks for bytes `offset..offset + len` of a pack at a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentGet {
    /// The pack.
    pub name: String,
    /// Its version (must be the manifest's current one).
    pub version: String,
    /// First byte wanted.
    pub offset: u64,
    /// Bytes wanted (at most [`MAX_CONTENT_WINDOW`]; fewer at the end).
    pub len: u32,
}

/// A piece of a pack, answering a [`ContentGet`]: the window comes as
/// consecutive pieces, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentChunk {
    /// The pack.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Where `data` starts in the pack.
    pub offset: u64,
    /// The pack's whole size.
    pub total: u64,
    /// The bytes.
    pub data: Bytes,
}

/// Why a content request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContentCode {
    /// This relay serves no content.
    Disabled,
    /// The relay has no manifest yet.
    NoManifest,
    /// No such pack.
    UnknownPack,
    /// The pack is at another version.
    UnknownVersion,
    /// The source's bytes did not match the manifest (never served).
    HashMismatch,
    /// The source could not be read.
    Source,
    /// Too many requests at once.
    Busy,
    /// A range outside the pack, or a window too large.
    BadRange,
}

/// A refusal of a content request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentRefusal {
    /// The pack (empty for the manifest).
    pub name: String,
    /// Why.
    pub code: ContentCode,
    /// In words.
    pub message: String,
}
